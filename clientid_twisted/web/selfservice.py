# -*- test-case-name: tests.test_web_resource -*-
"""
What an account owner may do to their own devices, over the store that
the policy and C{clientid-admin} use, so a change holds on every frontend
that shares it.

Every capability arrives by mail (L{SelfService.deliver}): approving or
disowning a device takes a link from a notice, and the device page takes a
sign-in link.  Asking for a sign-in link answers the same whether the
account exists or not, and is rate-limited per account and per address.

The rate limiter is a few lines of our own rather than the store's
counters: it guards the mail a process sends, needs no store round trip
on a request that must answer the same for every address, and must keep
working while the store is down.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Sequence

from attrs import frozen
from twisted.internet import defer
from twisted.logger import Logger

from clientid_twisted._authlog import escapeForLog
from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.policy import ManagementError, accountName, matchDevice, renameDevice
from clientid_twisted.store import APPROVED, DeviceRecord, Event, REVOKED
from clientid_twisted.web.links import APPROVE, SIGN_IN, InvalidLink, LinkClaim, LinkMaker

__all__ = ["Notice", "SelfService", "RateLimiter", "linkUsedKey", "deviceDisownedKey"]


def linkUsedKey(linkID: str) -> str:
    """The store's marker of a link that has been used."""
    return "web-link-used:" + linkID


def deviceDisownedKey(account: str, digest: str) -> str:
    """
    The store's marker that the owner said "this wasn't me": approval links
    for that device made before it stop working.
    """
    return "web-device-disowned:" + account + "\x00" + digest


class RateLimiter:
    """
    At most C{count} events per key in any C{window} seconds, in this
    process (a frontend of several allows that many each: the limit is
    against mail flooding, and the mailbox is the same for all).
    """

    def __init__(self, count: int, window: float, clock: Callable[[], float] = time.time) -> None:
        self.count = count
        self.window = window
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        """
        Whether one more event for C{key} is allowed now; counts it if so.
        """
        now = self._clock()
        seen = self._seen.setdefault(key, deque())
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if len(seen) >= self.count:
            return False
        seen.append(now)
        if len(self._seen) > 100000:
            self._forgetIdle(now)
        return True

    def _forgetIdle(self, now: float) -> None:
        for key in [k for k, v in self._seen.items() if not v or v[-1] <= now - self.window]:
            del self._seen[key]


@frozen
class Notice:
    """
    A message for an account's INBOX: a subject and plain-text lines.
    """

    account: str
    subject: str
    lines: Sequence[str]


class SelfService:
    """
    The owner's actions.

    @ivar deliver: C{deliver(notice)} puts a L{Notice} into the account's
        INBOX and returns a Deferred.
    @ivar accountExists: C{accountExists(address)}: whether to mail a
        sign-in link there at all.
    """

    log = Logger()

    def __init__(
        self,
        store: IClientIDStore,
        links: LinkMaker,
        deliver: Callable[[Notice], "defer.Deferred[Any]"],
        accountExists: Callable[[str], bool],
        perAccount: RateLimiter | None = None,
        perAddress: RateLimiter | None = None,
    ) -> None:
        self.store = store
        self.links = links
        self.deliver = deliver
        self.accountExists = accountExists
        self.perAccount = perAccount or RateLimiter(3, 900.0, links.clock)
        self.perAddress = perAddress or RateLimiter(10, 900.0, links.clock)

    def deviceLinks(self, account: str, fingerprint: str) -> tuple[str, str]:
        """
        The Approve and "This wasn't me" links for one device of an
        account, for a notice.
        """
        return self.links.deviceLinks(account, fingerprint)

    def checkLink(self, token: str, action: str) -> "defer.Deferred[tuple[LinkClaim, DeviceRecord | None]]":
        """
        What a link grants, without using it (for the confirmation page):
        its claim, and the device it names (L{None} for a sign-in link).

        Fails with L{InvalidLink} if it is forged, expired, for another
        action, used, or void (the device is gone, or the owner disowned
        it after an approval link was made).
        """
        try:
            claim = self.links.signer.verify(token, action, self.links.clock())
        except InvalidLink as e:
            return defer.fail(e)
        return self._checkUnused(claim)

    @defer.inlineCallbacks
    def _checkUnused(self, claim: LinkClaim) -> Any:
        wanted = [linkUsedKey(claim.linkID)]
        record = None
        if claim.action != SIGN_IN:
            record = yield self._device(claim.account, claim.fingerprint)
            wanted.append(deviceDisownedKey(claim.account, record.digest))
        active = yield self.store.activeLocks(wanted)
        if linkUsedKey(claim.linkID) in active:
            raise InvalidLink("used")
        if claim.action == APPROVE and wanted[1] in active:
            raise InvalidLink("void")
        return claim, record

    @defer.inlineCallbacks
    def _device(self, account: str, fingerprint: str) -> Any:
        records = yield self.store.listDevices(account)
        try:
            return matchDevice(records, account, fingerprint)
        except ManagementError:
            raise InvalidLink("void") from None

    @defer.inlineCallbacks
    def useLink(self, token: str, action: str, address: str) -> Any:
        """
        Do what an approve or disown link grants, once.

        @return: A Deferred of the device's new L{DeviceRecord}.
        """
        claim, _ = yield self.checkLink(token, action)
        # Used first: of two requests racing with one link, the second finds
        # the marker; the change itself is idempotent either way.
        yield self._markUsed(claim, None)
        if action == APPROVE:
            record = yield self.setState(claim.account, claim.fingerprint, APPROVED, address, "link")
        else:
            record = yield self.setState(claim.account, claim.fingerprint, REVOKED, address, "link")
            yield self.store.setLock(
                deviceDisownedKey(claim.account, record.digest), self.links.signer.ttl, None
            )
        return record

    def _markUsed(self, claim: LinkClaim, event: Event | None) -> "defer.Deferred[float]":
        """
        Record in the store that C{claim}'s link is used, for as long as it
        could still be presented.
        """
        return self.store.setLock(linkUsedKey(claim.linkID), claim.expires - self.links.clock(), event)

    @defer.inlineCallbacks
    def setState(self, account: str, fingerprint: str, state: str, address: str, via: str) -> Any:
        """
        Approve or revoke one of the account's devices, as its owner.

        @raise ManagementError: If the account has no such device.
        """
        records = yield self.store.listDevices(account)
        record = matchDevice(records, account, fingerprint)
        kind = "device-approved" if state == APPROVED else "device-revoked"
        event = Event(
            kind,
            account,
            record.typeName,
            record.fingerprint,
            address=address,
            protocol="web",
            detail=f"by owner ({via})",
        )
        new = yield self.store.setDeviceState(
            account, record.digest, record.typeName, record.fingerprint, state, event
        )
        self.log.info(
            "web: {account} {action} device type={clientIDType} fingerprint={fingerprint} "
            "from {address} ({via})",
            account=escapeForLog(account),
            action="approved" if state == APPROVED else "revoked",
            clientIDType=escapeForLog(record.typeName),
            fingerprint=record.fingerprint,
            address=escapeForLog(address),
            via=via,
        )
        return new

    @defer.inlineCallbacks
    def rename(self, account: str, fingerprint: str, text: str, address: str) -> Any:
        """
        Name one of the account's devices as its owner typed it (an empty
        name removes it).

        The event says who renamed which device but not to what: the name
        is the owner's text, shown escaped on their own page only; the log
        line has it escaped.

        @raise ManagementError: If the account has no such device.
        @raise clientid_twisted.policy.BadDeviceName: If the name is
            too long or holds control characters.
        @return: A Deferred of the device's new L{DeviceRecord}.
        """

        def eventFor(record: DeviceRecord, name: str | None) -> Event:
            return Event(
                "device-renamed",
                account,
                record.typeName,
                record.fingerprint,
                address=address,
                protocol="web",
                detail="by owner (device page)"
                if name is not None
                else "name removed by owner (device page)",
            )

        new = yield renameDevice(self.store, account, fingerprint, text, eventFor)
        self.log.info(
            "web: {account} renamed device type={clientIDType} fingerprint={fingerprint} "
            "to {name} from {address}",
            account=escapeForLog(account),
            clientIDType=escapeForLog(new.typeName),
            fingerprint=new.fingerprint,
            name=escapeForLog(new.name),
            address=escapeForLog(address),
        )
        return new

    # The device page

    def requestSignIn(self, account: str, address: str) -> "defer.Deferred[None]":
        """
        Mail a sign-in link to C{account}'s INBOX if it exists and neither
        the account nor C{address} asked too often; the caller answers the
        same in every case.
        """
        # The name the policy keeps the account's devices under (folded to
        # lower case), or "" for one no login could have.
        account = accountName(account.strip()) or ""
        if not self.perAddress.allow(address) or not self.perAccount.allow(account):
            self.log.info(
                "web: sign-in link for {account} from {address} refused: too many requests",
                account=escapeForLog(account),
                address=escapeForLog(address),
            )
            return defer.succeed(None)
        if not account or not self.accountExists(account):
            return defer.succeed(None)
        url = self.links.signInLink(account)
        minutes = int(self.links.signer.ttl // 60)
        notice = Notice(
            account,
            "Sign-in link for your mail devices",
            [
                f"Hello {account},",
                "",
                f"Someone at {address} asked to manage the devices of your mail account.",
                "If it was you, open this link to sign in:",
                "",
                url,
                "",
                f"The link works once, for {minutes} minutes.",
                "If it was not you, ignore this message: nothing changes without the link.",
            ],
        )
        self.log.info(
            "web: sign-in link mailed to {account} (asked from {address})",
            account=escapeForLog(account),
            address=escapeForLog(address),
        )
        d = self.deliver(notice)
        d.addErrback(lambda f: self.log.failure("web: could not mail the sign-in link", f))
        d.addCallback(lambda _: None)
        return d

    @defer.inlineCallbacks
    def signIn(self, token: str, address: str) -> Any:
        """
        Use a sign-in link.

        @return: A Deferred of the account it signs in to.
        """
        claim, _ = yield self.checkLink(token, SIGN_IN)
        event = Event("web-sign-in", claim.account, address=address, protocol="web")
        yield self._markUsed(claim, event)
        self.log.info(
            "web: {account} signed in from {address}",
            account=escapeForLog(claim.account),
            address=escapeForLog(address),
        )
        return claim.account

    def signedOut(self, account: str, address: str) -> "defer.Deferred[None]":
        """
        Record that a session ended by the owner's choice.
        """
        return self.store.clearKeys(
            (), Event("web-sign-out", account, address=address, protocol="web")
        )

    def devices(self, account: str) -> "defer.Deferred[list[DeviceRecord]]":
        return self.store.listDevices(account)

    def events(self, account: str, limit: int = 20) -> "defer.Deferred[list[Event]]":
        return self.store.listEvents(account, limit)
