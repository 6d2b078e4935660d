# -*- test-case-name: tests.test_smtp_server,tests.test_imap_server -*-
"""
How both protocols log a login that did not succeed, and how every string
a client chose is made safe for a log line.

The wire says nothing about why; the log says what kind of failure it was
(C{authEvent}: C{failed}, C{tempfail} or C{error}), with the identity's type
and fingerprint, never the token.

Log readers (grep, fail2ban, SIEMs) trust one event per line: a user name
with a newline would forge a second line, a NUL makes grep call the file
binary.  L{escapeForLog} is applied to every client-chosen field before it
is logged (user names, EHLO/HELO names, addresses, identity types,
mechanism names), here and in the policy's log lines.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted._errors import TemporaryAuthenticationFailure

__all__ = ["escapeForLog", "describeClientID", "logLoginFailure"]

_SAFE = frozenset(range(0x20, 0x7F)) - {ord("\\")}


def escapeForLog(value: object) -> str:
    """
    A client-chosen value as printable ASCII for a log line: bytes outside
    0x20-0x7E (control characters, DEL, every byte of a non-ASCII
    character in UTF-8) become C{\\xNN}, and a backslash C{\\\\}, so the
    text cannot be mistaken for an escape either.

    @param value: L{bytes}, L{str} (encoded as UTF-8 first), L{None}
        (shown as C{-}) or anything else (its C{str}).
    """
    if value is None:
        return "-"
    if isinstance(value, bytes):
        data = value
    else:
        text = value if isinstance(value, str) else str(value)
        try:
            data = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = text.encode("utf-8", "backslashreplace")
    if all(byte in _SAFE for byte in data):
        return data.decode("ascii")
    return "".join(
        chr(byte) if byte in _SAFE else "\\\\" if byte == 0x5C else f"\\x{byte:02x}"
        for byte in data
    )


def describeClientID(typeName: str | None, fingerprint: str | None, logged: bool = True) -> str:
    """
    The words a log line uses for a session's device: C{CLIENTID type=T
    fingerprint=F}, C{without CLIENTID} when the client sent none, or
    C{CLIENTID not logged} when its type's handling keeps it out of the log.

    @param typeName: The identity's type as the client sent it (escaped
        here), or L{None} without an identity.
    """
    if typeName is None:
        return "without CLIENTID"
    if not logged:
        return "CLIENTID not logged"
    return f"CLIENTID type={escapeForLog(typeName)} fingerprint={fingerprint}"


def logLoginFailure(log: Logger, reason: Failure, **fields: Any) -> bool:
    """
    Log a login that failed.

    @param fields: The event's fields: C{command}, C{protocol}, C{peer},
        C{username}, C{clientIDType}, C{clientIDFingerprint}.
    @return: L{True} for a refusal (wrong password, unknown user, device
        policy: answer with the wrong-password reply), L{False} for anything
        else (answer with a temporary failure).
    """
    if reason.check(UnauthorizedLogin):
        log.info(
            "{command} failed for {username} from {peer} "
            "({clientID})",
            authEvent="failed",
            **fields,
        )
        return True
    if reason.check(TemporaryAuthenticationFailure):
        log.warn(
            "{command} could not be decided for {username} from {peer}: {why}",
            authEvent="tempfail",
            why=str(reason.value),
            **fields,
        )
    else:
        log.failure(
            "{command} raised for {username} from {peer}",
            reason,
            authEvent="error",
            **fields,
        )
    return False
