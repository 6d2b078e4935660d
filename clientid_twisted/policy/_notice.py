# -*- test-case-name: tests.test_policy_alerts -*-
"""
An account alert as a short RFC 5322 message for the account's owner:
what the server delivers into the INBOX and the gateway APPENDs to the
backend's INBOX (both send the same text).
"""

from __future__ import annotations

import email.utils
from typing import Sequence

from clientid_twisted.policy._alerts import Alert

__all__ = ["LINK_KINDS", "asciiHost", "messageLines", "noticeLines"]

LINK_KINDS = frozenset({"device-new", "device-refused"})
"""The notices that carry approve and disown links for their devices, when
the self-service site is on (docs/selfservice.md)."""

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
    ascii = asciiHost(hostname)
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


def _headerLines(account: str, subject: str, when: float, messageID: str, host: str) -> list[str]:
    return [
        f"From: Mail security <postmaster@{host}>",
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
    ascii = asciiHost(hostname)
    lines = _headerLines(account, subject, when, messageID, ascii) + list(body) + ["", f"-- {ascii}"]
    return [_safe(line) for line in lines]


def asciiHost(hostname: str) -> str:
    """
    C{hostname} in ASCII (IDNA; C{?} for what cannot be encoded), for mail
    headers.
    """
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return hostname.encode("ascii", "replace").decode("ascii")


def _safe(line: str) -> bytes:
    # Fields come from the network (an address, a type): never let one
    # break a line or the message.
    return line.replace("\r", "?").replace("\n", "?").encode("ascii", "replace")
