# -*- test-case-name: tests.test_store_memory,tests.test_store_sqlite -*-
"""
The values the policy and the stores exchange.

A store knows nothing of policies: it keeps device records and a few
generic primitives (windowed counters, timed locks, small windowed sets,
one-shot markers, events), and applies a batch of them atomically.  What
the keys mean (C{"token-locked:<digest>"} ...) is the policy's business
(L{clientid_twisted.policy._keys}), so every backend implements the same
small semantics, which one shared test suite pins down:

    - L{Bump}: a counter lives for C{window} seconds from its first count
      (a fixed window, like Redis C{INCR} + C{EXPIRE NX}); when it reaches
      C{limit} its C{lock} is set for C{lockSeconds}, and while it stays at
      or over the limit every further count pushes the lock's end out.
    - L{AddMember}: a set lives for C{window} seconds from its first member;
      when it holds more than C{limit} members its C{lock} is set, likewise.
      It never holds more than C{limit + 1}.
    - L{Once}: records its event unless its marker is live, then sets the
      marker for C{seconds}: at most one such event per period.
    - A lock is newly set when it was not live before; only then is its
      event recorded and its key reported in L{OutcomeResult.locked}.

Tokens never appear here, only their keyed hashes (C{digest}) and the short
fingerprints shown to people.
"""

from __future__ import annotations

import math
from typing import Mapping, Union

from attrs import evolve, field, frozen

__all__ = [
    "APPROVED",
    "PENDING",
    "REVOKED",
    "DEVICE_STATES",
    "FOREVER",
    "Event",
    "DeviceRecord",
    "StateQuery",
    "DecisionState",
    "DeviceUpdate",
    "Bump",
    "Reset",
    "AddMember",
    "Once",
    "Operation",
    "OutcomeRecord",
    "OutcomeResult",
]

APPROVED = "approved"
"""The device may log in (learned, trusted on first use, or approved)."""
PENDING = "pending"
"""Seen with the right password but refused; waits for an operator."""
REVOKED = "revoked"
"""Refused for this account until approved again."""
DEVICE_STATES = (APPROVED, PENDING, REVOKED)

FOREVER = math.inf
"""The end of a lock that lasts until it is cleared."""


@frozen
class Event:
    """
    One line of an account's history (or the server's, without account).

    @ivar kind: What happened, e.g. C{"device-new"}, C{"device-locked"}.
    @ivar time: Set by the store when it records the event.
    """

    kind: str
    account: str | None = None
    typeName: str | None = None
    fingerprint: str | None = None
    address: str | None = None
    protocol: str | None = None
    detail: str | None = None
    time: float = 0.0


@frozen
class DeviceRecord:
    """
    What a store knows of one device of one account.

    @ivar digest: The keyed hash of the identity (type and token).
    @ivar typeName: The type as the client spelled it, for display.
    @ivar fingerprint: The short form of C{digest} shown to people.
    @ivar state: One of L{DEVICE_STATES}.
    @ivar firstSeen: When it first tried to log in; L{None} for a device an
        operator approved or revoked before it was ever seen.
    @ivar name: What the owner calls it ("Anna's phone"), checked by
        L{clientid_twisted.policy.checkDeviceName}; L{None}: unnamed.
    """

    account: str
    digest: str
    typeName: str
    fingerprint: str
    state: str
    firstSeen: float | None = None
    lastSeen: float | None = None
    lastAddress: str | None = None
    lastProtocol: str | None = None
    logins: int = 0
    failures: int = 0
    name: str | None = None


@frozen
class StateQuery:
    """
    What one decision reads.

    @ivar account: Whose device record and approved-device count to read
        (L{None}: none).
    @ivar digest: Which device of the account (L{None}: none).
    @ivar locks: Lock keys whose state to read.
    @ivar windowSet: A windowed set whose size to read, and whether it
        holds C{member}.
    @ivar counter: A counter whose live count to read (L{Bump}, L{Reset}),
        or L{None}.
    @ivar scope: Names of what this decision is about (account, token,
        address): a backend that applies writes later may use them to make
        this read wait only for earlier writes with an overlapping scope.
    """

    account: str | None = None
    digest: str | None = None
    locks: tuple[str, ...] = ()
    windowSet: str | None = None
    member: str | None = None
    counter: str | None = None
    scope: tuple[str, ...] = ()


@frozen
class DecisionState:
    """
    The answer to a L{StateQuery}.

    @ivar locks: The live ones among the locks asked for, to their end.
    @ivar count: The live count of the query's C{counter} (0: none, or no
        counter asked for); L{None} from a store that does not read
        counters, so a caller must assume there may be one.
    """

    device: DeviceRecord | None = None
    approvedDevices: int = 0
    locks: Mapping[str, float] = field(factory=dict)
    setSize: int = 0
    setHasMember: bool = False
    count: int | None = None


@frozen
class DeviceUpdate:
    """
    Note an attempt on a device record: last seen, address, protocol, and a
    login or a failure.

    @ivar create: The state of a new record if there is none; L{None}
        leaves a missing record missing.
    @ivar promote: A new state for an existing record whose state is one
        of C{promoteFrom}.
    @ivar event: Recorded when the record is created or promoted.
    @ivar earlierLogins: Successful logins of the device that were not
        written when they happened (the policy writes a known device's
        last-seen time at most once an interval), added to its count.
    """

    account: str
    digest: str
    typeName: str
    fingerprint: str
    address: str | None
    protocol: str | None
    succeeded: bool
    create: str | None = None
    promote: str | None = None
    promoteFrom: tuple[str, ...] = ()
    event: Event | None = None
    earlierLogins: int = 0

    def apply(self, current: DeviceRecord | None, now: float) -> tuple[DeviceRecord, bool] | None:
        """
        The record after this attempt, for every store alike.

        @param current: The stored record, or L{None}.
        @return: The new record and whether it was created or promoted (so
            C{event} is due); L{None} if there is no record and none is to
            be created.
        """
        logins, failures = (1, 0) if self.succeeded else (0, 1)
        logins += self.earlierLogins
        if current is None:
            if self.create is None:
                return None
            created = DeviceRecord(
                account=self.account,
                digest=self.digest,
                typeName=self.typeName,
                fingerprint=self.fingerprint,
                state=self.create,
                firstSeen=now,
                lastSeen=now,
                lastAddress=self.address,
                lastProtocol=self.protocol,
                logins=logins,
                failures=failures,
            )
            return created, True
        state, promoted = current.state, False
        if self.promote is not None and current.state in self.promoteFrom:
            state, promoted = self.promote, True
        updated = evolve(
            current,
            state=state,
            firstSeen=current.firstSeen if current.firstSeen is not None else now,
            lastSeen=now,
            lastAddress=self.address,
            lastProtocol=self.protocol,
            logins=current.logins + logins,
            failures=current.failures + failures,
        )
        return updated, promoted


@frozen
class Bump:
    """
    Count one in a fixed window; lock when the count reaches C{limit}.

    @ivar limit: 0: never lock.
    """

    counter: str
    window: float
    limit: int = 0
    lock: str | None = None
    lockSeconds: float = 0.0
    event: Event | None = None


@frozen
class Reset:
    """
    Forget a counter.
    """

    counter: str


@frozen
class AddMember:
    """
    Add to a windowed set; lock when it holds more than C{limit} members.
    """

    key: str
    member: str
    window: float
    limit: int = 0
    lock: str | None = None
    lockSeconds: float = 0.0
    event: Event | None = None


@frozen
class Once:
    """
    Record C{event} unless C{marker} is live, then set it for C{seconds}.
    """

    marker: str
    seconds: float
    event: Event


Operation = Union[Bump, Reset, AddMember, Once]


@frozen
class OutcomeRecord:
    """
    Everything one decision changes, applied atomically in this order: the
    device update, the operations, the events.
    """

    scope: tuple[str, ...] = ()
    device: DeviceUpdate | None = None
    operations: tuple[Operation, ...] = ()
    events: tuple[Event, ...] = ()


@frozen
class OutcomeResult:
    """
    What applying an L{OutcomeRecord} did.

    @ivar events: Every event recorded, in order, with the store's time.
    @ivar locked: The lock keys newly set.
    @ivar device: The device record after the update, if there is one.
    """

    events: tuple[Event, ...] = ()
    locked: tuple[str, ...] = ()
    device: DeviceRecord | None = None
