"""
Tests for L{clientid_twisted.store._sqlite.SQLiteStore}: the shared store
suite in both modes (the server's, blocking), and what is SQLite's own:
WAL, the file's mode, schema versions and migrations, reads without a
thread hop, one commit per reactor turn, no wait for another process's
lock, checkpoints in their own thread, other processes' changes seen at
once.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.store import _sqlops as sqlops
from clientid_twisted.store._errors import StoreError
from clientid_twisted.store._records import (
    APPROVED,
    Bump,
    Event,
    OutcomeRecord,
    StateQuery,
)
from clientid_twisted.store._sqlite import SQLiteStore
from clientid_twisted.store._sqlschema import MIGRATIONS, migrate, schemaVersion
from tests.storesuite import START, StoreTestsMixin, update


class ReactorSQLiteStoreTests(StoreTestsMixin, TestCase):
    """
    The shared suite against the server's mode, on the real reactor.
    """

    def makeStore(self, clock: Clock) -> Any:
        store = SQLiteStore(Path(self.mktemp()) / "store.sqlite3", reactor=reactor, clock=clock)
        self.addCleanup(store.close)
        return store


class BlockingSQLiteStoreTests(StoreTestsMixin, TestCase):
    """
    The shared suite against the admin command's mode.
    """

    def makeStore(self, clock: Clock) -> Any:
        store = SQLiteStore(Path(self.mktemp()) / "store.sqlite3", clock=clock, blocking=True)
        self.addCleanup(store.close)
        return store


class FileTests(SynchronousTestCase):
    """
    The database file: WAL, private, versioned, migrated, persistent.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.path = Path(self.mktemp()) / "sub" / "store.sqlite3"

    def open(self, **kwargs: Any) -> SQLiteStore:
        store = SQLiteStore(self.path, clock=self.clock, blocking=True, **kwargs)
        self.addCleanup(store.close)
        return store

    def test_walMode(self) -> None:
        self.open()
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("PRAGMA journal_mode").fetchone()[0], "wal")

    def test_private(self) -> None:
        self.open()
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_schemaVersion(self) -> None:
        self.open()
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(schemaVersion(connection), len(MIGRATIONS))

    def test_migratedAutomatically(self) -> None:
        """
        Opening a store made by an older version applies the missing
        migrations, once, and keeps the data.
        """
        store = self.open()
        self.successResultOf(
            store.setDeviceState("alice@example.test", "d" * 64, "UUID", "d" * 16, APPROVED, None)
        )
        store.close()
        newer = [*MIGRATIONS, ["ALTER TABLE devices ADD COLUMN note TEXT"]]
        store = self.open(migrations=newer)
        [device] = self.successResultOf(store.listDevices("alice@example.test"))
        self.assertEqual(device.state, APPROVED)
        store.close()
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(schemaVersion(connection), len(newer))
        columns = [row[1] for row in connection.execute("PRAGMA table_info(devices)")]
        self.assertEqual(columns.count("note"), 1)
        connection.close()
        # Opening again runs nothing twice (the ALTER would fail).
        self.open(migrations=newer)

    def test_version1Upgraded(self) -> None:
        """
        A database of schema version 1 (before device names) opens: it is
        migrated to the latest version, keeps its rows, reads them as
        unnamed, and its devices can then be renamed.
        """
        self.path.parent.mkdir(parents=True)
        connection = sqlite3.connect(self.path, isolation_level=None)
        migrate(connection, MIGRATIONS[:1])
        connection.execute(
            "INSERT INTO devices (account, digest, type, fingerprint, state, first_seen, "
            "last_seen, last_address, last_protocol, logins, failures) "
            "VALUES ('alice@example.test', ?, 'UUID', ?, 'approved', 1.0, 2.0, '192.0.2.1', 'imap', 3, 1)",
            ("d" * 64, "d" * 16),
        )
        connection.execute("INSERT INTO events (time, kind, account) VALUES (2.0, 'device-new', 'alice@example.test')")
        self.assertEqual(schemaVersion(connection), 1)
        connection.close()
        store = self.open()
        [device] = self.successResultOf(store.listDevices("alice@example.test"))
        self.assertEqual(
            (device.state, device.firstSeen, device.lastSeen, device.lastAddress, device.logins,
             device.failures, device.name),
            (APPROVED, 1.0, 2.0, "192.0.2.1", 3, 1, None),
        )
        [event] = self.successResultOf(store.listEvents("alice@example.test", 10))
        self.assertEqual(event.kind, "device-new")
        renamed = self.successResultOf(
            store.renameDevice("alice@example.test", "d" * 64, "Anna's phone", None)
        )
        self.assertEqual(renamed.name, "Anna's phone")
        store.close()
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(schemaVersion(connection), len(MIGRATIONS))
        self.assertEqual(
            connection.execute("SELECT name, logins FROM devices").fetchall(), [("Anna's phone", 3)]
        )

    def test_newerSchemaRefused(self) -> None:
        self.open().close()
        connection = sqlite3.connect(self.path)
        connection.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        connection.close()
        e = self.assertRaises(StoreError, self.open)
        self.assertIn("newer than this software", str(e))

    def test_failedMigrationKeepsOldVersion(self) -> None:
        self.open().close()
        broken = [*MIGRATIONS, ["CREATE TABLE extra (x)", "NOT SQL"]]
        self.assertRaises(StoreError, self.open, migrations=broken)
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(schemaVersion(connection), len(MIGRATIONS))
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master")]
        self.assertNotIn("extra", tables)

    def test_notAStore(self) -> None:
        self.path.parent.mkdir(parents=True)
        self.path.write_bytes(b"this is not a database, it is a text file" * 100)
        e = self.assertRaises(StoreError, self.open)
        self.assertIn(str(self.path), str(e))

    def test_missingNotCreated(self) -> None:
        e = self.assertRaises(StoreError, self.open, create=False)
        self.assertIn("no SQLite store at", str(e))
        self.assertFalse(self.path.exists())

    def test_persistent(self) -> None:
        store = self.open()
        key = self.successResultOf(store.identityKey(None))
        self.successResultOf(store.setLock("k", None, None))
        store.close()
        store = self.open()
        self.assertEqual(self.successResultOf(store.identityKey(b"x" * 32)), key)
        self.assertIn("k", self.successResultOf(store.activeLocks(["k"])))

    def test_infinityStored(self) -> None:
        store = self.open()
        self.successResultOf(store.setLock("k", None, None))
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("SELECT until FROM locks").fetchone()[0], float("inf"))

    def test_sweep(self) -> None:
        store = self.open()
        self.successResultOf(
            store.recordOutcome(
                OutcomeRecord(
                    operations=(Bump("c", 10.0, 1, "l", 20.0),), events=(Event("old"),)
                )
            )
        )
        self.clock.advance(100)
        self.successResultOf(store.recordOutcome(OutcomeRecord(events=(Event("new"),))))
        connection = store._connection
        connection.execute("BEGIN")
        removed = sqlops.sweep(connection, self.clock.seconds(), START + 50)
        connection.execute("COMMIT")
        self.assertEqual(removed, 3)
        self.assertEqual(connection.execute("SELECT count(*) FROM counters").fetchone()[0], 0)
        self.assertEqual(connection.execute("SELECT count(*) FROM locks").fetchone()[0], 0)
        events = self.successResultOf(store.listEvents(None, 10))
        self.assertEqual([e.kind for e in events], ["new"])


class ReactorThreadTests(SynchronousTestCase):
    """
    How the server's mode runs: reads and writes on the reactor thread, one
    commit per reactor turn, never a wait for another process's lock.
    Driven by a L{Clock} standing in for the reactor.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp()) / "store.sqlite3"
        self.clock = Clock()
        self.clock.advance(START)
        self.store = SQLiteStore(self.path, reactor=self.clock, checkpointInterval=None)
        self.addCleanup(self.store.close)

    def blockWrites(self) -> sqlite3.Connection:
        """
        Another process takes the write lock.
        """
        blocker = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(blocker.close)
        blocker.execute("BEGIN IMMEDIATE")
        return blocker

    def test_readsNeedNoThreadHop(self) -> None:
        """
        A read answers before it returns, on the calling thread.
        """
        threads = []
        original = sqlops.loadStateUntil

        def loadStateUntil(*args: Any) -> Any:
            threads.append(threading.current_thread())
            return original(*args)

        self.patch(sqlops, "loadStateUntil", loadStateUntil)
        d = self.store.loadState(StateQuery(account="a", digest="d", scope=("account:a",)))
        self.successResultOf(d)
        self.assertEqual(threads, [threading.current_thread()])

    def test_oneCommitPerTurn(self) -> None:
        """
        The writes of one reactor turn share one commit; their Deferreds
        fire once it is done.
        """
        writes = [
            self.store.recordOutcome(OutcomeRecord(events=(Event(f"e{n}"),))) for n in range(50)
        ]
        for d in writes:
            self.assertNoResult(d)
        self.clock.advance(0)
        for d in writes:
            self.successResultOf(d)
        self.assertEqual(self.store.commits, 1)
        events = self.successResultOf(self.store.listEvents(None, 100))
        self.assertEqual([e.kind for e in events], [f"e{n}" for n in range(50)])

    def test_readSeesThisTurnsWrites(self) -> None:
        write = self.store.recordOutcome(
            OutcomeRecord(scope=("account:a",), device=update(account="a"))
        )
        state = self.successResultOf(
            self.store.loadState(StateQuery(account="a", digest="d1" * 32, scope=("account:a",)))
        )
        self.assertEqual(state.device.logins, 1)
        self.assertNoResult(write)

    def test_committedWritesSeenByOthers(self) -> None:
        self.store.setLock("k", None, None)
        self.clock.advance(0)
        other = SQLiteStore(self.path, blocking=True, clock=self.clock)
        self.addCleanup(other.close)
        self.assertIn("k", self.successResultOf(other.activeLocks(["k"])))

    def test_neverWaitsForAnotherProcessLock(self) -> None:
        """
        With the write lock taken elsewhere, a write returns at once and
        waits in memory; reads about the same account wait for it, reads
        about anything else do not; it is applied once the lock is free.
        """
        blocker = self.blockWrites()
        started = time.monotonic()
        write = self.store.recordOutcome(
            OutcomeRecord(scope=("account:a",), device=update(account="a"))
        )
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertNoResult(write)
        same = self.store.loadState(StateQuery(account="a", digest="d1" * 32, scope=("account:a",)))
        other = self.store.loadState(StateQuery(account="b", scope=("account:b",)))
        self.assertNoResult(same)
        self.successResultOf(other)
        self.clock.advance(1)
        self.assertNoResult(same)
        blocker.execute("COMMIT")
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(same).device.logins, 1)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(write).device.logins, 1)

    def test_writesKeepTheirOrderWhileWaiting(self) -> None:
        blocker = self.blockWrites()
        writes = [
            self.store.recordOutcome(OutcomeRecord(events=(Event(f"e{n}"),))) for n in range(3)
        ]
        blocker.execute("COMMIT")
        later = self.store.recordOutcome(OutcomeRecord(events=(Event("e3"),)))
        self.clock.advance(1)
        self.clock.advance(0)
        for d in [*writes, later]:
            self.successResultOf(d)
        events = self.successResultOf(self.store.listEvents(None, 10))
        self.assertEqual([e.kind for e in events], ["e0", "e1", "e2", "e3"])

    def test_lockHeldTooLong(self) -> None:
        store = SQLiteStore(self.path, reactor=self.clock, checkpointInterval=None, lockPatience=2.0)
        self.addCleanup(store.close)
        self.blockWrites()
        write = store.recordOutcome(OutcomeRecord(scope=("account:a",), events=(Event("e"),)))
        read = store.loadState(StateQuery(account="a", scope=("account:a",)))
        for n in range(30):
            self.clock.advance(0.1)
        failure = self.failureResultOf(write, StoreError)
        self.assertIn("write lock", str(failure.value))
        self.successResultOf(read)

    def test_badWriteSpoilsNoOther(self) -> None:
        good = self.store.recordOutcome(OutcomeRecord(events=(Event("good"),)))
        bad = self.store.recordOutcome(OutcomeRecord(operations=("nonsense",)))  # type: ignore[arg-type]
        alsoGood = self.store.recordOutcome(OutcomeRecord(events=(Event("also good"),)))
        self.clock.advance(0)
        self.successResultOf(good)
        self.failureResultOf(bad, TypeError)
        self.successResultOf(alsoGood)
        events = self.successResultOf(self.store.listEvents(None, 10))
        self.assertEqual([e.kind for e in events], ["good", "also good"])

    def test_failedCommitFailsItsWrites(self) -> None:
        class FailingCommit:
            # The write transaction's COMMIT fails (the later read's works).
            def __init__(self, connection: sqlite3.Connection) -> None:
                self.connection = connection
                self.failing = True

            @property
            def in_transaction(self) -> bool:
                return self.connection.in_transaction

            def execute(self, sql: str, *args: Any) -> Any:
                if sql == "COMMIT" and self.failing:
                    self.failing = False
                    raise sqlite3.OperationalError("disk I/O error")
                return self.connection.execute(sql, *args)

            def close(self) -> None:
                self.connection.close()

        self.store._writer = FailingCommit(self.store._writer)  # type: ignore[assignment]
        write = self.store.recordOutcome(OutcomeRecord(events=(Event("lost"),)))
        self.clock.advance(0)
        self.assertIn("disk I/O error", str(self.failureResultOf(write, StoreError).value))
        self.assertEqual(self.successResultOf(self.store.listEvents(None, 10)), [])

    def test_readFallsBackWhenTheWriterMayNotWait(self) -> None:
        """
        Reads use the writer's connection, whose busy timeout is 0; when it
        finds the log locked (another process recovering it), the read-only
        connection, which waits a little, answers instead.
        """
        self.store.recordOutcome(OutcomeRecord(events=(Event("kept"),)))
        self.clock.advance(0)

        class BusyReads:
            def __init__(self, connection: sqlite3.Connection) -> None:
                self.connection = connection
                self.busy = 0

            @property
            def in_transaction(self) -> bool:
                return self.connection.in_transaction

            def execute(self, sql: str, *args: Any) -> Any:
                if sql.startswith("SELECT"):
                    self.busy += 1
                    raise sqlite3.OperationalError("database is locked")
                return self.connection.execute(sql, *args)

            def close(self) -> None:
                self.connection.close()

        writer = BusyReads(self.store._writer)  # type: ignore[arg-type]
        self.store._writer = writer  # type: ignore[assignment]
        events = self.successResultOf(self.store.listEvents(None, 10))
        self.assertEqual([e.kind for e in events], ["kept"])
        self.assertEqual(writer.busy, 1)
        self.assertFalse(writer.connection.in_transaction)

    def test_sweptNowAndThen(self) -> None:
        self.store.recordOutcome(
            OutcomeRecord(operations=(Bump("c", 10.0, 1, "l", 20.0),))
        )
        self.clock.advance(0)
        self.clock.advance(60)
        self.clock.advance(0)
        connection = sqlite3.connect(self.path)
        self.addCleanup(connection.close)
        self.assertEqual(connection.execute("SELECT count(*) FROM counters").fetchone()[0], 0)
        self.assertEqual(connection.execute("SELECT count(*) FROM locks").fetchone()[0], 0)

    def test_closeCommitsPendingWrites(self) -> None:
        for n in range(20):
            self.store.recordOutcome(OutcomeRecord(events=(Event(f"e{n}"),)))
        self.successResultOf(self.store.close())
        self.successResultOf(self.store.close())
        again = SQLiteStore(self.path, blocking=True)
        self.addCleanup(again.close)
        self.assertEqual(len(self.successResultOf(again.listEvents(None, 100))), 20)

    def test_writeAfterCloseFails(self) -> None:
        self.store.close()
        self.failureResultOf(self.store.recordOutcome(OutcomeRecord()), StoreError)


class CheckpointTests(TestCase):
    """
    Checkpoints (the fsyncs) happen in their own thread, not in commits.
    """

    @defer.inlineCallbacks
    def test_checkpointThread(self) -> Any:
        path = Path(self.mktemp()) / "store.sqlite3"
        store = SQLiteStore(path, reactor=reactor, checkpointInterval=0.02)
        self.addCleanup(store.close)
        self.assertEqual(store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0], 0)
        yield store.recordOutcome(OutcomeRecord(events=(Event("e"),)))
        for n in range(100):
            if store.checkpoints:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertGreater(store.checkpoints, 0)
        yield store.close()
        self.assertFalse(store._checkpointer.is_alive())

    @defer.inlineCallbacks
    def test_otherProcessSeenAtOnce(self) -> Any:
        """
        What another connection (the admin command) commits, the next
        read sees: nothing is cached between decisions.
        """
        path = Path(self.mktemp()) / "store.sqlite3"
        store = SQLiteStore(path, reactor=reactor)
        self.addCleanup(store.close)
        query = StateQuery(account="alice@example.test", digest="d" * 64)
        state = yield store.loadState(query)
        self.assertIsNone(state.device)
        admin = SQLiteStore(path, blocking=True, clock=Clock())
        self.addCleanup(admin.close)
        admin.setDeviceState("alice@example.test", "d" * 64, "UUID", "d" * 16, APPROVED, None)
        state = yield store.loadState(query)
        self.assertEqual(state.device.state, APPROVED)
