"""
A capturing smarthost for the relay tests: Twisted's ESMTP server on
127.0.0.1 (one port with STARTTLS, one with implicit TLS, a throwaway
certificate, AUTH PLAIN/LOGIN for one account) that keeps every message it
accepts.  Recipients whose local part starts with C{reject} get
C{550 5.1.1}, with C{later} C{451 4.3.0}, so tests can ask for a permanent
or a temporary refusal.

Not a test module: the relay tests use it (C{test_relay_sender},
C{test_relay_submission}, C{test_relay_process}).
"""

from __future__ import annotations

from typing import Any

from attrs import define, field
from zope.interface import implementer

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.mail import smtp
from twisted.protocols.tls import TLSMemoryBIOFactory

from clientid_twisted.smtp import ClientIDESMTPFactory
from clientid_twisted.testing import ConnectionTracker, throwawayCertificate

__all__ = ["CapturedMessage", "CaptureSmarthost", "SMARTHOST_USER", "SMARTHOST_PASSWORD"]

SMARTHOST_USER = b"relay-user"
SMARTHOST_PASSWORD = b"smarthost secret"


@define
class CapturedMessage:
    sender: bytes
    recipients: list[bytes]
    data: bytes
    avatarId: Any


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, delivery: "_Delivery", user: smtp.User) -> None:
        self.delivery = delivery
        self.user = user
        self.lines: list[bytes] = []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> Any:
        self.delivery.box.append(
            CapturedMessage(
                bytes(self.user.orig),
                [bytes(self.user.dest)],
                b"\r\n".join(self.lines) + b"\r\n",
                self.delivery.avatarId,
            )
        )
        return defer.succeed(None)

    def connectionLost(self) -> None:
        pass


@implementer(smtp.IMessageDelivery)
class _Delivery:
    def __init__(self, box: list[CapturedMessage], avatarId: Any) -> None:
        self.box = box
        self.avatarId = avatarId

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: from relay by capture-smarthost"

    def validateFrom(self, helo: Any, origin: Any) -> Any:
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        local = user.dest.local
        if local.startswith(b"reject"):
            raise smtp.SMTPBadRcpt(user.dest, 550, "5.1.1 No such user here")
        if local.startswith(b"later"):
            raise smtp.SMTPBadRcpt(user.dest, 451, "4.3.0 Try again later")
        return lambda: _Message(self, user)


@implementer(IRealm)
class _Realm:
    def __init__(self, box: list[CapturedMessage]) -> None:
        self.box = box

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, _Delivery(self.box, avatarId), lambda: None


@define
class CaptureSmarthost:
    """
    The running smarthost.

    @ivar port: Plain port (STARTTLS offered).
    @ivar tlsPort: Implicit-TLS port.
    @ivar box: Messages accepted, in order.
    @ivar certificatePEM: Its certificate, for the relay's C{ca}.
    """

    port: int
    tlsPort: int
    box: list[CapturedMessage]
    certificatePEM: bytes
    factory: Any
    connections: ConnectionTracker = field(repr=False)

    @classmethod
    def start(cls, testCase: Any, reactor: Any = None, tls: bool = True) -> "CaptureSmarthost":
        """
        Listen on 127.0.0.1; the test case's cleanups close connections and
        stop listening.

        @param tls: Whether STARTTLS is offered on the plain port.
        """
        if reactor is None:
            from twisted.internet import reactor
        certificate = throwawayCertificate()
        box: list[CapturedMessage] = []
        checker = InMemoryUsernamePasswordDatabaseDontUse(**{SMARTHOST_USER.decode(): SMARTHOST_PASSWORD})
        factory = ClientIDESMTPFactory(
            Portal(_Realm(box), [checker]), context=certificate.options() if tls else None
        )
        factory.domain = b"smarthost.test"
        connections = ConnectionTracker(factory)
        plain = reactor.listenTCP(0, factory, interface="127.0.0.1")
        testCase.addCleanup(plain.stopListening)
        implicit = reactor.listenTCP(
            0, TLSMemoryBIOFactory(certificate.options(), False, factory), interface="127.0.0.1"
        )
        testCase.addCleanup(implicit.stopListening)
        testCase.addCleanup(connections.whenClosed)
        return cls(
            port=plain.getHost().port,
            tlsPort=implicit.getHost().port,
            box=box,
            certificatePEM=certificate.certificatePEM,
            factory=factory,
            connections=connections,
        )
