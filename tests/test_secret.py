"""
Tests for L{clientid_twisted._keyfile}: the identity hashing key.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted import _keyfile as secret
from clientid_twisted._keyfile import KEY_LENGTH, SecretError, loadOrCreateKey


class LoadOrCreateKeyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = Path(self.mktemp()) / "clientid.key"

    def test_created(self) -> None:
        """
        A missing key is made: 32 random bytes, stored as hex, owner-only,
        in a directory made for it.
        """
        key = loadOrCreateKey(self.path)
        self.assertEqual(len(key), KEY_LENGTH)
        self.assertEqual(self.path.read_bytes(), key.hex().encode("ascii") + b"\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.path.parent), ["clientid.key"])

    def test_random(self) -> None:
        other = Path(self.mktemp()) / "clientid.key"
        self.assertNotEqual(loadOrCreateKey(self.path), loadOrCreateKey(other))

    def test_stable(self) -> None:
        self.assertEqual(loadOrCreateKey(self.path), loadOrCreateKey(self.path))

    def test_usableForFingerprints(self) -> None:
        from clientid_twisted._fingerprint import IdentityHasher

        IdentityHasher(loadOrCreateKey(self.path))

    def test_corrupt(self) -> None:
        """
        A file that is not a key is reported and never replaced.
        """
        self.path.parent.mkdir()
        for content in [b"", b"short\n", b"zz" * 32 + b"\n", b"ab" * 33 + b"\n"]:
            with self.subTest(content=content):
                self.path.write_bytes(content)
                e = self.assertRaises(SecretError, loadOrCreateKey, self.path)
                self.assertIn(str(self.path), str(e))
                self.assertEqual(self.path.read_bytes(), content)

    def test_lostRace(self) -> None:
        """
        If another process creates the key between our look and our
        creation, its key is used, and our temporary file is gone.
        """
        theirs = os.urandom(KEY_LENGTH)
        realLink = os.link

        def racingLink(source: str, destination: os.PathLike[str]) -> None:
            Path(destination).write_bytes(theirs.hex().encode("ascii") + b"\n")
            realLink(source, destination)

        self.patch(secret.os, "link", racingLink)
        self.assertEqual(loadOrCreateKey(self.path), theirs)
        self.assertEqual(os.listdir(self.path.parent), ["clientid.key"])

    def test_concurrent(self) -> None:
        """
        Many starting at once all agree on one key.
        """
        barrier = threading.Barrier(8)
        keys: list[bytes] = []

        def start() -> None:
            barrier.wait()
            keys.append(loadOrCreateKey(self.path))

        threads = [threading.Thread(target=start) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(len(keys), 8)
        self.assertEqual(len(set(keys)), 1)
        self.assertEqual(loadOrCreateKey(self.path), keys[0])

    def test_noHardLinks(self) -> None:
        """
        On a file system without hard links the key is still created, once.
        """

        def noLink(source: str, destination: str) -> None:
            raise PermissionError(1, "Operation not permitted")

        self.patch(secret.os, "link", noLink)
        key = loadOrCreateKey(self.path)
        self.assertEqual(loadOrCreateKey(self.path), key)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.path.parent), ["clientid.key"])

    def test_warnsWhenOthersCanRead(self) -> None:
        from twisted.logger import LogLevel, capturedLogs, formatEvent

        loadOrCreateKey(self.path)
        with capturedLogs() as events:
            loadOrCreateKey(self.path)
        self.assertEqual(events, [])
        os.chmod(self.path, 0o644)
        with capturedLogs() as events:
            loadOrCreateKey(self.path)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertIn("mode 644", formatEvent(events[0]))
