# -*- test-case-name: tests.test_policy_alerts -*-
"""
Alerts as mail in the account's own INBOX: the owner reads them in the
client they use anyway, without another service knowing about the device.

Anyone who knows an address can make alerts for it (wrong passwords from
fresh tokens), so notices are rationed: at most one of a kind per account
per C{[alerts] notice_interval_seconds}, the next one saying how many came
in between; and alerts about failed logins without the right password
(C{device-locked}, C{account-closed}) are not mailed unless
C{[alerts] notice_failures} asks for them: the log and the webhook have
them all.
"""

from __future__ import annotations

import email.utils
from pathlib import Path
from typing import Any, Callable, Sequence

from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger

from clientid_twisted.interfaces import IAlertObserver
from clientid_twisted.policy import Alert, LINK_KINDS, asciiHost, messageLines, noticeLines
from clientid_twisted.server.delivery import deliverToInbox
from clientid_twisted.server.users import UserDatabase

__all__ = [
    "MailboxAlertObserver",
    "noticeLines",
    "messageLines",
    "noticeWanted",
    "noticeLinks",
    "WITHOUT_PASSWORD_KINDS",
    "LINK_KINDS",
]

WITHOUT_PASSWORD_KINDS = frozenset({"device-locked", "account-closed"})
"""Account alerts about failed logins that anyone can cause, with no
password: mailed only with C{[alerts] notice_failures = true}."""

_MAX_LISTED = 10
"""Devices of the rationed alerts listed, with their links, in the next
notice of their kind."""

_MAX_WINDOWS = 10000
"""Open rationing windows kept before expired ones are dropped (alerts can
name accounts that do not exist)."""


def noticeWanted(alert: Alert, failureNotices: bool) -> bool:
    """
    Whether C{alert} becomes a notice in its account's INBOX: account
    alerts only, and those in L{WITHOUT_PASSWORD_KINDS} (anyone can cause
    them) only with C{[alerts] notice_failures}.  The rule of the
    standalone server and of the gateway's pending notices.
    """
    return alert.forAccount and (failureNotices or alert.kind not in WITHOUT_PASSWORD_KINDS)


def noticeLinks(
    alert: Alert,
    account: str,
    linksFor: Callable[[str, str], tuple[str, str]] | None,
    devices: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str, tuple[str, str]]]:
    """
    The devices a notice lists with their approve and disown links: the
    alert's own, then C{devices} (type, fingerprint: those of rationed
    alerts); none unless the site is on (C{linksFor}) and the alert is of
    L{LINK_KINDS}.
    """
    if linksFor is None or alert.kind not in LINK_KINDS:
        return []
    listed = [(alert.typeName or "?", alert.fingerprint)] if alert.fingerprint else []
    listed += [d for d in devices if d not in listed]
    return [(t, f, linksFor(account, f)) for t, f in listed if f]


@implementer(IAlertObserver)
class MailboxAlertObserver:
    """
    Delivers account alerts into the account's INBOX (its maildir, as mail
    from C{postmaster@hostname}), off the reactor thread.

    Only accounts that exist get mail: login names come from the network,
    and no maildir is ever made for a name an attacker typed.
    """

    log = Logger()

    def __init__(
        self,
        dataDir: Path,
        users: UserDatabase,
        hostname: str,
        clock: Any = None,
        runInThread: Callable[..., defer.Deferred[Any]] | None = None,
        interval: float = 3600.0,
        failureNotices: bool = False,
        linksFor: Callable[[str, str], tuple[str, str]] | None = None,
    ) -> None:
        """
        @param users: The accounts; each delivery reads their file afresh,
            in its own thread (a L{UserDatabase} belongs to one thread).
        @param clock: Dates the notices; the reactor by default.
        @param interval: At most one notice of a kind per account this
            often (C{[alerts] notice_interval_seconds}).
        @param failureNotices: Whether alerts in L{WITHOUT_PASSWORD_KINDS}
            are mailed (C{[alerts] notice_failures}).
        @param linksFor: C{linksFor(account, fingerprint)}: the approve and
            disown links of a device, for the notices of L{LINK_KINDS};
            L{None} when the self-service site is off.
        @param runInThread: C{runInThread(f, *args)} runs C{f} somewhere
            that may block and returns a Deferred of its result; the
            reactor's thread pool by default.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        if runInThread is None:
            from twisted.internet.threads import deferToThread

            runInThread = deferToThread
        self.dataDir = Path(dataDir)
        self.usersPath = Path(users.path)
        self.hostname = hostname
        self._clock = clock
        self._run: Callable[..., defer.Deferred[Any]] = runInThread
        self.interval = interval
        self.failureNotices = failureNotices
        self.linksFor = linksFor
        # (account, kind) -> [when the last notice went, alerts not mailed
        # since, the devices (type, fingerprint) of those alerts]
        self._windows: dict[tuple[str | None, str], list[Any]] = {}

    def alertRaised(self, alert: Alert) -> None:
        if not noticeWanted(alert, self.failureNotices):
            return
        rationed = self._ration(alert)
        if rationed is None:
            return
        repeated, devices = rationed
        if repeated:
            d = self._run(self.deliver, alert, repeated, devices)
        else:
            d = self._run(self.deliver, alert)
        d.addErrback(
            lambda f: self.log.failure(
                "could not deliver the {alertKind} notice to {account}",
                f,
                alertKind=alert.kind,
                account=alert.account,
            )
        )

    def _ration(self, alert: Alert) -> tuple[int, list[tuple[str, str]]] | None:
        """
        Whether to mail C{alert} now: L{None} if a notice of its kind went
        to its account less than C{interval} ago (it is counted, and its
        device kept for the next notice), else how many were counted since
        that notice and their devices.
        """
        now = self._clock.seconds()
        key = (alert.account, alert.kind)
        window = self._windows.get(key)
        if window is not None and now - window[0] < self.interval:
            window[1] += 1
            device = (alert.typeName or "?", alert.fingerprint)
            if alert.fingerprint and device not in window[2] and len(window[2]) < _MAX_LISTED:
                window[2].append(device)
            return None
        if len(self._windows) >= _MAX_WINDOWS:
            self._windows = {
                k: w for k, w in self._windows.items() if now - w[0] < self.interval
            }
        self._windows[key] = [now, 0, []]
        return (window[1], window[2]) if window is not None else (0, [])

    def deliver(
        self, alert: Alert, repeated: int = 0, devices: Sequence[tuple[str, str]] = ()
    ) -> Path | None:
        """
        Write the notice into the account's maildir; blocking.

        @param repeated: Alerts of its kind not mailed since the last one.
        @param devices: The devices of those alerts (type, fingerprint),
            listed with their own links when the site is on.

        @return: The message's path, or L{None} if the account does not
            exist.
        """
        if alert.account is None:
            return None
        account = alert.account
        links = noticeLinks(alert, account, self.linksFor, devices)
        return self._write(
            account, lambda messageID: noticeLines(alert, self.hostname, messageID, repeated, links)
        )

    def deliverMessage(self, account: str, subject: str, body: Sequence[str]) -> defer.Deferred[Any]:
        """
        Deliver a message from the server into C{account}'s INBOX, off the
        reactor thread (the self-service site's sign-in link).

        @return: A Deferred of its path, or of L{None} if there is no such
            account.
        """
        when = self._clock.seconds()
        return self._run(
            self._write,
            account,
            lambda messageID: messageLines(account, subject, body, self.hostname, messageID, when),
        )

    def _write(self, account: str, makeLines: Callable[[str], list[bytes]]) -> Path | None:
        users = UserDatabase(self.usersPath)
        if not users.exists(account):
            return None
        messageID = email.utils.make_msgid("clientid", domain=asciiHost(self.hostname))
        return deliverToInbox(
            self.dataDir, users, self.hostname, account, makeLines(messageID), clock=self._clock
        )
