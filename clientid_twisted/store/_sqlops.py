# -*- test-case-name: tests.test_store_sqlite -*-
"""
The SQLite store's operations as plain functions of a connection and the
time.

They hold no state and start no transaction, so the store can run them
where it likes: reads on the reactor thread, writes batched in its writer
thread, everything inline in the blocking mode the admin command uses.
Their semantics are those of L{clientid_twisted.store._records}.
"""

from __future__ import annotations

import binascii
import os
import sqlite3
from typing import Iterable

from attrs import evolve

from clientid_twisted.store._errors import UnknownDevice
from clientid_twisted.store._records import (
    APPROVED,
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

__all__ = [
    "identityKey",
    "loadState",
    "loadStateUntil",
    "recordOutcome",
    "listDevices",
    "setDeviceState",
    "renameDevice",
    "keepMessage",
    "takeMessages",
    "setLock",
    "clearKeys",
    "activeLocks",
    "listEvents",
    "sweep",
]

_DEVICE_COLUMNS = (
    "account, digest, type, fingerprint, state, first_seen, last_seen, "
    "last_address, last_protocol, logins, failures, name"
)
_DEVICE_MARKS = ", ".join("?" * len(_DEVICE_COLUMNS.split(",")))


def _device(row: tuple | None) -> DeviceRecord | None:  # type: ignore[type-arg]
    return None if row is None else DeviceRecord(*row)


def identityKey(connection: sqlite3.Connection, now: float, candidate: bytes | None) -> bytes:
    """
    Keep C{candidate} (or random bytes) as the key unless there is one;
    return the one kept.
    """
    key = candidate if candidate is not None else os.urandom(32)
    connection.execute(
        "INSERT OR IGNORE INTO meta (name, value) VALUES ('identity-key', ?)",
        (binascii.hexlify(key).decode("ascii"),),
    )
    (value,) = connection.execute(
        "SELECT value FROM meta WHERE name = 'identity-key'"
    ).fetchone()
    return binascii.unhexlify(value)


def loadState(connection: sqlite3.Connection, now: float, query: StateQuery) -> DecisionState:
    return loadStateUntil(connection, now, query)[0]


def loadStateUntil(
    connection: sqlite3.Connection, now: float, query: StateQuery
) -> tuple[DecisionState, float]:
    """
    L{loadState}, and until when the answer holds if nothing is written:
    the end of the first of its live locks, counter and set to expire
    (a cache may serve it until then).
    """
    # Three statements at most: a decision costs one read per login, so
    # what can be asked together is.
    device = None
    approved = 0
    if query.account is not None:
        if query.digest is not None:
            row = connection.execute(
                _DEVICE_AND_APPROVED, (query.account, APPROVED, query.account, query.digest)
            ).fetchone()
            approved = row[0]
            device = None if row[1] is None else DeviceRecord(*row[1:])
        else:
            (approved,) = connection.execute(
                "SELECT count(*) FROM devices WHERE account = ? AND state = ?",
                (query.account, APPROVED),
            ).fetchone()
    locks = _liveLocks(connection, now, query.locks)
    until = min(locks.values(), default=FOREVER)
    size, has, count = 0, False, 0
    if query.windowSet is not None or query.counter is not None:
        # The set's window and the counter are both rows of counters.
        for key, counted, expires, member in connection.execute(
            "SELECT key, count, expires, "
            "EXISTS (SELECT 1 FROM set_members WHERE key = counters.key AND member = ?) "
            "FROM counters WHERE key IN (?, ?) AND expires > ?",
            (query.member, query.windowSet, query.counter, now),
        ):
            until = min(until, expires)
            if key == query.windowSet:
                size, has = counted, bool(member)
            if key == query.counter:
                count = counted
    state = DecisionState(
        device=device,
        approvedDevices=approved,
        locks=locks,
        setSize=size,
        setHasMember=has,
        count=count,
    )
    return state, until


_DEVICE_AND_APPROVED = (
    "SELECT (SELECT count(*) FROM devices WHERE account = ? AND state = ?), "
    + ", ".join("d." + c.strip() for c in _DEVICE_COLUMNS.split(","))
    + " FROM (SELECT 1) LEFT JOIN devices AS d ON d.account = ? AND d.digest = ?"
)
"""One device's row (all NULL when unknown) beside its account's count of
approved devices."""


def _liveLocks(
    connection: sqlite3.Connection, now: float, keys: Iterable[str]
) -> dict[str, float]:
    keys = list(keys)
    if not keys:
        return {}
    marks = ", ".join("?" * len(keys))
    return dict(
        connection.execute(
            f"SELECT key, until FROM locks WHERE key IN ({marks}) AND until > ?",
            (*keys, now),
        ).fetchall()
    )


def _lock(connection: sqlite3.Connection, now: float, key: str, seconds: float) -> bool:
    """
    Set or extend a lock; whether it was not live before.
    """
    row = connection.execute("SELECT until FROM locks WHERE key = ?", (key,)).fetchone()
    until = now + seconds
    if row is not None and row[0] > now:
        if until > row[0]:
            connection.execute("UPDATE locks SET until = ? WHERE key = ?", (until, key))
        return False
    connection.execute("INSERT OR REPLACE INTO locks (key, until) VALUES (?, ?)", (key, until))
    return True


def _record(
    connection: sqlite3.Connection, now: float, event: Event, recorded: list[Event] | None
) -> None:
    connection.execute(
        "INSERT INTO events (time, kind, account, type, fingerprint, address, protocol, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            now,
            event.kind,
            event.account,
            event.typeName,
            event.fingerprint,
            event.address,
            event.protocol,
            event.detail,
        ),
    )
    if recorded is not None:
        recorded.append(evolve(event, time=now))


def recordOutcome(
    connection: sqlite3.Connection, now: float, record: OutcomeRecord
) -> OutcomeResult:
    recorded: list[Event] = []
    locked: list[str] = []
    device = None
    if record.device is not None:
        device = _updateDevice(connection, now, record.device, recorded)
    for operation in record.operations:
        if isinstance(operation, Bump):
            _bump(connection, now, operation, recorded, locked)
        elif isinstance(operation, Reset):
            connection.execute("DELETE FROM counters WHERE key = ?", (operation.counter,))
        elif isinstance(operation, AddMember):
            _addMember(connection, now, operation, recorded, locked)
        elif isinstance(operation, Once):
            row = connection.execute(
                "SELECT 1 FROM locks WHERE key = ? AND until > ?", (operation.marker, now)
            ).fetchone()
            if row is None:
                connection.execute(
                    "INSERT OR REPLACE INTO locks (key, until) VALUES (?, ?)",
                    (operation.marker, now + operation.seconds),
                )
                _record(connection, now, operation.event, recorded)
        else:
            raise TypeError(f"unknown operation {operation!r}")
    for event in record.events:
        _record(connection, now, event, recorded)
    return OutcomeResult(events=tuple(recorded), locked=tuple(locked), device=device)


def _updateDevice(
    connection: sqlite3.Connection, now: float, update: DeviceUpdate, recorded: list[Event]
) -> DeviceRecord | None:
    current = _device(
        connection.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account = ? AND digest = ?",
            (update.account, update.digest),
        ).fetchone()
    )
    applied = update.apply(current, now)
    if applied is None:
        return None
    new, changed = applied
    connection.execute(
        f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES ({_DEVICE_MARKS}) "
        "ON CONFLICT (account, digest) DO UPDATE SET state = excluded.state, "
        "first_seen = excluded.first_seen, last_seen = excluded.last_seen, "
        "last_address = excluded.last_address, last_protocol = excluded.last_protocol, "
        "logins = excluded.logins, failures = excluded.failures",
        (
            new.account,
            new.digest,
            new.typeName,
            new.fingerprint,
            new.state,
            new.firstSeen,
            new.lastSeen,
            new.lastAddress,
            new.lastProtocol,
            new.logins,
            new.failures,
            new.name,
        ),
    )
    if changed and update.event is not None:
        _record(connection, now, update.event, recorded)
    return new


def _bump(
    connection: sqlite3.Connection,
    now: float,
    bump: Bump,
    recorded: list[Event],
    locked: list[str],
) -> None:
    row = connection.execute(
        "SELECT count, expires FROM counters WHERE key = ?", (bump.counter,)
    ).fetchone()
    if row is None or row[1] <= now:
        count, expires = 1, now + bump.window
    else:
        count, expires = row[0] + 1, row[1]
    connection.execute(
        "INSERT OR REPLACE INTO counters (key, count, expires) VALUES (?, ?, ?)",
        (bump.counter, count, expires),
    )
    if bump.limit > 0 and count >= bump.limit and bump.lock is not None:
        if _lock(connection, now, bump.lock, bump.lockSeconds):
            locked.append(bump.lock)
            if bump.event is not None:
                _record(connection, now, bump.event, recorded)


def _addMember(
    connection: sqlite3.Connection,
    now: float,
    add: AddMember,
    recorded: list[Event],
    locked: list[str],
) -> None:
    row = connection.execute(
        "SELECT count, expires, EXISTS (SELECT 1 FROM set_members WHERE key = ? AND member = ?) "
        "FROM counters WHERE key = ?",
        (add.key, add.member, add.key),
    ).fetchone()
    if row is None or row[1] <= now:
        connection.execute("DELETE FROM set_members WHERE key = ?", (add.key,))
        size, expires = 0, now + add.window
    else:
        size, expires, known = row
        if known:
            return
    if add.limit <= 0 or size <= add.limit:
        connection.execute(
            "INSERT INTO set_members (key, member) VALUES (?, ?)", (add.key, add.member)
        )
        size += 1
    connection.execute(
        "INSERT OR REPLACE INTO counters (key, count, expires) VALUES (?, ?, ?)",
        (add.key, size, expires),
    )
    if add.limit > 0 and size > add.limit and add.lock is not None:
        if _lock(connection, now, add.lock, add.lockSeconds):
            locked.append(add.lock)
            if add.event is not None:
                _record(connection, now, add.event, recorded)


def listDevices(connection: sqlite3.Connection, now: float, account: str) -> list[DeviceRecord]:
    rows = connection.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account = ? "
        "ORDER BY last_seen IS NULL, last_seen DESC, fingerprint",
        (account,),
    ).fetchall()
    return [DeviceRecord(*row) for row in rows]


def setDeviceState(
    connection: sqlite3.Connection,
    now: float,
    account: str,
    digest: str,
    typeName: str,
    fingerprint: str,
    state: str,
    event: Event | None,
) -> DeviceRecord:
    connection.execute(
        "INSERT INTO devices (account, digest, type, fingerprint, state) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (account, digest) DO UPDATE SET state = excluded.state",
        (account, digest, typeName, fingerprint, state),
    )
    return _recordedDevice(connection, now, account, digest, event)


def _recordedDevice(
    connection: sqlite3.Connection, now: float, account: str, digest: str, event: Event | None
) -> DeviceRecord:
    """
    Record C{event} (if any) of a device change, and read the device back.
    """
    if event is not None:
        _record(connection, now, event, None)
    row = connection.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE account = ? AND digest = ?",
        (account, digest),
    ).fetchone()
    return DeviceRecord(*row)


def renameDevice(
    connection: sqlite3.Connection,
    now: float,
    account: str,
    digest: str,
    name: str | None,
    event: Event | None,
) -> DeviceRecord:
    """
    @raise UnknownDevice: If the account has no such device.
    """
    updated = connection.execute(
        "UPDATE devices SET name = ? WHERE account = ? AND digest = ?", (name, account, digest)
    ).rowcount
    if not updated:
        raise UnknownDevice(f"{account} has no device {digest}")
    return _recordedDevice(connection, now, account, digest, event)


def forgetDevices(
    connection: sqlite3.Connection, now: float, account: str, event: Event | None
) -> None:
    connection.execute("DELETE FROM devices WHERE account = ?", (account,))
    if event is not None:
        _record(connection, now, event, None)


def keepMessage(
    connection: sqlite3.Connection,
    now: float,
    account: str,
    message: bytes,
    limit: int,
    seconds: float,
) -> None:
    connection.execute(
        "INSERT INTO messages (account, expires, message) VALUES (?, ?, ?)",
        (account, now + seconds, message),
    )
    connection.execute(
        "DELETE FROM messages WHERE account = ? AND id NOT IN "
        "(SELECT id FROM messages WHERE account = ? ORDER BY id DESC LIMIT ?)",
        (account, account, max(limit, 0)),
    )


def takeMessages(connection: sqlite3.Connection, now: float, account: str) -> list[bytes]:
    """
    Read and delete in the one write transaction the store runs this in,
    so another process taking at once gets nothing.
    """
    rows = connection.execute(
        "SELECT expires, message FROM messages WHERE account = ? ORDER BY id", (account,)
    ).fetchall()
    connection.execute("DELETE FROM messages WHERE account = ?", (account,))
    return [bytes(message) for expires, message in rows if expires > now]


def setLock(
    connection: sqlite3.Connection,
    now: float,
    key: str,
    seconds: float | None,
    event: Event | None,
) -> float:
    until = FOREVER if seconds is None else now + seconds
    connection.execute("INSERT OR REPLACE INTO locks (key, until) VALUES (?, ?)", (key, until))
    if event is not None:
        _record(connection, now, event, None)
    return until


def clearKeys(
    connection: sqlite3.Connection, now: float, keys: Iterable[str], event: Event | None
) -> None:
    for key in keys:
        connection.execute("DELETE FROM locks WHERE key = ?", (key,))
        connection.execute("DELETE FROM counters WHERE key = ?", (key,))
        connection.execute("DELETE FROM set_members WHERE key = ?", (key,))
    if event is not None:
        _record(connection, now, event, None)


def activeLocks(
    connection: sqlite3.Connection, now: float, keys: Iterable[str]
) -> dict[str, float]:
    return _liveLocks(connection, now, keys)


def listEvents(
    connection: sqlite3.Connection, now: float, account: str | None, limit: int
) -> list[Event]:
    columns = "time, kind, account, type, fingerprint, address, protocol, detail"
    if account is None:
        rows = connection.execute(
            f"SELECT {columns} FROM events ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
    else:
        rows = connection.execute(
            f"SELECT {columns} FROM events WHERE account = ? ORDER BY id DESC LIMIT ?",
            (account, limit),
        ).fetchall()
    return [
        Event(
            time=time,
            kind=kind,
            account=eventAccount,
            typeName=typeName,
            fingerprint=fingerprint,
            address=address,
            protocol=protocol,
            detail=detail,
        )
        for (time, kind, eventAccount, typeName, fingerprint, address, protocol, detail)
        in reversed(rows)
    ]


def sweep(
    connection: sqlite3.Connection, now: float, eventsBefore: float, chunk: int = 1000
) -> int:
    """
    Delete up to C{chunk} expired rows of each kind, and events older than
    C{eventsBefore}; the writer calls it now and then, in small bites, so a
    sweep never holds the write lock for long.

    @return: How many rows went.
    """
    removed = 0
    expired = [
        key
        for (key,) in connection.execute(
            "SELECT key FROM counters WHERE expires <= ? LIMIT ?", (now, chunk)
        )
    ]
    for key in expired:
        connection.execute("DELETE FROM set_members WHERE key = ?", (key,))
        connection.execute("DELETE FROM counters WHERE key = ?", (key,))
    removed += len(expired)
    removed += connection.execute(
        "DELETE FROM locks WHERE key IN (SELECT key FROM locks WHERE until <= ? LIMIT ?)",
        (now, chunk),
    ).rowcount
    removed += connection.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE expires <= ? LIMIT ?)",
        (now, chunk),
    ).rowcount
    # Events go in id order, which is time order: look at the oldest
    # chunk only, so a sweep costs the same however many events there are.
    (last,) = connection.execute(
        "SELECT max(id) FROM (SELECT id, time FROM events ORDER BY id LIMIT ?) "
        "WHERE time < ?",
        (chunk, eventsBefore),
    ).fetchone()
    if last is not None:
        removed += connection.execute(
            "DELETE FROM events WHERE id <= ? AND time < ?", (last, eventsBefore)
        ).rowcount
    return removed

