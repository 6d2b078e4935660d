"""
Stand-ins for a server's login side, shared by the SMTP, IMAP and probe
tests: a checker that records what it saw and can be told how to fail, a
delivery that takes no recipient, and SASL PLAIN's encoding.
"""

from __future__ import annotations

import base64
from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.logger import formatEvent
from twisted.mail import smtp

from clientid_twisted._errors import TemporaryAuthenticationFailure
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.policy._config import parsePolicyConfig

__all__ = ["RecordingChecker", "RefusingDelivery", "plain", "HIDDEN_TYPES", "assertIdentityLogging"]


@implementer(ICredentialsChecker)
class RecordingChecker:
    """
    Checks alice/secret, records the credentials it saw, and can be told to
    refuse for a policy reason (C{mode = "policy"}), fail temporarily
    (C{"tempfail"}), fail in other ways (C{"crash"}), or answer later
    (C{"later"}: when a Deferred in C{pending} fires).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.inner = InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret")
        self.mode = "normal"
        self.pending: list[defer.Deferred[Any]] = []

    def requestAvatarId(self, credentials: Any) -> Any:
        self.seen.append(credentials)
        if self.mode == "policy":
            return defer.fail(UnauthorizedLogin("device not approved"))
        if self.mode == "tempfail":
            return defer.fail(TemporaryAuthenticationFailure("store down: secret detail"))
        if self.mode == "crash":
            return defer.fail(ZeroDivisionError("secret internals"))
        if self.mode == "later":
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending.append(d)
            return d.addCallback(lambda ignored: self.inner.requestAvatarId(credentials))
        return self.inner.requestAvatarId(credentials)


@implementer(smtp.IMessageDelivery)
class RefusingDelivery:
    """
    Accepts any sender and no recipient.
    """

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: test"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        return origin

    def validateTo(self, user: Any) -> Any:
        raise smtp.SMTPBadRcpt(user)


def plain(user: bytes, password: bytes) -> bytes:
    """
    SASL PLAIN's initial response for C{user} and C{password}, base64.
    """
    return base64.b64encode(b"\0" + user + b"\0" + password)


HIDDEN_TYPES = parsePolicyConfig(
    {"types": {"UUID": {"handling": ["ignore"]}, "QUIET": {"handling": ["auth"]}}}
)
"""A policy configuration whose handling keeps C{UUID} (C{ignore}) and
C{QUIET} (no C{system-log}) out of the log; any other type is shown."""


def assertIdentityLogging(test: Any, events: list[dict[str, Any]], typeName: bytes, token: bytes) -> None:
    """
    Under L{HIDDEN_TYPES}, a session that sent CLIENTID (C{typeName},
    C{token}, fingerprints keyed with C{b"k" * 32}), a wrong and a right
    password logged two events (the first login's also reports the
    CLIENTID's acceptance) naming the device only for a shown type, and no
    formatted line names a hidden one.
    """
    fingerprint = IdentityHasher(b"k" * 32).fingerprint(ClientIdentity(typeName.decode(), token.decode()))
    named = [e for e in events if "clientIDType" in e]
    test.assertEqual([e.get("clientIDEvent") for e in named], ["accepted", None])
    test.assertEqual([e.get("authEvent") for e in named], ["failed", "succeeded"])
    shown = {(e["clientIDType"], e["clientIDFingerprint"]) for e in named}
    if HIDDEN_TYPES.showsInLog(typeName.decode().upper()):
        test.assertEqual(shown, {(typeName.decode(), fingerprint)})
        return
    test.assertEqual(shown, {(None, None)})
    text = "".join(formatEvent(e) for e in events)
    test.assertNotIn(typeName.decode(), text)
    test.assertNotIn(fingerprint, text)
