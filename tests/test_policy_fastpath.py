"""
Tests for the fast path of a known, approved device: its last-seen time
written at most once per C{last_seen_interval_seconds} while every change of
security state is written at once, decisions made on the spot when the
store and the password check answer at once, and the SQLite store's
answers kept in memory yet never stale across processes.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from attrs import evolve

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import clientid_twisted
from clientid_twisted.admin import main as adminMain
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._manage import resultOf
from clientid_twisted.server.users import UserDatabase, usersPath
from clientid_twisted.store._records import APPROVED, REVOKED, StateQuery
from clientid_twisted.store._sqlite import SQLiteStore
from tests.policyharness import ALICE, START, PolicyHarness, SlowChecker


class WriteSpy:
    """
    Counts a store's L{recordOutcome} calls, passing them on.
    """

    def __init__(self, test: SynchronousTestCase, store: Any) -> None:
        self.records: list[Any] = []
        original = store.recordOutcome

        def recordOutcome(record: Any) -> Any:
            self.records.append(record)
            return original(record)

        test.patch(store, "recordOutcome", recordOutcome)


def interval(seconds: float, **policy: Any) -> dict[str, Any]:
    return {"policy": {"last_seen_interval_seconds": seconds, **policy}}


class LastSeenIntervalTests(SynchronousTestCase):
    """
    A successful login from a known, approved device writes nothing while
    its last-seen time is younger than the interval.
    """

    def setUp(self) -> None:
        self.harness = PolicyHarness(self, interval(60))
        self.writes = WriteSpy(self, self.harness.store).records

    def device(self) -> Any:
        [record] = self.successResultOf(self.harness.store.listDevices(ALICE))
        return record

    def test_oneWriteWithinTheInterval(self) -> None:
        """
        The first login (a new device) writes; the next ones within the
        interval do not; the first after it writes the time, the address
        and every login since.
        """
        h = self.harness
        self.assertEqual(h.login(), "ok")
        self.assertEqual(len(self.writes), 1)
        self.assertEqual(h.login(address="192.0.2.2"), "ok")
        h.clock.advance(59)
        self.assertEqual(h.login(address="192.0.2.3"), "ok")
        self.assertEqual(len(self.writes), 1)
        self.assertEqual(
            (self.device().lastSeen, self.device().lastAddress, self.device().logins),
            (START, "192.0.2.1", 1),
        )
        h.clock.advance(1)
        self.assertEqual(h.login(address="192.0.2.4"), "ok")
        self.assertEqual(len(self.writes), 2)
        self.assertEqual(
            (self.device().lastSeen, self.device().lastAddress, self.device().logins),
            (START + 60, "192.0.2.4", 4),
        )
        self.assertEqual(h.login(), "ok")
        self.assertEqual(len(self.writes), 2)

    def test_zeroWritesEveryLogin(self) -> None:
        h = PolicyHarness(self, interval(0))
        writes = WriteSpy(self, h.store).records
        for n in range(3):
            self.assertEqual(h.login(), "ok")
        self.assertEqual(len(writes), 3)
        [record] = self.successResultOf(h.store.listDevices(ALICE))
        self.assertEqual(record.logins, 3)

    def test_failureWrittenAtOnce(self) -> None:
        """
        A wrong password from a known device is written at once (its
        failure counts towards the lock); the next success writes too, to
        forget that count; then the device is quiet again.
        """
        h = self.harness
        h.login()
        h.login(password="wrong")
        self.assertEqual(len(self.writes), 2)
        self.assertEqual(self.device().failures, 1)
        self.assertEqual(h.login(), "ok")
        self.assertEqual(len(self.writes), 3)
        self.assertEqual(h.login(), "ok")
        self.assertEqual(len(self.writes), 3)

    def test_failuresStillLock(self) -> None:
        """
        Failures between quiet successes still lock the token, and the
        successes still forget earlier failures.
        """
        h = PolicyHarness(self, {**interval(3600), "limits": {"device_failures": 3}})
        h.login()
        for n in range(2):
            h.login(password="wrong")
        h.login()
        for n in range(2):
            h.login(password="wrong")
        self.assertEqual(h.login(), "ok")
        h.login(password="wrong")
        h.login(password="wrong")
        h.login(password="wrong")
        self.assertEqual(h.login(), "refused")

    def test_userLogWritesEveryLogin(self) -> None:
        """
        A type with C{user-log} records an event per login: each login
        writes.
        """
        h = PolicyHarness(self, {**interval(60), "types": {"UUID": {"handling": ["auth", "user-log"]}}})
        writes = WriteSpy(self, h.store).records
        for n in range(3):
            h.login()
        self.assertEqual(len(writes), 3)
        self.assertEqual(h.events(ALICE).count("login"), 3)

    def test_accountSetRenewed(self) -> None:
        """
        Once the token's set of accounts has expired (its window), the
        next login writes to start it again, however recent the last-seen
        time.
        """
        h = PolicyHarness(self, {**interval(3600), "limits": {"window_seconds": 100}})
        writes = WriteSpy(self, h.store).records
        h.login()
        h.clock.advance(50)
        h.login()
        self.assertEqual(len(writes), 1)
        h.clock.advance(51)
        h.login()
        self.assertEqual(len(writes), 2)

    def test_storeThatCannotCount(self) -> None:
        """
        A store that does not say whether the device has failures to
        forget (C{count} L{None}) gets every success written.
        """
        h = self.harness
        original = h.store.loadState
        self.patch(
            h.store,
            "loadState",
            lambda query: original(query).addCallback(lambda state: evolve(state, count=None)),
        )
        for n in range(3):
            h.login()
        self.assertEqual(len(self.writes), 3)

    def test_changesSeenAtOnce(self) -> None:
        """
        A quiet device is still read at every login: a revocation applies
        to the next one, as does a new approval.
        """
        h = self.harness
        h.login()
        h.login()
        digest, fingerprint = h.digest(), h.fingerprint()
        h.store.setDeviceState(ALICE, digest, "UUID", fingerprint, REVOKED, None)
        self.assertEqual(h.login(), "refused")
        h.store.setDeviceState(ALICE, digest, "UUID", fingerprint, APPROVED, None)
        self.assertEqual(h.login(), "ok")


class SynchronousPathTests(SynchronousTestCase):
    """
    With a store and a password check that answer at once, the checker
    answers before C{requestAvatarId} returns, with no timer and no
    C{gatherResults}; a pending store or password check still works.
    """

    def setUp(self) -> None:
        self.harness = PolicyHarness(self)
        self.checker = ClientIDChecker(self.harness.inner, self.harness.policy, self.harness.clock)
        self.joined: list[Any] = []
        original = defer.gatherResults

        def gatherResults(*args: Any, **kwargs: Any) -> Any:
            self.joined.append(args)
            return original(*args, **kwargs)

        self.patch(defer, "gatherResults", gatherResults)

    def test_knownDevice(self) -> None:
        h = self.harness
        self.successResultOf(self.checker.requestAvatarId(h.credentials()))
        h.clock.advance(0)
        d = self.checker.requestAvatarId(h.credentials())
        self.assertEqual(self.successResultOf(d), ALICE.encode())
        self.assertEqual((h.clock.getDelayedCalls(), self.joined), ([], []))

    def test_successHeardBeforeTheAnswer(self) -> None:
        """
        A success's outcome (here a new device and its alert) is recorded
        before the answer; no turn of the clock is needed.
        """
        h = self.harness
        self.successResultOf(self.checker.requestAvatarId(h.credentials()))
        self.assertEqual(h.observer.kinds(), ["device-new"])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_refusalHeardAfterTheAnswer(self) -> None:
        h = self.harness
        d = self.checker.requestAvatarId(h.credentials(password="wrong"))
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.clock.advance(0)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_pendingPasswordCheck(self) -> None:
        """
        A password check still running (a KDF in a thread) is waited for,
        without C{gatherResults}; a refused device's answer waits for it
        too.
        """
        h = PolicyHarness(self, {"policy": {"devices": "allowlist"}})
        slow = SlowChecker()
        checker = ClientIDChecker(slow, h.policy, h.clock)
        d = checker.requestAvatarId(h.credentials())
        self.assertNoResult(d)
        slow.pending[0].callback(b"alice")
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(self.joined, [])

    def pendingStore(self, h: PolicyHarness) -> list[tuple[defer.Deferred[Any], Any]]:
        """
        Make C{h}'s store answer when the test says so (as Redis does).
        """
        later: list[tuple[defer.Deferred[Any], Any]] = []
        original = h.store.loadState

        def loadStateLater(query: StateQuery) -> Any:
            d: defer.Deferred[Any] = defer.Deferred()
            later.append((d, original(query)))
            return d

        self.patch(h.store, "loadState", loadStateLater)
        return later

    def test_pendingStore(self) -> None:
        """
        A store that answers later (Redis) keeps its timeout; a password
        check that answered at once is not joined to it.
        """
        h = PolicyHarness(self, {"policy": {"store_timeout_seconds": 2}})
        later = self.pendingStore(h)
        d = h.checker.requestAvatarId(h.credentials())
        self.assertNoResult(d)
        self.assertEqual([c.getTime() for c in h.clock.getDelayedCalls()], [START + 2])
        [(answer, state)] = later
        state.chainDeferred(answer)
        self.assertEqual(self.successResultOf(d), ALICE.encode())
        self.assertEqual((h.clock.getDelayedCalls(), self.joined), ([], []))

    def test_bothPending(self) -> None:
        """
        A pending store and a pending password check are joined: the
        answer comes when both have, a refusal as late as a wrong
        password.
        """
        h = PolicyHarness(self, {"policy": {"devices": "allowlist"}})
        later = self.pendingStore(h)
        slow = SlowChecker()
        d = ClientIDChecker(slow, h.policy).requestAvatarId(h.credentials())
        [(answer, state)] = later
        state.chainDeferred(answer)
        self.assertNoResult(d)
        slow.pending[0].callback(b"alice")
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(len(self.joined), 1)


class SQLiteCoherenceTests(SynchronousTestCase):
    """
    The SQLite store keeps answers in memory, and forgets them when
    anything they read changes: its own writes, or another process's
    (C{PRAGMA data_version}).
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp()).absolute() / "clientid.sqlite3"
        self.clock = Clock()
        self.clock.advance(START)
        self.store = SQLiteStore(self.path, reactor=self.clock, checkpointInterval=None)
        self.addCleanup(self.store.close)
        self.harness = self.policy(interval(60))
        self.successResultOf(self.store.identityKey(self.harness.hasher.key))

    def policy(self, config: dict[str, Any], store: Any = None) -> PolicyHarness:
        return PolicyHarness(self, config, store=store or self.store, clock=self.clock)

    def login(self, **kwargs: Any) -> str:
        result = self.harness.login(**kwargs)
        self.harness.clock.advance(0)  # the turn's commit
        return result

    def otherProcess(self) -> SQLiteStore:
        """
        Another process's view of the file, as C{clientid-admin} opens it.
        """
        other = SQLiteStore(self.path, blocking=True, clock=self.clock)
        self.addCleanup(other.close)
        return other

    def test_answerKept(self) -> None:
        """
        Once read after the device's first write, its answer is kept.
        """
        self.assertEqual(self.login(), "ok")
        self.assertEqual(self.login(), "ok")
        hits = self.store.cache.hits
        self.assertEqual(self.login(), "ok")
        self.assertEqual(self.login(), "ok")
        self.assertEqual(self.store.cache.hits, hits + 2)

    def test_revokedByAnotherProcess(self) -> None:
        h = self.harness
        self.assertEqual(self.login(), "ok")
        self.assertEqual(self.login(), "ok")
        resultOf(
            self.otherProcess().setDeviceState(
                ALICE, h.digest(), "UUID", h.fingerprint(), REVOKED, None
            )
        )
        self.assertEqual(self.login(), "refused")

    def test_approvedByAnotherProcess(self) -> None:
        self.harness = h = self.policy({"policy": {"devices": "allowlist"}})
        self.assertEqual(self.login(), "refused")
        self.assertEqual(self.login(), "refused")
        resultOf(
            self.otherProcess().setDeviceState(
                ALICE, h.digest(), "UUID", h.fingerprint(), APPROVED, None
            )
        )
        self.assertEqual(self.login(), "ok")

    def test_tokenRevokedByAnotherProcess(self) -> None:
        from clientid_twisted.policy import _keys as keys

        self.assertEqual(self.login(), "ok")
        self.assertEqual(self.login(), "ok")
        resultOf(self.otherProcess().setLock(keys.tokenRevoked(self.harness.digest()), None, None))
        self.assertEqual(self.login(), "refused")

    def test_ownWritesForgetTheAnswer(self) -> None:
        """
        Failures this process writes lock the token for the next login,
        though the device's answer was kept.
        """
        self.harness = self.policy({**interval(60), "limits": {"device_failures": 2}})
        self.assertEqual(self.login(), "ok")
        self.assertEqual(self.login(), "ok")
        self.login(password="wrong")
        self.login(password="wrong")
        self.assertEqual(self.login(), "refused")

    def test_twoServersOnOneFile(self) -> None:
        """
        Two stores on one file (two workers): a lock one sets through its
        logins refuses the other's next login.
        """
        self.harness = self.policy({**interval(60), "limits": {"device_failures": 2}})
        other = SQLiteStore(self.path, reactor=self.clock, checkpointInterval=None)
        self.addCleanup(other.close)
        second = self.policy({**interval(60), "limits": {"device_failures": 2}}, store=other)
        self.assertEqual(self.login(), "ok")
        self.assertEqual(self.login(), "ok")
        for n in range(2):
            second.login(password="wrong")
            self.clock.advance(0)
        self.assertEqual(self.login(), "refused")


class AdminProcessTests(SynchronousTestCase):
    """
    A real C{clientid-admin} process revoking a device: the server's next
    login from it is refused, though its answer was kept in memory.
    """

    def test_revokeAndApprove(self) -> None:
        dataDir = Path(self.mktemp()).absolute()
        self.assertEqual(adminMain(["--data-dir", str(dataDir), "init"], stdout=io.StringIO()), 0)
        UserDatabase(usersPath(dataDir)).addUser(ALICE, "pw")
        clock = Clock()
        clock.advance(START)
        store = SQLiteStore(dataDir / "clientid.sqlite3", reactor=clock, checkpointInterval=None)
        self.addCleanup(store.close)
        h = PolicyHarness(self, interval(60), store=store, clock=clock)
        h.hasher = h.policy.hasher = IdentityHasher(self.successResultOf(store.identityKey(None)))

        def login() -> str:
            result = h.login(token="phone")
            h.clock.advance(0)
            return result

        def admin(action: str) -> None:
            done = subprocess.run(
                [sys.executable, "-m", "clientid_twisted.admin", "--data-dir", str(dataDir),
                 "devices", action, ALICE, "UUID", "phone"],
                capture_output=True, text=True, timeout=60,
                env=dict(os.environ, PYTHONPATH=str(Path(clientid_twisted.__file__).parent.parent)),
            )
            self.assertEqual(done.returncode, 0, done.stderr)

        self.assertEqual(login(), "ok")
        self.assertEqual(login(), "ok")
        admin("revoke")
        self.assertEqual(login(), "refused")
        admin("approve")
        self.assertEqual(login(), "ok")
