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
from typing import Any, Callable

from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger

from clientid_twisted.interfaces import IAlertObserver
from clientid_twisted.policy.alerts import Alert
from clientid_twisted.server.delivery import deliverToInbox
from clientid_twisted.server.users import UserDatabase

__all__ = ["MailboxAlertObserver", "noticeLines", "WITHOUT_PASSWORD_KINDS"]

WITHOUT_PASSWORD_KINDS = frozenset({"device-locked", "account-closed"})
"""Account alerts about failed logins that anyone can cause, with no
password: mailed only with C{[alerts] notice_failures = true}."""

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
    alert: Alert, hostname: str, messageID: str, repeated: int = 0
) -> list[bytes]:
    """
    The notice for C{alert} as RFC 5322 lines (ASCII, no line ends).

    @param repeated: How many alerts of the same kind were not mailed since
        the last notice (rationing); said in the notice.
    """
    ascii = _asciiHost(hostname)
    when = email.utils.formatdate(alert.time, usegmt=True)
    lines = [
        f"From: Mail security <postmaster@{ascii}>",
        f"To: <{alert.account}>",
        f"Subject: {_SUBJECTS.get(alert.kind, 'Security notice for your mail account')}",
        f"Date: {when}",
        f"Message-ID: {messageID}",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
        "",
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
    lines += [
        "",
        "If this was you, there is nothing to do.",
        "If it was not, change your password now and ask your administrator",
        "to revoke the device"
        + (f" (fingerprint {alert.fingerprint})." if alert.fingerprint else "."),
        "",
        f"-- {ascii}",
    ]
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
    ) -> None:
        """
        @param users: The accounts; each delivery reads their file afresh,
            in its own thread (a L{UserDatabase} belongs to one thread).
        @param clock: Dates the notices; the reactor by default.
        @param interval: At most one notice of a kind per account this
            often (C{[alerts] notice_interval_seconds}).
        @param failureNotices: Whether alerts in L{WITHOUT_PASSWORD_KINDS}
            are mailed (C{[alerts] notice_failures}).
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
        # (account, kind) -> [when the last notice went, alerts not mailed since]
        self._windows: dict[tuple[str | None, str], list[Any]] = {}

    def alertRaised(self, alert: Alert) -> None:
        if not alert.forAccount:
            return
        if alert.kind in WITHOUT_PASSWORD_KINDS and not self.failureNotices:
            return
        repeated = self._ration(alert)
        if repeated is None:
            return
        if repeated:
            d = self._run(self.deliver, alert, repeated)
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

    def _ration(self, alert: Alert) -> int | None:
        """
        Whether to mail C{alert} now: L{None} if a notice of its kind went
        to its account less than C{interval} ago (it is counted), else how
        many were counted since that notice.
        """
        now = self._clock.seconds()
        key = (alert.account, alert.kind)
        window = self._windows.get(key)
        if window is not None and now - window[0] < self.interval:
            window[1] += 1
            return None
        if len(self._windows) >= _MAX_WINDOWS:
            self._windows = {
                k: w for k, w in self._windows.items() if now - w[0] < self.interval
            }
        self._windows[key] = [now, 0]
        return window[1] if window is not None else 0

    def deliver(self, alert: Alert, repeated: int = 0) -> Path | None:
        """
        Write the notice into the account's maildir; blocking.

        @param repeated: Alerts of its kind not mailed since the last one.

        @return: The message's path, or L{None} if the account does not
            exist.
        """
        users = UserDatabase(self.usersPath)
        if alert.account is None or not users.exists(alert.account):
            return None
        messageID = email.utils.make_msgid("clientid", domain=_asciiHost(self.hostname))
        return deliverToInbox(
            self.dataDir,
            users,
            self.hostname,
            alert.account,
            noticeLines(alert, self.hostname, messageID, repeated),
            clock=self._clock,
        )
