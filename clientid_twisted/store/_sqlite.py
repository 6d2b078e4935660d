# -*- test-case-name: tests.test_store_sqlite -*-
"""
The embedded default store: one SQLite file in the data directory.

Built for many decisions in flight without stalling the reactor:

    - WAL mode with C{synchronous=NORMAL}: readers never wait for the
      writer, and a commit appends a few pages to the log in the operating
      system's cache, without an fsync (a power cut may lose the last
      moments of counters, never corrupt the file).
    - Checkpoints, which copy the log into the database and do the fsyncs,
      run in a thread of their own, every second: the only disk waits are
      there, off the reactor.
    - Reads (L{loadState}, listings) run on the reactor thread: a handful of
      primary-key lookups on memory-mapped pages, no thread hop; on the
      writer's connection, whose page cache its own commits keep (a
      read-only second connection takes over only while another process
      recovers the log, when the writer may not wait).
    - Writes are applied at once, on the reactor thread, inside one
      transaction per reactor turn that is committed at the end of the turn
      (C{callLater(0)}): one commit for every decision of the turn, and the
      next read on the same connection sees them (read-your-writes for free).
      The Deferreds of the writes fire once their commit is done.
    - The reactor never waits for another process holding the write lock
      (C{clientid-admin}, a second server on the same file): the busy
      timeout is 0; writes that find the lock taken wait in memory and are
      retried on later turns, and only reads about the same account, token
      or address wait for them.
    - Answers to L{loadState} are kept in memory (L{StateCache}) while
      nothing changes them: a login from a known device then reads no
      file at all.  Other processes' commits are seen on the very next
      read all the same: before each answer the store asks SQLite's
      C{PRAGMA data_version}, which changes when another connection has
      committed (C{clientid-admin}, another worker), and then forgets
      everything; its own writes forget what they touched.

Why not a writer thread: under CPython only one thread runs Python at a
time, so a writer thread costs the reactor the same CPU, only later, and
every SQLite call in it must win the GIL back from a busy reactor (up to
5 ms each): measured here, p99 of 11-28 ms with 16 decisions in flight,
against well under 2 ms this way.  The reactor thread already does
everything else in memory; what it must never do is wait on the disk or a
lock, and it does neither.

In blocking mode (C{blocking=True}, for the admin command) every call runs
inline in its own transaction (waiting up to 5 s for the write lock) and
returns a L{Deferred <twisted.internet.defer.Deferred>} that has already fired.

The schema is versioned (L{clientid_twisted.store._sqlschema}) and migrated
automatically when the store opens.  The file is made mode 0600: it holds
the installation key (unless the configuration keeps it elsewhere) beside
the keyed hashes of every device.
"""

from __future__ import annotations

import collections
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger

from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.store import _sqlops as sqlops
from clientid_twisted.store._errors import StoreError, StoreMissing
from clientid_twisted.store._records import (
    DecisionState,
    DeviceRecord,
    Event,
    OutcomeRecord,
    OutcomeResult,
    StateQuery,
)
from clientid_twisted.store._statecache import StateCache
from clientid_twisted.store._sqlschema import migrate

__all__ = ["SQLiteStore", "STORE_FILE", "EVENT_RETENTION"]

STORE_FILE = "clientid.sqlite3"
"""The store's file name inside the data directory."""

EVENT_RETENTION = 90 * 86400.0
"""Seconds events are kept by default."""

_SWEEP_INTERVAL = 60.0
_SWEEP_CHUNK = 200
_RETRY_FIRST = 0.005
_RETRY_MAX = 0.1


def _connect(path: Path, busySeconds: float, readOnly: bool = False) -> sqlite3.Connection:
    connection = sqlite3.connect(
        str(path),
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        check_same_thread=False,
        timeout=busySeconds,
    )
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA mmap_size = 268435456")
    if readOnly:
        connection.execute("PRAGMA query_only = 1")
    connection.execute("PRAGMA cache_size = -32768")
    return connection


def _storeError(path: Path, error: BaseException) -> BaseException:
    if isinstance(error, sqlite3.Error):
        return StoreError(f"SQLite store {path}: {error}")
    return error


def _locked(error: sqlite3.Error) -> bool:
    return isinstance(error, sqlite3.OperationalError) and "locked" in str(error)


@implementer(IClientIDStore)
class SQLiteStore:
    """
    L{IClientIDStore} on one SQLite file.

    @ivar path: The database file.
    @ivar blocking: Whether calls run inline (the admin command's mode).
    @ivar commits: How many write transactions were committed (a figure for
        tests and benchmarks).
    @ivar checkpoints: How many checkpoints the checkpoint thread ran.
    @ivar cache: The answers to L{loadState} kept between decisions (not
        in blocking mode).
    """

    log = Logger()

    def __init__(
        self,
        path: Path,
        reactor: Any = None,
        clock: Any = None,
        blocking: bool = False,
        create: bool = True,
        eventRetention: float = EVENT_RETENTION,
        migrations: Sequence[Sequence[str]] | None = None,
        checkpointInterval: float | None = 1.0,
        lockPatience: float = 30.0,
        cacheSize: int = 10_000,
    ) -> None:
        """
        Open (or create) the store and bring its schema up to date.  This
        is done inline, once, at start-up.

        @param reactor: Schedules commits, retries and sweeps; the global
            reactor by default.  Unused in blocking mode.
        @param clock: The store's time; C{reactor} by default.
        @param create: Whether a missing file may be created.
        @param eventRetention: Seconds events are kept.
        @param migrations: The schema's migrations (tests add their own).
        @param checkpointInterval: Seconds between checkpoints in the
            checkpoint thread; L{None}: no thread, SQLite checkpoints inline
            (tests).
        @param lockPatience: Seconds writes wait for another process's write
            lock before they fail.
        @param cacheSize: How many answers to L{loadState} to keep (0:
            none).
        @raise StoreError: If the file cannot be opened, is not a store, is
            missing with C{create=False}, or is newer than this software.
        """
        if reactor is None and (clock is None or not blocking):
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.path = Path(path)
        self.blocking = blocking
        self.commits = 0
        self.checkpoints = 0
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._eventRetention = eventRetention
        self._lockPatience = lockPatience
        self._closed = False
        self.cache = StateCache(0 if blocking else cacheSize)
        self._dataVersion: int | None = None
        if not self.path.exists():
            if not create:
                raise StoreMissing(f"no SQLite store at {self.path}")
            self._createFile()
        try:
            setup = _connect(self.path, busySeconds=5.0)
        except sqlite3.Error as e:
            raise StoreError(f"SQLite store {self.path}: {e}") from None
        try:
            mode = setup.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"SQLite store {self.path}: cannot use WAL mode (got {mode!r})"
                )
            migrate(setup, migrations)
        except sqlite3.Error as e:
            setup.close()
            raise StoreError(f"SQLite store {self.path}: {e}") from None
        except BaseException:
            setup.close()
            raise
        if blocking:
            self._connection = setup
            return
        self._writer = setup
        self._writer.execute("PRAGMA busy_timeout = 0")
        # WAL readers take no lock a writer holds; the short busy time
        # only rides out the rare moment another process recovers the log.
        self._reader = _connect(self.path, busySeconds=0.02, readOnly=True)
        # Results of the writes of the open transaction, fired at commit.
        self._inTransaction: list[tuple[defer.Deferred[Any], Any]] = []
        self._commitCall: Any = None
        # Writes that found the write lock taken, oldest first.
        self._waitingWrites: collections.deque[Any] = collections.deque()
        self._waitingScope: collections.Counter[str] = collections.Counter()
        self._retryCall: Any = None
        self._retryDelay = _RETRY_FIRST
        self._lockedSince: float | None = None
        self._scopeWaiters: list[tuple[tuple[str, ...], defer.Deferred[None]]] = []
        self._sweepCall = self._reactor.callLater(_SWEEP_INTERVAL, self._sweep)
        self._stopCheckpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpointInterval is not None:
            # The checkpoint thread does them, off the reactor.
            self._writer.execute("PRAGMA wal_autocheckpoint = 0")
            self._checkpointer = threading.Thread(
                target=self._checkpointLoop,
                args=(checkpointInterval,),
                name=f"clientid store checkpoints {self.path.name}",
                daemon=True,
            )
            self._checkpointer.start()

    def _createFile(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            # SQLite gives its -wal and -shm files the database's mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as e:
            raise StoreError(f"cannot create SQLite store {self.path}: {e.strerror}") from None

    def __repr__(self) -> str:
        return f"<SQLiteStore {str(self.path)!r}{' blocking' if self.blocking else ''}>"

    def _now(self) -> float:
        return float(self._clock.seconds())

    def _closedError(self) -> defer.Deferred[Any]:
        return defer.fail(StoreError(f"SQLite store {self.path} is closed"))

    # -- blocking mode --------------------------------------------------------

    def _inline(self, operation: Callable[..., Any], write: bool, *arguments: Any) -> defer.Deferred[Any]:
        """
        Run C{operation} now in its own transaction.
        """
        if self._closed:
            return self._closedError()
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = operation(connection, self._now(), *arguments)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except Exception as e:
            return defer.fail(_storeError(self.path, e))
        return defer.succeed(result)

    # -- reads ----------------------------------------------------------------

    def _read(self, operation: Callable[..., Any], *arguments: Any) -> defer.Deferred[Any]:
        """
        Run a read now: inside this turn's write transaction if one is open
        (so it sees this turn's writes), else in a read transaction of its
        own.
        """
        if self.blocking:
            return self._inline(operation, False, *arguments)
        if self._closed:
            return self._closedError()
        try:
            if self._writer.in_transaction:
                return defer.succeed(operation(self._writer, self._now(), *arguments))
            try:
                # On the writer's connection: its page cache survives its
                # own commits, where another connection's is dropped at
                # each one (a read after a login's write costs about half).
                result = self._readOn(self._writer, operation, arguments)
            except sqlite3.OperationalError as e:
                if not _locked(e):
                    raise
                # Another process is recovering the log: the reader waits
                # a little for it, which the writer must not (busy 0).
                result = self._readOn(self._reader, operation, arguments)
        except Exception as e:
            return defer.fail(_storeError(self.path, e))
        return defer.succeed(result)

    def _readOn(
        self, connection: sqlite3.Connection, operation: Callable[..., Any], arguments: Any
    ) -> Any:
        connection.execute("BEGIN")
        try:
            return operation(connection, self._now(), *arguments)
        finally:
            connection.execute("COMMIT")

    def _afterWaitingWrites(self, scope: Iterable[str]) -> defer.Deferred[None] | None:
        """
        A Deferred that fires once no write waiting for the lock touches
        C{scope}, or L{None} if none does.
        """
        if self.blocking or not self._waitingScope:
            return None
        scope = tuple(scope)
        if not any(name in self._waitingScope for name in scope):
            return None
        d: defer.Deferred[None] = defer.Deferred()
        self._scopeWaiters.append((scope, d))
        return d

    # -- writes ---------------------------------------------------------------

    def _write(
        self, operation: Callable[..., Any], scope: Iterable[str], *arguments: Any
    ) -> defer.Deferred[Any]:
        if self.blocking:
            return self._inline(operation, True, *arguments)
        if self._closed:
            return self._closedError()
        d: defer.Deferred[Any] = defer.Deferred()
        scope = tuple(scope)
        try:
            began = not self._waitingWrites and self._begin()
        except sqlite3.Error as e:
            return defer.fail(_storeError(self.path, e))
        if not began:
            # Keep the order: behind the writes already waiting.
            self._waitingWrites.append((scope, operation, arguments, d))
            self._waitingScope.update(scope)
            self._scheduleRetry()
            return d
        self._apply(operation, arguments, d)
        return d

    def _begin(self) -> bool:
        """
        Make sure this turn's write transaction is open.

        @return: Whether it is (L{False}: another process holds the lock).
        """
        if self._writer.in_transaction:
            return True
        try:
            self._writer.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            if _locked(e):
                if self._lockedSince is None:
                    self._lockedSince = self._now()
                return False
            raise
        self._lockedSince = None
        self._retryDelay = _RETRY_FIRST
        if self._commitCall is None:
            self._commitCall = self._reactor.callLater(0, self._commit)
        return True

    def _apply(self, operation: Callable[..., Any], arguments: Any, d: defer.Deferred[Any]) -> None:
        """
        Apply one write in the open transaction, in a savepoint of its own
        so that a failing write spoils no other.
        """
        connection = self._writer
        try:
            connection.execute("SAVEPOINT operation")
            try:
                result = operation(connection, self._now(), *arguments)
            except BaseException:
                connection.execute("ROLLBACK TO operation")
                raise
            finally:
                connection.execute("RELEASE operation")
        except Exception as e:
            result = _storeError(self.path, e)
            self.cache.clear()
        else:
            if operation is sqlops.recordOutcome:
                self.cache.forgetOutcome(arguments[0], result)
            else:
                self.cache.clear()
        self._inTransaction.append((d, result))

    def _commit(self) -> None:
        """
        At the end of the turn: commit, then fire the writes' Deferreds.
        """
        self._commitCall = None
        done, self._inTransaction = self._inTransaction, []
        failure: BaseException | None = None
        if self._writer.in_transaction:
            try:
                self._writer.execute("COMMIT")
                self.commits += 1
            except sqlite3.Error as e:
                failure = _storeError(self.path, e)
                # Answers read inside the transaction saw its writes.
                self.cache.clear()
                try:
                    self._writer.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        for d, result in done:
            if failure is not None and not isinstance(result, BaseException):
                result = failure
            if d.called:
                continue
            if isinstance(result, BaseException):
                d.errback(result)
            else:
                d.callback(result)

    def _scheduleRetry(self) -> None:
        if self._retryCall is None and not self._closed:
            self._retryCall = self._reactor.callLater(self._retryDelay, self._retry)
            self._retryDelay = min(self._retryDelay * 2, _RETRY_MAX)

    def _retry(self) -> None:
        """
        Try again to apply the writes that found the write lock taken.
        """
        self._retryCall = None
        if not self._waitingWrites:
            return
        try:
            began = self._begin()
        except sqlite3.Error as e:
            self._failWaiting(_storeError(self.path, e))
            return
        if not began:
            if self._lockedSince is not None and self._now() - self._lockedSince > self._lockPatience:
                self._failWaiting(
                    StoreError(
                        f"SQLite store {self.path}: another process has held the "
                        f"write lock for over {self._lockPatience:.0f} s"
                    )
                )
                self._lockedSince = None
                return
            self._scheduleRetry()
            return
        waiting, self._waitingWrites = self._waitingWrites, collections.deque()
        self._waitingScope.clear()
        for scope, operation, arguments, d in waiting:
            self._apply(operation, arguments, d)
        self._wakeReaders()

    def _failWaiting(self, error: BaseException) -> None:
        waiting, self._waitingWrites = self._waitingWrites, collections.deque()
        self._waitingScope.clear()
        for scope, operation, arguments, d in waiting:
            if not d.called:
                d.errback(error)
        self._wakeReaders()

    def _wakeReaders(self) -> None:
        ready = [d for scope, d in self._scopeWaiters if not any(n in self._waitingScope for n in scope)]
        self._scopeWaiters = [
            (scope, d) for scope, d in self._scopeWaiters if any(n in self._waitingScope for n in scope)
        ]
        for d in ready:
            if not d.called:
                d.callback(None)

    # -- housekeeping ---------------------------------------------------------

    def _sweep(self) -> None:
        """
        Now and then, delete a small bite of expired rows (a bigger bite
        would make one reactor turn slow); come back soon if there is more.
        """
        self._sweepCall = None
        if self._closed:
            return

        def sweep(connection: sqlite3.Connection, now: float) -> int:
            return sqlops.sweep(connection, now, now - self._eventRetention, _SWEEP_CHUNK)

        def next(removed: int) -> None:
            if not self._closed:
                delay = 1.0 if removed >= _SWEEP_CHUNK else _SWEEP_INTERVAL
                self._sweepCall = self._reactor.callLater(delay, self._sweep)

        def failed(reason: Any) -> None:
            self.log.warn("sweeping the SQLite store failed: {error}", error=reason.getErrorMessage())
            next(0)

        self._write(sweep, ()).addCallbacks(next, failed)

    def _checkpointLoop(self, interval: float) -> None:
        connection: sqlite3.Connection | None = None
        while not self._stopCheckpoints.wait(interval):
            try:
                if connection is None:
                    connection = _connect(self.path, busySeconds=1.0)
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.checkpoints += 1
            except sqlite3.Error as e:
                self.log.warn("SQLite store checkpoint failed: {error}", error=str(e))
        if connection is not None:
            connection.close()

    # -- IClientIDStore -------------------------------------------------------

    def identityKey(self, candidate: bytes | None) -> defer.Deferred[bytes]:
        """
        Runs inline, waiting up to 5 s for the write lock if it must: it is
        called once, at start-up, before the server listens.
        """
        if self.blocking:
            return self._inline(sqlops.identityKey, True, candidate)
        if self._closed:
            return self._closedError()
        connection = self._writer
        try:
            if connection.in_transaction:
                return defer.succeed(sqlops.identityKey(connection, self._now(), candidate))
            connection.execute("PRAGMA busy_timeout = 5000")
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    key = sqlops.identityKey(connection, self._now(), candidate)
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
            finally:
                connection.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as e:
            return defer.fail(_storeError(self.path, e))
        return defer.succeed(key)

    def loadState(self, query: StateQuery) -> defer.Deferred[DecisionState]:
        if self.blocking or self._closed:
            return self._read(sqlops.loadState, query)
        waiting = self._afterWaitingWrites(query.scope)
        if waiting is None:
            return self._cachedState(query)
        return waiting.addCallback(lambda _: self._cachedState(query))

    def _cachedState(self, query: StateQuery) -> defer.Deferred[DecisionState]:
        """
        The kept answer if no other process has committed since it was
        read and it still holds; else read (and keep) it.
        """
        try:
            (version,) = self._writer.execute("PRAGMA data_version").fetchone()
        except sqlite3.Error:
            version = None
        if version is None or version != self._dataVersion:
            self.cache.clear()
            self._dataVersion = version
        else:
            state = self.cache.get(query, self._now())
            if state is not None:
                return defer.succeed(state)
        return self._read(self._loadAndKeep, query)

    def _loadAndKeep(
        self, connection: sqlite3.Connection, now: float, query: StateQuery
    ) -> DecisionState:
        state, until = sqlops.loadStateUntil(connection, now, query)
        if self._dataVersion is not None:
            self.cache.put(query, state, until)
        return state

    def recordOutcome(self, record: OutcomeRecord) -> defer.Deferred[OutcomeResult]:
        return self._write(sqlops.recordOutcome, record.scope, record)

    def listDevices(self, account: str) -> defer.Deferred[list[DeviceRecord]]:
        return self._read(sqlops.listDevices, account)

    def setDeviceState(
        self,
        account: str,
        digest: str,
        typeName: str,
        fingerprint: str,
        state: str,
        event: Event | None,
    ) -> defer.Deferred[DeviceRecord]:
        return self._write(
            sqlops.setDeviceState, (), account, digest, typeName, fingerprint, state, event
        )

    def renameDevice(
        self, account: str, digest: str, name: str | None, event: Event | None
    ) -> defer.Deferred[DeviceRecord]:
        return self._write(sqlops.renameDevice, (), account, digest, name, event)

    def forgetDevices(self, account: str, event: Event | None) -> defer.Deferred[None]:
        return self._write(sqlops.forgetDevices, (), account, event)

    def keepMessage(
        self, account: str, message: bytes, limit: int, seconds: float
    ) -> defer.Deferred[None]:
        return self._write(sqlops.keepMessage, (), account, bytes(message), limit, seconds)

    def takeMessages(self, account: str) -> defer.Deferred[list[bytes]]:
        return self._write(sqlops.takeMessages, (), account)

    def setLock(self, key: str, seconds: float | None, event: Event | None) -> defer.Deferred[float]:
        return self._write(sqlops.setLock, (), key, seconds, event)

    def clearKeys(self, keys: Iterable[str], event: Event | None) -> defer.Deferred[None]:
        return self._write(sqlops.clearKeys, (), tuple(keys), event)

    def activeLocks(self, keys: Iterable[str]) -> defer.Deferred[dict[str, float]]:
        return self._read(sqlops.activeLocks, tuple(keys))

    def listEvents(self, account: str | None, limit: int) -> defer.Deferred[list[Event]]:
        return self._read(sqlops.listEvents, account, limit)

    def close(self) -> defer.Deferred[None]:
        """
        Commit what is pending, wait (up to 5 s) for the write lock for
        writes still waiting for it, stop the checkpoint thread, close the
        files.
        """
        if self._closed:
            return defer.succeed(None)
        if self.blocking:
            self._closed = True
            self._connection.close()
            return defer.succeed(None)
        for call in (self._commitCall, self._retryCall, self._sweepCall):
            if call is not None and call.active():
                call.cancel()
        self._commitCall = self._retryCall = self._sweepCall = None
        if self._waitingWrites:
            self._writer.execute("PRAGMA busy_timeout = 5000")
            try:
                self._retry()
            finally:
                if self._waitingWrites:
                    self._failWaiting(StoreError(f"SQLite store {self.path} is closed"))
        self._commit()
        self._closed = True
        self.cache.clear()
        self._stopCheckpoints.set()
        checkpointer = self._checkpointer
        self._reader.close()
        self._writer.close()
        getThreadPool = getattr(self._reactor, "getThreadPool", None)
        if checkpointer is None or getThreadPool is None:
            return defer.succeed(None)
        from twisted.internet.threads import deferToThreadPool

        # Joining may wait for a checkpoint in progress: not on the reactor.
        return deferToThreadPool(self._reactor, getThreadPool(), checkpointer.join)
