# -*- test-case-name: tests.test_relay_service -*-
"""
Delivery status notifications (bounces) for relayed mail, in the shape of
RFC 3464: a C{multipart/report; report-type=delivery-status} with a
human-readable part, a C{message/delivery-status} part and the original
message's headers (C{text/rfc822-headers}).

Twisted's L{twisted.mail.bounce.generateBounce} is not used: its report
lacks C{Reporting-MTA}, C{Action} and C{Status} (all required by RFC 3464)
and is queued for relaying, while ours goes straight into the local
sender's INBOX.
"""

from __future__ import annotations

import email.utils
import secrets
from pathlib import Path

from attrs import frozen

from clientid_twisted.server.relayqueue import QueueEntry

__all__ = ["DeliveryFailure", "bounceLines", "originalHeaders"]

HEADER_LIMIT = 64 * 1024
"""At most this much of the original message's header is returned."""


@frozen
class DeliveryFailure:
    """
    Why a message is being returned.

    @ivar status: The RFC 3463 status code (C{5.1.1}, C{4.4.7}, ...).
    @ivar diagnostic: The smarthost's reply or our own reason, printable
        ASCII on one line.
    @ivar remoteMTA: The smarthost's name when the reply came from it.
    @ivar expired: Whether the queue lifetime ran out (rather than a
        refusal).
    """

    status: str
    diagnostic: str
    remoteMTA: str | None = None
    expired: bool = False


def _safe(text: str) -> str:
    # Addresses and replies come from the network: never let one break a
    # header line or the report's structure.
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _asciiHost(hostname: str) -> str:
    try:
        return hostname.encode("idna").decode("ascii")
    except UnicodeError:
        return _safe(hostname)


def originalHeaders(dataPath: Path, limit: int = HEADER_LIMIT) -> list[bytes]:
    """
    The header lines of a queued message (LF line ends on disk), up to the
    blank line or C{limit} bytes.
    """
    lines: list[bytes] = []
    size = 0
    with open(dataPath, "rb") as f:
        for line in f:
            line = line.rstrip(b"\r\n")
            if not line or size > limit:
                break
            lines.append(line)
            size += len(line) + 2
    return lines


def bounceLines(
    entry: QueueEntry,
    failure: DeliveryFailure,
    hostname: str,
    now: float,
    headers: list[bytes],
) -> list[bytes]:
    """
    The bounce for C{entry}, as lines without line ends.

    @param hostname: Our name: the report's C{Reporting-MTA}.
    @param now: When delivery was given up (C{Last-Attempt-Date}).
    @param headers: The original message's header lines.
    """
    host = _asciiHost(hostname)
    boundary = "dsn-" + secrets.token_hex(12)
    sender = _safe(entry.sender)
    recipient = _safe(entry.recipient)
    diagnostic = _safe(failure.diagnostic)
    date = email.utils.formatdate(now, usegmt=True)
    arrival = email.utils.formatdate(entry.queued, usegmt=True)
    if failure.expired:
        why = [
            f"It could not be delivered to <{recipient}> within the time the",
            "server keeps trying, and has been returned to you. The last",
            "attempt failed with:",
        ]
    else:
        why = [
            f"The server that relays it refused it for <{recipient}>,",
            "so it has been returned to you. The refusal was:",
        ]
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: {email.utils.make_msgid('dsn', domain=host)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        f"This is the mail system at {host}.",
        "",
        f"Your message sent on {arrival}",
        *why,
        "",
        f"  <{recipient}>: {diagnostic}",
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        f"Reporting-MTA: dns; {host}",
        f"Arrival-Date: {arrival}",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        "Action: failed",
        f"Status: {_safe(failure.status)}",
    ]
    if failure.remoteMTA:
        lines.append(f"Remote-MTA: dns; {_asciiHost(failure.remoteMTA)}")
    lines += [
        f"Diagnostic-Code: smtp; {diagnostic}",
        f"Last-Attempt-Date: {date}",
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
    ]
    encoded = [line.encode("ascii") for line in lines]
    encoded += [h for h in headers if not h.startswith(b"--" + boundary.encode())]
    encoded += [b"", f"--{boundary}--".encode("ascii")]
    return encoded
