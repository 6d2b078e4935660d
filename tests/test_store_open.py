"""
Tests for L{clientid_twisted.store.openStore}: store URLs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.store import (
    STORE_FILE,
    MemoryStore,
    SQLiteStore,
    StoreMissing,
    _SCHEMES,
    openStore,
    registerStoreScheme,
)


class OpenStoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp()).absolute()
        self.dataDir.mkdir()
        self.clock = Clock()

    def open(self, url: str | None) -> Any:
        store = openStore(url, self.dataDir, clock=self.clock, blocking=True)
        self.addCleanup(store.close)
        return store

    def test_default(self) -> None:
        for url in (None, "", "sqlite:"):
            with self.subTest(url=url):
                store = self.open(url)
                self.assertIsInstance(store, SQLiteStore)
                self.assertEqual(store.path, self.dataDir / STORE_FILE)

    def test_absolute(self) -> None:
        path = Path(self.mktemp()).absolute() / "x" / "devices.sqlite3"
        path.parent.mkdir(parents=True)
        store = self.open(f"sqlite://{path}")
        self.assertEqual(store.path, path)
        self.assertTrue(path.exists())

    def test_missingDirectory(self) -> None:
        """
        A URL naming a directory that does not exist is refused, naming it,
        and nothing is created: a typo must not make a tree somewhere.
        """
        top = Path(self.mktemp()).absolute()
        for url, directory in [
            (f"sqlite://{top}/dir/x.sqlite3", top / "dir"),
            ("sqlite:stores/devices.sqlite3", self.dataDir / "stores"),
        ]:
            with self.subTest(url=url):
                e = self.assertRaises(StoreMissing, openStore, url, self.dataDir, clock=self.clock, blocking=True)
                self.assertIn(f"no directory {directory}", str(e))
                self.assertFalse(directory.exists())
        self.assertFalse(top.exists())

    def test_relativeToDataDir(self) -> None:
        (self.dataDir / "stores").mkdir()
        store = self.open("sqlite:stores/devices.sqlite3")
        self.assertEqual(store.path, self.dataDir / "stores" / "devices.sqlite3")

    def test_memory(self) -> None:
        self.assertIsInstance(self.open("memory:"), MemoryStore)

    def test_malformed(self) -> None:
        for url in ("memory:x", "sqlite://host/x.sqlite3", "sqlite://", "just-a-path.sqlite3"):
            with self.subTest(url=url):
                self.assertRaises(ValueError, openStore, url, self.dataDir)

    def test_unknownScheme(self) -> None:
        e = self.assertRaises(ValueError, openStore, "mongodb://:hunter2@localhost:27017/0", self.dataDir)
        self.assertIn("unknown store URL scheme 'mongodb'", str(e))
        self.assertIn("sqlite:", str(e))
        self.assertNotIn("hunter2", str(e))

    def test_registerScheme(self) -> None:
        seen = []

        def opener(url: str, dataDir: Path, **kwargs: Any) -> Any:
            seen.append((url, dataDir, kwargs))
            return MemoryStore(self.clock)

        registerStoreScheme("Test", opener)
        self.addCleanup(_SCHEMES.pop, "test")
        store = openStore("TEST://x", self.dataDir, clock=self.clock)
        self.assertIsInstance(store, MemoryStore)
        self.assertEqual(
            seen,
            [("TEST://x", self.dataDir, dict(reactor=None, clock=self.clock, blocking=False, create=True))],
        )
