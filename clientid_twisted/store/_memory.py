# -*- test-case-name: tests.test_store_memory -*-
"""
A store in a process's memory: for tests, the brute-force simulation and
embedders who need nothing to survive a restart.

Every call is answered at once (the L{Deferred <twisted.internet.defer.Deferred>}s have fired on return), on
the time of an injected clock, so a test with a
L{twisted.internet.task.Clock} walks through windows and lockouts exactly.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Iterable

from attrs import evolve
from zope.interface import implementer

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.store._errors import StoreError, UnknownDevice
from clientid_twisted.store._records import (
    FOREVER,
    AddMember,
    Bump,
    DecisionState,
    DeviceRecord,
    DeviceUpdate,
    Event,
    Once,
    OutcomeRecord,
    OutcomeResult,
    Reset,
    StateQuery,
)

__all__ = ["MemoryStore"]

_SWEEP_EVERY = 4096
"""Writes between two sweeps of expired counters, sets and locks."""


@implementer(IClientIDStore)
class MemoryStore:
    """
    L{IClientIDStore} in dictionaries.

    @ivar closed: Whether L{close} was called; later calls fail.
    """

    def __init__(self, clock: IReactorTime | None = None, maxEvents: int = 100_000) -> None:
        """
        @param clock: Gives the store's time; the global reactor by default.
        @param maxEvents: How many events to keep (the oldest go first).
        """
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self._clock: Any = clock
        self._key: bytes | None = None
        self._devices: dict[str, dict[str, DeviceRecord]] = {}
        self._counters: dict[str, tuple[int, float]] = {}
        self._sets: dict[str, tuple[set[str], float]] = {}
        self._locks: dict[str, float] = {}
        self._events: collections.deque[Event] = collections.deque(maxlen=maxEvents)
        self._messages: dict[str, list[tuple[float, bytes]]] = {}
        self._writes = 0
        self.closed = False

    # -- helpers --------------------------------------------------------------

    def _now(self) -> float:
        if self.closed:
            raise StoreError("the store is closed")
        return float(self._clock.seconds())

    def _liveLock(self, key: str, now: float) -> float | None:
        until = self._locks.get(key)
        return until if until is not None and until > now else None

    def _lock(self, key: str, seconds: float, now: float) -> bool:
        """
        Set or extend a lock; whether it was not live before.
        """
        current = self._liveLock(key, now)
        until = now + seconds
        self._locks[key] = until if current is None else max(current, until)
        return current is None

    def _record(self, event: Event, now: float, recorded: list[Event]) -> None:
        event = evolve(event, time=now)
        self._events.append(event)
        recorded.append(event)

    def _sweep(self, now: float) -> None:
        self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        self._sets = {k: v for k, v in self._sets.items() if v[1] > now}
        self._locks = {k: v for k, v in self._locks.items() if v > now}

    # -- the decision path ----------------------------------------------------

    def identityKey(self, candidate: bytes | None) -> defer.Deferred[bytes]:
        if self._key is None:
            self._key = candidate if candidate is not None else os.urandom(32)
        return defer.succeed(self._key)

    def loadState(self, query: StateQuery) -> defer.Deferred[DecisionState]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        device = None
        approved = 0
        if query.account is not None:
            devices = self._devices.get(query.account, {})
            if query.digest is not None:
                device = devices.get(query.digest)
            approved = sum(1 for d in devices.values() if d.state == "approved")
        locks = {}
        for key in query.locks:
            until = self._liveLock(key, now)
            if until is not None:
                locks[key] = until
        size, has = 0, False
        if query.windowSet is not None:
            members, expires = self._sets.get(query.windowSet, (set(), 0.0))
            if expires > now:
                size, has = len(members), query.member in members
        count = 0
        if query.counter is not None:
            counted, expires = self._counters.get(query.counter, (0, 0.0))
            if expires > now:
                count = counted
        return defer.succeed(
            DecisionState(
                device=device,
                approvedDevices=approved,
                locks=locks,
                setSize=size,
                setHasMember=has,
                count=count,
            )
        )

    def recordOutcome(self, record: OutcomeRecord) -> defer.Deferred[OutcomeResult]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        recorded: list[Event] = []
        locked: list[str] = []
        device = None
        if record.device is not None:
            device = self._updateDevice(record.device, now, recorded)
        for operation in record.operations:
            if isinstance(operation, Bump):
                self._bump(operation, now, recorded, locked)
            elif isinstance(operation, Reset):
                self._counters.pop(operation.counter, None)
            elif isinstance(operation, AddMember):
                self._addMember(operation, now, recorded, locked)
            elif isinstance(operation, Once):
                if self._liveLock(operation.marker, now) is None:
                    self._locks[operation.marker] = now + operation.seconds
                    self._record(operation.event, now, recorded)
            else:
                return defer.fail(StoreError(f"unknown operation {operation!r}"))
        for event in record.events:
            self._record(event, now, recorded)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self._sweep(now)
        return defer.succeed(
            OutcomeResult(events=tuple(recorded), locked=tuple(locked), device=device)
        )

    def _updateDevice(
        self, update: DeviceUpdate, now: float, recorded: list[Event]
    ) -> DeviceRecord | None:
        devices = self._devices.get(update.account, {})
        applied = update.apply(devices.get(update.digest), now)
        if applied is None:
            return None
        new, changed = applied
        self._devices.setdefault(update.account, devices)[update.digest] = new
        if changed and update.event is not None:
            self._record(update.event, now, recorded)
        return new

    def _bump(self, bump: Bump, now: float, recorded: list[Event], locked: list[str]) -> None:
        count, expires = self._counters.get(bump.counter, (0, 0.0))
        if expires <= now:
            count, expires = 0, now + bump.window
        count += 1
        self._counters[bump.counter] = (count, expires)
        if bump.limit > 0 and count >= bump.limit and bump.lock is not None:
            if self._lock(bump.lock, bump.lockSeconds, now):
                locked.append(bump.lock)
                if bump.event is not None:
                    self._record(bump.event, now, recorded)

    def _addMember(
        self, add: AddMember, now: float, recorded: list[Event], locked: list[str]
    ) -> None:
        members, expires = self._sets.get(add.key, (set(), 0.0))
        if expires <= now:
            members, expires = set(), now + add.window
        self._sets[add.key] = (members, expires)
        if add.member in members:
            return
        if add.limit <= 0 or len(members) <= add.limit:
            members.add(add.member)
        if add.limit > 0 and len(members) > add.limit and add.lock is not None:
            if self._lock(add.lock, add.lockSeconds, now):
                locked.append(add.lock)
                if add.event is not None:
                    self._record(add.event, now, recorded)

    # -- management -----------------------------------------------------------

    def listDevices(self, account: str) -> defer.Deferred[list[DeviceRecord]]:
        try:
            self._now()
        except StoreError:
            return defer.fail()
        return defer.succeed(_newestFirst(self._devices.get(account, {}).values()))

    def setDeviceState(
        self,
        account: str,
        digest: str,
        typeName: str,
        fingerprint: str,
        state: str,
        event: Event | None,
    ) -> defer.Deferred[DeviceRecord]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        devices = self._devices.setdefault(account, {})
        current = devices.get(digest)
        if current is None:
            current = DeviceRecord(account, digest, typeName, fingerprint, state)
        new = devices[digest] = evolve(current, state=state)
        if event is not None:
            self._record(event, now, [])
        return defer.succeed(new)

    def renameDevice(
        self, account: str, digest: str, name: str | None, event: Event | None
    ) -> defer.Deferred[DeviceRecord]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        devices = self._devices.get(account, {})
        current = devices.get(digest)
        if current is None:
            return defer.fail(UnknownDevice(f"{account} has no device {digest}"))
        new = devices[digest] = evolve(current, name=name)
        if event is not None:
            self._record(event, now, [])
        return defer.succeed(new)

    def forgetDevices(self, account: str, event: Event | None) -> defer.Deferred[None]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        self._devices.pop(account, None)
        if event is not None:
            self._record(event, now, [])
        return defer.succeed(None)

    def keepMessage(
        self, account: str, message: bytes, limit: int, seconds: float
    ) -> defer.Deferred[None]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        kept = self._messages.setdefault(account, [])
        kept.append((now + seconds, bytes(message)))
        del kept[: -limit if limit > 0 else len(kept)]
        return defer.succeed(None)

    def takeMessages(self, account: str) -> defer.Deferred[list[bytes]]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        kept = self._messages.pop(account, [])
        return defer.succeed([message for expires, message in kept if expires > now])

    def setLock(
        self, key: str, seconds: float | None, event: Event | None
    ) -> defer.Deferred[float]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        until = FOREVER if seconds is None else now + seconds
        self._locks[key] = until
        if event is not None:
            self._record(event, now, [])
        return defer.succeed(until)

    def clearKeys(self, keys: Iterable[str], event: Event | None) -> defer.Deferred[None]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        for key in keys:
            self._locks.pop(key, None)
            self._counters.pop(key, None)
            self._sets.pop(key, None)
        if event is not None:
            self._record(event, now, [])
        return defer.succeed(None)

    def activeLocks(self, keys: Iterable[str]) -> defer.Deferred[dict[str, float]]:
        try:
            now = self._now()
        except StoreError:
            return defer.fail()
        live = {}
        for key in keys:
            until = self._liveLock(key, now)
            if until is not None:
                live[key] = until
        return defer.succeed(live)

    def listEvents(self, account: str | None, limit: int) -> defer.Deferred[list[Event]]:
        try:
            self._now()
        except StoreError:
            return defer.fail()
        chosen: list[Event] = []
        for event in reversed(self._events):
            if len(chosen) >= limit:
                break
            if account is None or event.account == account:
                chosen.append(event)
        chosen.reverse()
        return defer.succeed(chosen)

    def close(self) -> defer.Deferred[None]:
        self.closed = True
        return defer.succeed(None)


def _newestFirst(devices: Iterable[DeviceRecord]) -> list[DeviceRecord]:
    """
    Most recently seen first; never-seen devices last, then by fingerprint
    so the order is stable.
    """
    return sorted(
        devices,
        key=lambda d: (
            d.lastSeen is None,
            -(d.lastSeen or 0.0),
            d.fingerprint,
        ),
    )
