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
from clientid_twisted.policy.alerts import Alert
from clientid_twisted.server.delivery import deliverToInbox
from clientid_twisted.server.users import UserDatabase

__all__ = ["MailboxAlertObserver", "noticeLines", "messageLines", "WITHOUT_PASSWORD_KINDS", "LINK_KINDS"]

WITHOUT_PASSWORD_KINDS = frozenset({"device-locked", "account-closed"})
"""Account alerts about failed logins that anyone can cause, with no
password: mailed only with C{[alerts] notice_failures = true}."""

LINK_KINDS = frozenset({"device-new", "device-refused"})
"""The notices that carry approve and disown links for their devices, when
the self-service site is on (docs/selfservice.md)."""

_MAX_LISTED = 10
"""Devices of the rationed alerts listed, with their links, in the next
notice of their kind."""

_MAX_WINDOWS = 10000
"""Open rationing windows kept before expired ones are dropped (alerts can
name accounts that do not exist)."""

_SUBJECTS = {
    "device-new": "New device logged in to your mail account",
    "device-refused": "Your mail password was used from a refused device",
    "device-locked": "A device was locked out of your mail account",
    "account-closed": "Failed logins to your mail account",
    "no-clientid-login": "Login to your mail account without a device identity",
    "login": "Login to your mail account",
}


def noticeLines(
    alert: Alert,
    hostname: str,
    messageID: str,
    repeated: int = 0,
    links: Sequence[tuple[str, str, tuple[str, str]]] = (),
) -> list[bytes]:
    """
    The notice for C{alert} as RFC 5322 lines (ASCII, no line ends).

    @param repeated: How many alerts of the same kind were not mailed since
        the last notice (rationing); said in the notice.
    @param links: For each device the notice is about (C{alert}'s first,
        then those of the rationed alerts): its type, fingerprint, and
        approve and disown links of the self-service site; empty when the
        site is off, and the notice sends the owner to the administrator.
    """
    ascii = _asciiHost(hostname)
    when = email.utils.formatdate(alert.time, usegmt=True)
    subject = _SUBJECTS.get(alert.kind, "Security notice for your mail account")
    lines = _headerLines(str(alert.account), subject, alert.time, messageID, ascii) + [
        f"Hello {alert.account},",
        "",
        f"On {when}, {alert.summary}.",
        "",
    ]
    if repeated:
        lines += [
            f"This happened {repeated + 1} times since the last notice of this kind;",
            "the details below are of the latest.",
            "",
        ]
    if alert.typeName or alert.fingerprint:
        lines.append(f"  Device:      {alert.typeName or '?'} {alert.fingerprint or ''}".rstrip())
    if alert.address:
        lines.append(f"  Address:     {alert.address}")
    if alert.protocol:
        lines.append(f"  Protocol:    {alert.protocol.upper()}")
    if alert.detail:
        lines.append(f"  Why:         {alert.detail}")
    if links:
        for typeName, fingerprint, (approve, disown) in links:
            lines += [
                "",
                f"Device {typeName} {fingerprint}:",
                "  If this was you, approve it (the link works once):",
                f"    {approve}",
                "  If it was not you, revoke it, then change your password:",
                f"    {disown}",
            ]
    else:
        lines += [
            "",
            "If this was you, there is nothing to do.",
            "If it was not, change your password now and ask your administrator",
            "to revoke the device"
            + (f" (fingerprint {alert.fingerprint})." if alert.fingerprint else "."),
        ]
    lines += ["", f"-- {ascii}"]
    return [_safe(line) for line in lines]


def _headerLines(account: str, subject: str, when: float, messageID: str, asciiHost: str) -> list[str]:
    return [
        f"From: Mail security <postmaster@{asciiHost}>",
        f"To: <{account}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(when, usegmt=True)}",
        f"Message-ID: {messageID}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
        "",
    ]


def messageLines(
    account: str, subject: str, body: Sequence[str], hostname: str, messageID: str, when: float
) -> list[bytes]:
    """
    A message from the server to C{account} as RFC 5322 lines: for what
    is not an alert (the self-service site's sign-in link).
    """
    ascii = _asciiHost(hostname)
    lines = _headerLines(account, subject, when, messageID, ascii) + list(body) + ["", f"-- {ascii}"]
    return [_safe(line) for line in lines]


def _asciiHost(hostname: str) -> str:
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return hostname.encode("ascii", "replace").decode("ascii")


def _safe(line: str) -> bytes:
    # Fields come from the network (an address, a type): never let one
    # break a line or the message.
    return line.replace("\r", "?").replace("\n", "?").encode("ascii", "replace")


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
        if not alert.forAccount:
            return
        if alert.kind in WITHOUT_PASSWORD_KINDS and not self.failureNotices:
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
        links: list[tuple[str, str, tuple[str, str]]] = []
        if self.linksFor is not None and alert.kind in LINK_KINDS:
            listed = [(alert.typeName or "?", alert.fingerprint)] if alert.fingerprint else []
            listed += [d for d in devices if d not in listed]
            links = [(t, f, self.linksFor(account, f)) for t, f in listed if f]
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
        messageID = email.utils.make_msgid("clientid", domain=_asciiHost(self.hostname))
        return deliverToInbox(
            self.dataDir, users, self.hostname, account, makeLines(messageID), clock=self._clock
        )
