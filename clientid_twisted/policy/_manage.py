# -*- test-case-name: tests.test_admin_devices -*-
"""
What an operator does to devices and tokens, synchronously, over a store
opened in blocking mode: the layer under C{clientid-admin devices|tokens|
events}, usable from any script.

Tokens given here are hashed with the store's key at once and never
written anywhere; listings show the keyed fingerprint.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from attrs import frozen

from twisted.internet import defer
from twisted.python.failure import Failure

from clientid_twisted._devicename import checkDeviceName
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.policy import _keys as keys
from clientid_twisted.policy._fired import NOT_FIRED, firedResult
from clientid_twisted.store._errors import UnknownDevice
from clientid_twisted.store._records import APPROVED, REVOKED, DeviceRecord, Event

__all__ = [
    "ManagementError",
    "DeviceView",
    "DeviceManager",
    "matchDevice",
    "renameDevice",
    "resultOf",
]

_FINGERPRINT = re.compile(r"[0-9a-f]{4,64}")


class ManagementError(ValueError):
    """
    The operator asked for something that cannot be done; the message says
    why.
    """


@frozen
class DeviceView:
    """
    A device as C{devices list} shows it: its record, and its token's state
    on every account.

    @ivar lockedUntil: End of the token's lock (failures, too many
        accounts), or L{None}.
    @ivar revokedUntil: End of the token's revocation (C{inf}: until
        unlocked), or L{None}.
    """

    record: DeviceRecord
    lockedUntil: float | None = None
    revokedUntil: float | None = None


def matchDevice(records: list[DeviceRecord], account: str, fingerprint: str) -> DeviceRecord:
    """
    The one record among C{account}'s C{records} whose fingerprint starts
    with C{fingerprint}: people give as many digits as they see.

    @raise ManagementError: If none does, or more than one.
    """
    fingerprint = fingerprint.lower()
    if _FINGERPRINT.fullmatch(fingerprint) is None:
        raise ManagementError(
            f"invalid fingerprint {fingerprint!r}: expected hex digits, as "
            "'devices list' shows them"
        )
    matches = [r for r in records if r.digest.startswith(fingerprint)]
    if not matches:
        raise ManagementError(f"{account} has no device with fingerprint {fingerprint}")
    if len(matches) > 1:
        raise ManagementError(
            f"fingerprint {fingerprint} matches {len(matches)} devices of {account}: "
            "give more digits"
        )
    return matches[0]


@defer.inlineCallbacks
def renameDevice(
    store: IClientIDStore,
    account: str,
    fingerprint: str,
    text: str,
    eventFor: Callable[[DeviceRecord, str | None], Event],
) -> Any:
    """
    Name one of C{account}'s devices as a person typed it (an empty name
    removes it): the one way both the device page and C{clientid-admin
    devices rename} do it, so both check the name alike.

    @param fingerprint: The device's fingerprint, or a unique prefix.
    @param eventFor: Makes the event to record from the device's record
        and the checked name (L{None}: removed); the event names who
        renamed which device, not the name, which is the owner's text.
    @raise clientid_twisted._devicename.BadDeviceName: If the name is too
        long or holds control or format characters (before the store is
        asked anything).
    @raise ManagementError: If the account has no such device.
    @return: A Deferred of the device's new L{DeviceRecord}.
    """
    name = checkDeviceName(text)
    records = yield store.listDevices(account)
    record = matchDevice(records, account, fingerprint)
    try:
        new = yield store.renameDevice(account, record.digest, name, eventFor(record, name))
    except UnknownDevice:
        # Forgotten between the two calls (the account was removed).
        raise ManagementError(f"{account} has no device with fingerprint {fingerprint}") from None
    return new


def resultOf(d: defer.Deferred[Any]) -> Any:
    """
    The result of a Deferred from a blocking store (one that has fired).
    """
    result = firedResult(d)
    if result is NOT_FIRED:
        raise RuntimeError("the store did not answer at once: open it with blocking=True")
    if isinstance(result, Failure):
        result.raiseException()
    return result


class DeviceManager:
    """
    Operator actions on a store.

    @ivar store: An L{IClientIDStore} whose calls answer at once.
    @ivar hasher: The store's hasher (its key, or the configured one).
    @ivar actor: Who acts, recorded in the events (C{"admin"}).
    """

    def __init__(self, store: IClientIDStore, hasher: IdentityHasher, actor: str = "admin") -> None:
        self.store = store
        self.hasher = hasher
        self.actor = actor

    def _event(self, kind: str, account: str | None, typeName: str, fingerprint: str) -> Event:
        return Event(kind, account, typeName, fingerprint, detail=f"by {self.actor}")

    def listDevices(self, account: str) -> list[DeviceView]:
        records: list[DeviceRecord] = resultOf(self.store.listDevices(account))
        wanted = []
        for record in records:
            wanted += [keys.tokenLocked(record.digest), keys.tokenRevoked(record.digest)]
        locks: dict[str, float] = resultOf(self.store.activeLocks(wanted)) if wanted else {}
        return [
            DeviceView(
                record,
                locks.get(keys.tokenLocked(record.digest)),
                locks.get(keys.tokenRevoked(record.digest)),
            )
            for record in records
        ]

    def findDevice(self, account: str, fingerprint: str) -> DeviceRecord:
        """
        The account's device whose fingerprint starts with C{fingerprint}.

        @raise ManagementError: If none does, or more than one.
        """
        return matchDevice(resultOf(self.store.listDevices(account)), account, fingerprint)

    def _setState(
        self,
        account: str,
        state: str,
        kind: str,
        identity: ClientIdentity | None,
        fingerprint: str | None,
    ) -> DeviceRecord:
        if identity is not None:
            digest = self.hasher.digest(identity)
            typeName, short = identity.type, self.hasher.fingerprint(identity)
        elif fingerprint is not None:
            found = self.findDevice(account, fingerprint)
            digest, typeName, short = found.digest, found.typeName, found.fingerprint
        else:
            raise ManagementError("name the device by TYPE TOKEN or by --fingerprint")
        record: DeviceRecord = resultOf(
            self.store.setDeviceState(
                account, digest, typeName, short, state, self._event(kind, account, typeName, short)
            )
        )
        return record

    def approve(
        self, account: str, identity: ClientIdentity | None = None, fingerprint: str | None = None
    ) -> DeviceRecord:
        """
        Let a device log in to an account (in any mode), whether it was seen
        before or not.
        """
        return self._setState(account, APPROVED, "device-approved", identity, fingerprint)

    def revoke(
        self, account: str, identity: ClientIdentity | None = None, fingerprint: str | None = None
    ) -> DeviceRecord:
        """
        Refuse a device on an account until it is approved again.
        """
        return self._setState(account, REVOKED, "device-revoked", identity, fingerprint)

    def rename(self, account: str, fingerprint: str, text: str) -> DeviceRecord:
        """
        Name the account's device whose fingerprint starts with
        C{fingerprint} (an empty C{text} removes its name), checked as the
        device page checks an owner's name; a C{device-renamed} event.

        @raise clientid_twisted._devicename.BadDeviceName: If the name is
            too long or holds control or format characters.
        @raise ManagementError: If the account has no such device.
        """

        def eventFor(record: DeviceRecord, name: str | None) -> Event:
            detail = f"by {self.actor}" if name is not None else f"name removed by {self.actor}"
            return Event(
                "device-renamed", account, record.typeName, record.fingerprint, detail=detail
            )

        record: DeviceRecord = resultOf(
            renameDevice(self.store, account, fingerprint, text, eventFor)
        )
        return record

    def revokeToken(self, identity: ClientIdentity, seconds: float | None = None) -> float:
        """
        Refuse a token on every account, for C{seconds} or until unlocked.

        @return: When the revocation ends (C{inf}: never by itself).
        """
        digest = self.hasher.digest(identity)
        event = self._event("token-revoked", None, identity.type, self.hasher.fingerprint(identity))
        until: float = resultOf(self.store.setLock(keys.tokenRevoked(digest), seconds, event))
        return until

    def forgetAccount(self, account: str) -> None:
        """
        Remove everything the store keeps for an account that is gone: its
        devices (approved, pending and revoked) and its counts and locks.
        """
        event = Event("user-removed", account, detail=f"by {self.actor}")
        resultOf(self.store.forgetDevices(account, event))
        resultOf(self.store.clearKeys(keys.accountKeys(account), None))

    def unlockToken(self, identity: ClientIdentity) -> None:
        """
        Lift a token's revocation and lock, and forget the failures and
        accounts counted against it.
        """
        digest = self.hasher.digest(identity)
        event = self._event("token-unlocked", None, identity.type, self.hasher.fingerprint(identity))
        resultOf(self.store.clearKeys(keys.tokenKeys(digest), event))

    def events(self, account: str | None, limit: int) -> list[Event]:
        """
        The most recent C{limit} events (of C{account}, or all), oldest
        first.
        """
        events: list[Event] = resultOf(self.store.listEvents(account, limit))
        return events
