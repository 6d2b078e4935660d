"""
The semantics every L{IClientIDStore} backend must share, written once.

A backend's test module subclasses L{StoreTestsMixin} with a trial
C{TestCase} and implements L{StoreTestsMixin.makeStore}; the Redis backend
adds a third such module.  Tests return Deferreds, so backends that answer
later (a writer thread, a network round trip) run the same tests as those
that answer at once.
"""

from __future__ import annotations

import math
from typing import Any

from zope.interface.verify import verifyObject

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest

from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.store._errors import StoreError, UnknownDevice
from clientid_twisted.store._records import (
    APPROVED,
    PENDING,
    REVOKED,
    AddMember,
    Bump,
    DeviceUpdate,
    Event,
    Once,
    OutcomeRecord,
    Reset,
    StateQuery,
)

START = 1_700_000_000.0


def update(
    account: str = "alice@example.test",
    digest: str = "d1" * 32,
    succeeded: bool = True,
    create: str | None = APPROVED,
    **kwargs: Any,
) -> DeviceUpdate:
    return DeviceUpdate(
        account=account,
        digest=digest,
        typeName=kwargs.pop("typeName", "UUID"),
        fingerprint=kwargs.pop("fingerprint", digest[:16]),
        address=kwargs.pop("address", "192.0.2.1"),
        protocol=kwargs.pop("protocol", "smtp"),
        succeeded=succeeded,
        create=create,
        **kwargs,
    )


def bump(counter: str = "c", limit: int = 3, **kwargs: Any) -> Bump:
    return Bump(
        counter=counter,
        window=kwargs.pop("window", 600.0),
        limit=limit,
        lock=kwargs.pop("lock", "lock:" + counter),
        lockSeconds=kwargs.pop("lockSeconds", 900.0),
        **kwargs,
    )


class StoreTestsMixin:
    """
    Mix into a trial C{TestCase}; implement L{makeStore}.
    """

    clock: Clock
    store: Any

    def makeStore(self, clock: Clock) -> Any:
        """
        A new, empty store whose time is C{clock}.  Close it with
        C{addCleanup} if it needs closing.
        """
        raise NotImplementedError()

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.store = self.makeStore(self.clock)

    # helpers

    def record(self, *operations: Any, device: Any = None, events: Any = ()) -> Any:
        return self.store.recordOutcome(
            OutcomeRecord(
                scope=("account:alice", "token:d1"),
                device=device,
                operations=tuple(operations),
                events=tuple(events),
            )
        )

    def state(self, **kwargs: Any) -> Any:
        kwargs.setdefault("account", "alice@example.test")
        kwargs.setdefault("digest", "d1" * 32)
        kwargs.setdefault("scope", ("account:alice", "token:d1"))
        return self.store.loadState(StateQuery(**kwargs))

    # tests

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IClientIDStore, self.store))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_identityKeyKeepsTheFirst(self) -> Any:
        first = yield self.store.identityKey(b"a" * 32)
        second = yield self.store.identityKey(b"b" * 32)
        third = yield self.store.identityKey(None)
        self.assertEqual((first, second, third), (b"a" * 32,) * 3)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_identityKeyMadeWhenNoCandidate(self) -> Any:
        key = yield self.store.identityKey(None)
        again = yield self.store.identityKey(b"c" * 32)
        self.assertEqual(len(key), 32)  # type: ignore[attr-defined]
        self.assertEqual(again, key)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_emptyState(self) -> Any:
        state = yield self.state(locks=("x", "y"), windowSet="s", member="m")
        self.assertIsNone(state.device)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            (state.approvedDevices, dict(state.locks), state.setSize, state.setHasMember),
            (0, {}, 0, False),
        )

    @defer.inlineCallbacks
    def test_deviceCreated(self) -> Any:
        event = Event("device-new", account="alice@example.test", fingerprint="d1" * 8)
        result = yield self.record(device=update(event=event))
        device = result.device
        self.assertEqual(  # type: ignore[attr-defined]
            (device.state, device.firstSeen, device.lastSeen, device.logins, device.failures),
            (APPROVED, START, START, 1, 0),
        )
        self.assertEqual(  # type: ignore[attr-defined]
            (device.typeName, device.fingerprint, device.lastAddress, device.lastProtocol),
            ("UUID", "d1" * 8, "192.0.2.1", "smtp"),
        )
        self.assertEqual([e.kind for e in result.events], ["device-new"])  # type: ignore[attr-defined]
        self.assertEqual(result.events[0].time, START)  # type: ignore[attr-defined]
        state = yield self.state()
        self.assertEqual(state.device, device)  # type: ignore[attr-defined]
        self.assertEqual(state.approvedDevices, 1)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_deviceCreatedFailed(self) -> Any:
        result = yield self.record(device=update(succeeded=False, create=PENDING))
        self.assertEqual((result.device.logins, result.device.failures), (0, 1))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_deviceNotCreatedWithoutCreate(self) -> Any:
        event = Event("device-new")
        result = yield self.record(device=update(create=None, event=event))
        self.assertIsNone(result.device)  # type: ignore[attr-defined]
        self.assertEqual(result.events, ())  # type: ignore[attr-defined]
        state = yield self.state()
        self.assertIsNone(state.device)  # type: ignore[attr-defined]
        devices = yield self.store.listDevices("alice@example.test")
        self.assertEqual(devices, [])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_deviceUpdated(self) -> Any:
        yield self.record(device=update())
        self.clock.advance(10)
        result = yield self.record(
            device=update(succeeded=False, address="198.51.100.9", protocol="imap",
                          event=Event("not-recorded"))
        )
        device = result.device
        self.assertEqual(  # type: ignore[attr-defined]
            (device.firstSeen, device.lastSeen, device.lastAddress, device.lastProtocol),
            (START, START + 10, "198.51.100.9", "imap"),
        )
        self.assertEqual((device.logins, device.failures), (1, 1))  # type: ignore[attr-defined]
        self.assertEqual(result.events, ())  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_devicePromoted(self) -> Any:
        yield self.record(device=update(create=PENDING))
        result = yield self.record(
            device=update(promote=APPROVED, promoteFrom=(PENDING,), event=Event("approved"))
        )
        self.assertEqual(result.device.state, APPROVED)  # type: ignore[attr-defined]
        self.assertEqual([e.kind for e in result.events], ["approved"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_deviceNotPromotedFromOtherStates(self) -> Any:
        yield self.record(device=update(create=REVOKED))
        result = yield self.record(
            device=update(promote=APPROVED, promoteFrom=(PENDING,), event=Event("approved"))
        )
        self.assertEqual(result.device.state, REVOKED)  # type: ignore[attr-defined]
        self.assertEqual(result.events, ())  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_approvedDevicesCountsOnlyApprovedOfTheAccount(self) -> Any:
        yield self.record(device=update(digest="a" * 64))
        yield self.record(device=update(digest="b" * 64))
        yield self.record(device=update(digest="c" * 64, create=PENDING))
        yield self.record(device=update(digest="d" * 64, create=REVOKED))
        yield self.record(device=update(account="bob@example.test", digest="e" * 64))
        state = yield self.state(digest="c" * 64)
        self.assertEqual(state.approvedDevices, 2)  # type: ignore[attr-defined]
        self.assertEqual(state.device.state, PENDING)  # type: ignore[attr-defined]
        # An unknown device, or none presented, still sees the account's count.
        state = yield self.state(digest="f" * 64)
        self.assertEqual((state.device, state.approvedDevices), (None, 2))  # type: ignore[attr-defined]
        state = yield self.state(digest=None)
        self.assertEqual((state.device, state.approvedDevices), (None, 2))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_bumpLocksAtLimit(self) -> Any:
        event = Event("locked", account="alice@example.test")
        for n in range(2):
            result = yield self.record(bump(event=event))
            self.assertEqual((result.locked, result.events), ((), ()))  # type: ignore[attr-defined]
        self.clock.advance(5)
        result = yield self.record(bump(event=event))
        self.assertEqual(result.locked, ("lock:c",))  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            [(e.kind, e.time) for e in result.events], [("locked", START + 5)]
        )
        state = yield self.state(locks=("lock:c", "lock:other"))
        self.assertEqual(dict(state.locks), {"lock:c": START + 5 + 900})  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_bumpLimitZeroNeverLocks(self) -> Any:
        for n in range(5):
            result = yield self.record(bump(limit=0))
            self.assertEqual(result.locked, ())  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_bumpWindowIsFixed(self) -> Any:
        """
        The window starts at the first count and does not slide.
        """
        yield self.record(bump())
        self.clock.advance(300)
        yield self.record(bump())
        self.clock.advance(300)  # the first count's window is over
        result = yield self.record(bump())
        self.assertEqual(result.locked, ())  # type: ignore[attr-defined]
        result = yield self.record(bump())
        self.assertEqual(result.locked, ())  # type: ignore[attr-defined]
        result = yield self.record(bump())
        self.assertEqual(result.locked, ("lock:c",))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_bumpOverLimitExtendsSilently(self) -> Any:
        for n in range(3):
            yield self.record(bump(event=Event("locked")))
        self.clock.advance(100)
        result = yield self.record(bump(event=Event("locked")))
        self.assertEqual((result.locked, result.events), ((), ()))  # type: ignore[attr-defined]
        state = yield self.state(locks=("lock:c",))
        self.assertEqual(dict(state.locks), {"lock:c": START + 100 + 900})  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_lockExpires(self) -> Any:
        for n in range(3):
            yield self.record(bump())
        self.clock.advance(899)
        state = yield self.state(locks=("lock:c",))
        self.assertIn("lock:c", state.locks)  # type: ignore[attr-defined]
        self.clock.advance(1)
        state = yield self.state(locks=("lock:c",))
        self.assertEqual(dict(state.locks), {})  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_relockedAfterExpiryIsNew(self) -> Any:
        for n in range(3):
            yield self.record(bump())
        self.clock.advance(901)
        results = []
        for n in range(3):
            results.append((yield self.record(bump())))
        self.assertEqual(results[-1].locked, ("lock:c",))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_reset(self) -> Any:
        yield self.record(bump(limit=2))
        yield self.record(Reset("c"))
        result = yield self.record(bump(limit=2))
        self.assertEqual(result.locked, ())  # type: ignore[attr-defined]
        result = yield self.record(bump(limit=2))
        self.assertEqual(result.locked, ("lock:c",))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_counterRead(self) -> Any:
        """
        A query's C{counter} reads its live count: 0 before the first
        count, after a reset and once its window has passed.  A store that
        does not read counters answers L{None} (the policy then writes
        every success).
        """
        state = yield self.state(counter="c", windowSet="s", member="m")
        if state.count is None:
            raise SkipTest(f"{self.store!r} does not read counters")
        self.assertEqual(state.count, 0)  # type: ignore[attr-defined]
        yield self.record(bump(limit=0))
        yield self.record(bump(limit=0), AddMember("s", "m", 600.0))
        state = yield self.state(counter="c", windowSet="s", member="m")
        self.assertEqual(  # type: ignore[attr-defined]
            (state.count, state.setSize, state.setHasMember), (2, 1, True)
        )
        yield self.record(Reset("c"))
        state = yield self.state(counter="c")
        self.assertEqual(state.count, 0)  # type: ignore[attr-defined]
        yield self.record(bump(limit=0))
        self.clock.advance(600)
        state = yield self.state(counter="c")
        self.assertEqual(state.count, 0)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_earlierLoginsCounted(self) -> Any:
        """
        A device update adds the logins the policy did not write when they
        happened.  (Only a store that reads counters lets the policy leave
        logins unwritten: see L{test_counterRead}.)
        """
        state = yield self.state(counter="c")
        if state.count is None:
            raise SkipTest(f"{self.store!r} does not read counters: no login goes unwritten")
        yield self.record(device=update())
        result = yield self.record(device=update(earlierLogins=4))
        self.assertEqual(  # type: ignore[attr-defined]
            (result.device.logins, result.device.failures), (6, 0)
        )

    @defer.inlineCallbacks
    def test_countersAreSeparate(self) -> Any:
        yield self.record(bump("a", limit=2))
        result = yield self.record(bump("b", limit=2))
        self.assertEqual(result.locked, ())  # type: ignore[attr-defined]

    def add(self, member: str, **kwargs: Any) -> Any:
        return self.record(
            AddMember(
                key="s",
                member=member,
                window=kwargs.pop("window", 600.0),
                limit=kwargs.pop("limit", 2),
                lock="lock:s",
                lockSeconds=900.0,
                event=Event("too-many"),
            )
        )

    @defer.inlineCallbacks
    def test_setLocksOverLimit(self) -> Any:
        for member in ("a", "b", "a"):
            result = yield self.add(member)
            self.assertEqual(result.locked, ())  # type: ignore[attr-defined]
        state = yield self.state(windowSet="s", member="a")
        self.assertEqual((state.setSize, state.setHasMember), (2, True))  # type: ignore[attr-defined]
        state = yield self.state(windowSet="s", member="c")
        self.assertEqual((state.setSize, state.setHasMember), (2, False))  # type: ignore[attr-defined]
        result = yield self.add("c")
        self.assertEqual(result.locked, ("lock:s",))  # type: ignore[attr-defined]
        self.assertEqual([e.kind for e in result.events], ["too-many"])  # type: ignore[attr-defined]
        state = yield self.state(windowSet="s", member="c", locks=("lock:s",))
        self.assertEqual((state.setSize, state.setHasMember), (3, True))  # type: ignore[attr-defined]
        self.assertIn("lock:s", state.locks)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_setIsCapped(self) -> Any:
        for member in ("a", "b", "c"):
            yield self.add(member)
        self.clock.advance(10)
        result = yield self.add("d")
        self.assertEqual((result.locked, result.events), ((), ()))  # type: ignore[attr-defined]
        state = yield self.state(windowSet="s", member="d", locks=("lock:s",))
        self.assertEqual((state.setSize, state.setHasMember), (3, False))  # type: ignore[attr-defined]
        self.assertEqual(dict(state.locks), {"lock:s": START + 10 + 900})  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_setWindowExpires(self) -> Any:
        yield self.add("a")
        yield self.add("b")
        self.clock.advance(600)
        state = yield self.state(windowSet="s", member="a")
        self.assertEqual((state.setSize, state.setHasMember), (0, False))  # type: ignore[attr-defined]
        result = yield self.add("c")
        self.assertEqual(result.locked, ())  # type: ignore[attr-defined]
        state = yield self.state(windowSet="s", member="a")
        self.assertEqual((state.setSize, state.setHasMember), (1, False))  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_once(self) -> Any:
        once = Once("marker", 100.0, Event("alert", account="alice@example.test"))
        result = yield self.record(once)
        self.assertEqual([e.kind for e in result.events], ["alert"])  # type: ignore[attr-defined]
        self.clock.advance(99)
        result = yield self.record(once)
        self.assertEqual(result.events, ())  # type: ignore[attr-defined]
        self.clock.advance(1)
        result = yield self.record(once)
        self.assertEqual([e.kind for e in result.events], ["alert"])  # type: ignore[attr-defined]
        self.assertEqual(result.locked, ())  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_recordOrder(self) -> Any:
        """
        The device update, then the operations, then the events.
        """
        result = yield self.record(
            bump(limit=1, event=Event("second")),
            Once("m", 10.0, Event("third")),
            device=update(event=Event("first")),
            events=[Event("fourth"), Event("fifth")],
        )
        self.assertEqual(  # type: ignore[attr-defined]
            [e.kind for e in result.events], ["first", "second", "third", "fourth", "fifth"]
        )

    @defer.inlineCallbacks
    def test_listEvents(self) -> Any:
        for n in range(5):
            account = "alice@example.test" if n % 2 == 0 else "bob@example.test"
            yield self.record(
                events=[
                    Event(
                        f"e{n}",
                        account=account,
                        typeName="UUID",
                        fingerprint="f" * 16,
                        address="192.0.2.1",
                        protocol="imap",
                        detail="why",
                    )
                ]
            )
            self.clock.advance(1)
        everything = yield self.store.listEvents(None, 100)
        self.assertEqual([e.kind for e in everything], ["e0", "e1", "e2", "e3", "e4"])  # type: ignore[attr-defined]
        self.assertEqual(everything[0].time, START)  # type: ignore[attr-defined]
        self.assertEqual(  # type: ignore[attr-defined]
            everything[0],
            Event("e0", "alice@example.test", "UUID", "f" * 16, "192.0.2.1", "imap", "why", START),
        )
        latest = yield self.store.listEvents(None, 2)
        self.assertEqual([e.kind for e in latest], ["e3", "e4"])  # type: ignore[attr-defined]
        alice = yield self.store.listEvents("alice@example.test", 2)
        self.assertEqual([e.kind for e in alice], ["e2", "e4"])  # type: ignore[attr-defined]
        nobody = yield self.store.listEvents("carol@example.test", 10)
        self.assertEqual(nobody, [])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_listDevicesMostRecentFirst(self) -> Any:
        yield self.record(device=update(digest="a" * 64))
        self.clock.advance(10)
        yield self.record(device=update(digest="b" * 64))
        self.clock.advance(10)
        yield self.record(device=update(digest="c" * 64))
        self.clock.advance(10)
        yield self.record(device=update(digest="a" * 64))
        yield self.store.setDeviceState(
            "alice@example.test", "0" * 64, "UUID", "0" * 16, APPROVED, None
        )
        yield self.record(device=update(account="bob@example.test", digest="e" * 64))
        devices = yield self.store.listDevices("alice@example.test")
        self.assertEqual(  # type: ignore[attr-defined]
            [d.digest[0] for d in devices], ["a", "c", "b", "0"]
        )

    @defer.inlineCallbacks
    def test_setDeviceStateCreates(self) -> Any:
        event = Event("device-approved", account="alice@example.test")
        device = yield self.store.setDeviceState(
            "alice@example.test", "d1" * 32, "uuid", "d1" * 8, APPROVED, event
        )
        self.assertEqual(  # type: ignore[attr-defined]
            (device.state, device.typeName, device.fingerprint, device.firstSeen, device.logins),
            (APPROVED, "uuid", "d1" * 8, None, 0),
        )
        state = yield self.state()
        self.assertEqual(state.device, device)  # type: ignore[attr-defined]
        events = yield self.store.listEvents("alice@example.test", 10)
        self.assertEqual([(e.kind, e.time) for e in events], [("device-approved", START)])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_setDeviceStateChanges(self) -> Any:
        yield self.record(device=update(create=PENDING))
        device = yield self.store.setDeviceState(
            "alice@example.test", "d1" * 32, "ignored", "ignored", REVOKED, None
        )
        self.assertEqual(  # type: ignore[attr-defined]
            (device.state, device.typeName, device.logins, device.firstSeen),
            (REVOKED, "UUID", 1, START),
        )

    @defer.inlineCallbacks
    def test_renameDevice(self) -> Any:
        """
        A device keeps its name, in every read (the decision's too) and
        through later logins and state changes; only that device is named,
        and the event is recorded with the store's time.
        """
        yield self.record(device=update(create=PENDING))
        yield self.record(device=update(digest="d2" * 32))
        name = "Anna's phone \u00e9\u6f22 \U0001f4f1"
        event = Event("device-renamed", account="alice@example.test", fingerprint="d1" * 8)
        renamed = yield self.store.renameDevice("alice@example.test", "d1" * 32, name, event)
        self.assertEqual(  # type: ignore[attr-defined]
            (renamed.name, renamed.state, renamed.logins, renamed.typeName),
            (name, PENDING, 1, "UUID"),
        )
        self.clock.advance(5)
        after = yield self.record(device=update(succeeded=False))
        self.assertEqual((after.device.name, after.device.failures), (name, 1))  # type: ignore[attr-defined]
        approved = yield self.store.setDeviceState(
            "alice@example.test", "d1" * 32, "UUID", "d1" * 8, APPROVED, None
        )
        self.assertEqual(approved.name, name)  # type: ignore[attr-defined]
        state = yield self.state()
        self.assertEqual(state.device, approved)  # type: ignore[attr-defined]
        devices = yield self.store.listDevices("alice@example.test")
        self.assertEqual(  # type: ignore[attr-defined]
            {d.digest: d.name for d in devices}, {"d1" * 32: name, "d2" * 32: None}
        )
        events = yield self.store.listEvents("alice@example.test", 10)
        self.assertEqual(  # type: ignore[attr-defined]
            [(e.kind, e.time) for e in events], [("device-renamed", START)]
        )

    @defer.inlineCallbacks
    def test_renameDeviceRemovesName(self) -> Any:
        yield self.record(device=update())
        yield self.store.renameDevice("alice@example.test", "d1" * 32, "laptop", None)
        cleared = yield self.store.renameDevice("alice@example.test", "d1" * 32, None, None)
        self.assertIsNone(cleared.name)  # type: ignore[attr-defined]
        [device] = yield self.store.listDevices("alice@example.test")
        self.assertIsNone(device.name)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_renameUnknownDevice(self) -> Any:
        """
        Renaming a device the account does not have fails with
        L{UnknownDevice} and creates nothing, records nothing.
        """
        yield self.record(device=update(account="bob@example.test"))
        yield self.assertFailure(  # type: ignore[attr-defined]
            self.store.renameDevice(
                "alice@example.test", "d1" * 32, "x", Event("device-renamed", account="alice@example.test")
            ),
            UnknownDevice,
        )
        self.assertEqual((yield self.store.listDevices("alice@example.test")), [])  # type: ignore[attr-defined]
        self.assertEqual((yield self.store.listEvents(None, 10)), [])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_setLockForever(self) -> Any:
        until = yield self.store.setLock("k", None, Event("revoked"))
        self.assertEqual(until, math.inf)  # type: ignore[attr-defined]
        self.clock.advance(10 * 365 * 86400)
        locks = yield self.store.activeLocks(["k", "other"])
        self.assertEqual(locks, {"k": math.inf})  # type: ignore[attr-defined]
        events = yield self.store.listEvents(None, 10)
        self.assertEqual([e.kind for e in events], ["revoked"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_setLockForAWhileReplaces(self) -> Any:
        yield self.store.setLock("k", None, None)
        until = yield self.store.setLock("k", 60.0, None)
        self.assertEqual(until, START + 60)  # type: ignore[attr-defined]
        self.clock.advance(60)
        locks = yield self.store.activeLocks(["k"])
        self.assertEqual(locks, {})  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_clearKeys(self) -> Any:
        for n in range(3):
            yield self.record(bump())
        yield self.add("a")
        yield self.store.setLock("k", None, None)
        yield self.store.clearKeys(["c", "lock:c", "s", "k"], Event("unlocked"))
        state = yield self.state(locks=("lock:c", "k"), windowSet="s", member="a")
        self.assertEqual((dict(state.locks), state.setSize), ({}, 0))  # type: ignore[attr-defined]
        result = yield self.record(bump())
        self.assertEqual(result.locked, ())  # type: ignore[attr-defined]
        events = yield self.store.listEvents(None, 10)
        self.assertEqual([e.kind for e in events], ["unlocked"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_forgetDevices(self) -> Any:
        """
        Every device of one account goes, whatever its state; other
        accounts keep theirs.
        """
        for digest, state in (("d1", APPROVED), ("d2", PENDING), ("d3", REVOKED)):
            yield self.store.setDeviceState("a@x", digest, "UUID", digest, state, None)
        yield self.store.setDeviceState("b@x", "d1", "UUID", "d1", APPROVED, None)
        yield self.store.forgetDevices("a@x", Event("user-removed", account="a@x"))
        self.assertEqual((yield self.store.listDevices("a@x")), [])  # type: ignore[attr-defined]
        others = yield self.store.listDevices("b@x")
        self.assertEqual([d.digest for d in others], ["d1"])  # type: ignore[attr-defined]
        events = yield self.store.listEvents("a@x", 10)
        self.assertEqual([e.kind for e in events], ["user-removed"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_keepAndTakeMessages(self) -> Any:
        """
        Messages kept for an account come back once, oldest first, byte
        for byte; other accounts keep theirs.
        """
        odd = b"Subject: x\r\n\r\n\x00\xff caf\xc3\xa9 ' \" -- ]]\r\n"
        yield self.store.keepMessage("a@x", b"first\r\n", 5, 3600.0)
        yield self.store.keepMessage("b@x", b"bob's\r\n", 5, 3600.0)
        yield self.store.keepMessage("a@x", odd, 5, 3600.0)
        self.assertEqual((yield self.store.takeMessages("a@x")), [b"first\r\n", odd])  # type: ignore[attr-defined]
        self.assertEqual((yield self.store.takeMessages("a@x")), [])  # type: ignore[attr-defined]
        self.assertEqual((yield self.store.takeMessages("b@x")), [b"bob's\r\n"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_keptMessagesBounded(self) -> Any:
        """
        At most C{limit} per account: the oldest go first.
        """
        for n in range(5):
            yield self.store.keepMessage("a@x", b"%d" % n, 3, 3600.0)
        self.assertEqual((yield self.store.takeMessages("a@x")), [b"2", b"3", b"4"])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_keptMessagesExpire(self) -> Any:
        """
        A message not taken within its C{seconds} is gone.
        """
        yield self.store.keepMessage("a@x", b"old", 5, 60.0)
        self.clock.advance(30)
        yield self.store.keepMessage("a@x", b"new", 5, 60.0)
        self.clock.advance(31)
        self.assertEqual((yield self.store.takeMessages("a@x")), [b"new"])  # type: ignore[attr-defined]
        yield self.store.keepMessage("a@x", b"late", 5, 60.0)
        self.clock.advance(61)
        self.assertEqual((yield self.store.takeMessages("a@x")), [])  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_readYourWrites(self) -> Any:
        """
        A read sees a write made before it, even if the write's Deferred has
        not fired yet.
        """
        writes = [self.record(bump(limit=1), device=update())]
        state = yield self.state(locks=("lock:c",))
        self.assertEqual(state.device.logins, 1)  # type: ignore[attr-defined]
        self.assertIn("lock:c", state.locks)  # type: ignore[attr-defined]
        yield defer.gatherResults(writes)

    @defer.inlineCallbacks
    def test_closed(self) -> Any:
        yield self.store.close()
        yield self.assertFailure(self.state(), StoreError)  # type: ignore[attr-defined]
        yield self.assertFailure(self.store.listEvents(None, 1), StoreError)  # type: ignore[attr-defined]
