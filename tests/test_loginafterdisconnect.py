"""
Tests for a login the portal decides after the client left, in both
protocols: the accepted CLIENTID is reported exactly once (by the login's
event, not by a "no login followed" line), the login itself is logged
the usual way, the metrics count each once, and nothing is written to
the closed transport.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.portal import Portal
from twisted.internet.error import ConnectionDone
from twisted.logger import formatEvent, globalLogPublisher
from twisted.mail import smtp
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.imap import ClientIDIMAP4Factory
from clientid_twisted.server.metrics import ServerMetrics
from clientid_twisted.smtp import ClientIDESMTPFactory
from clientid_twisted.testing import LineExchange, connectedTransport
from tests.loginfakes import RecordingChecker, RefusingDelivery, plain
from tests.test_imap_server import MemoryRealm
from tests.test_metrics import _value

TOKEN = "23bf83be-aad7-46aa-9e0f-39191ccf402f"
USER = b"al\x7fice"
"""A user name with a control character: its log line must show it escaped."""


class _SMTPRealm:
    """
    Gives a L{RefusingDelivery} and counts the logouts.
    """

    def __init__(self) -> None:
        self.logouts = 0

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, RefusingDelivery(), self.logout

    def logout(self) -> None:
        self.logouts += 1


class _LoginAfterDisconnect:
    """
    The scenario, for either protocol: CLIENTID accepted, a login sent,
    the connection lost, then the portal's decision.
    """

    protocolName: str
    command: str

    def setUp(self) -> None:
        self.checker = RecordingChecker()
        self.checker.inner.addUser(USER, b"secret")
        self.checker.mode = "later"
        self.hasher = IdentityHasher(b"k" * 32)
        self.events: list[dict[str, Any]] = []
        self.metrics = ServerMetrics()
        for observer in (self.events.append, self.metrics.observe):
            globalLogPublisher.addObserver(observer)
            self.addCleanup(globalLogPublisher.removeObserver, observer)

    def connect(self, factory: Any) -> None:
        factory.identityHasher = self.hasher
        self.protocol = factory.buildProtocol(None)
        self.transport = connectedTransport(self.protocol, secure=True)
        self.client = LineExchange(self.protocol, self.transport)

    def clientIDAndLogin(self, password: bytes) -> None:
        raise NotImplementedError

    def loginThenDisconnect(self, password: bytes) -> None:
        """
        CLIENTID, a login the checker holds, and the connection gone
        before the decision; then the decision.
        """
        self.clientIDAndLogin(password)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.checker.pending and len(self.checker.pending), 1)
        self.transport.loseConnection()
        self.protocol.connectionLost(Failure(ConnectionDone()))
        self.checker.pending.pop().callback(None)

    def assertOneLoginReportingAcceptance(self, authEvent: str) -> None:
        """
        Exactly one event reports the acceptance, and it is the login's
        usual line (escaped user name, the device's fingerprint); the
        metrics count one accepted CLIENTID and one login; nothing went to
        the closed transport.
        """
        accepted = [e for e in self.events if e.get("clientIDEvent") == "accepted"]
        self.assertEqual(len(accepted), 1, [formatEvent(e) for e in accepted])
        [login] = [e for e in self.events if "authEvent" in e]
        self.assertIs(login, accepted[0])
        self.assertEqual(login["authEvent"], authEvent)
        fingerprint = self.hasher.fingerprint(ClientIdentity("UUID", TOKEN))
        self.assertEqual(
            formatEvent(login),
            f"{self.command} {authEvent} for al\\x7fice from 192.0.2.7 "
            f"(CLIENTID type=UUID fingerprint={fingerprint})",
        )
        self.assertNotIn("no login followed", "".join(formatEvent(e) for e in self.events))
        self.assertEqual(
            _value(
                self.metrics, "clientid_commands_total",
                protocol=self.protocolName, outcome="accepted", reason="",
            ),
            1,
        )
        self.assertEqual(
            _value(self.metrics, "clientid_logins_total", protocol=self.protocolName, result=authEvent),
            1,
        )
        self.assertEqual(self.transport.value(), b"")

    def test_successAfterDisconnect(self) -> None:
        self.loginThenDisconnect(b"secret")
        self.assertOneLoginReportingAcceptance("succeeded")
        self.assertEqual(self.realm.logouts, 1)

    def test_refusalAfterDisconnect(self) -> None:
        self.loginThenDisconnect(b"wrong")
        self.assertOneLoginReportingAcceptance("failed")
        self.assertEqual(self.realm.logouts, 0)

    def test_disconnectWithoutLogin(self) -> None:
        """
        Without a login the acceptance is still logged once, as "no login
        followed", when the connection ends.
        """
        self.clientIDAndLogin(None)
        self.protocol.connectionLost(Failure(ConnectionDone()))
        [accepted] = [e for e in self.events if e.get("clientIDEvent") == "accepted"]
        self.assertNotIn("authEvent", accepted)
        self.assertIn("no login followed", formatEvent(accepted))


class IMAPLoginAfterDisconnectTests(_LoginAfterDisconnect, SynchronousTestCase):
    protocolName = "imap"
    command = "LOGIN"

    def setUp(self) -> None:
        super().setUp()
        self.realm = MemoryRealm()
        self.connect(ClientIDIMAP4Factory(Portal(self.realm, [self.checker]), context=object()))

    def clientIDAndLogin(self, password: bytes | None) -> None:
        self.assertIn(b"CLIENTID", self.client.exchange(b"c CAPABILITY"))
        self.assertEqual(self.client.exchange(b"i CLIENTID UUID " + TOKEN.encode())[:4], b"i OK")
        if password is not None:
            self.client.send(b'l LOGIN "' + USER + b'" ' + password + b"\r\n")


class SMTPLoginAfterDisconnectTests(_LoginAfterDisconnect, SynchronousTestCase):
    protocolName = "smtp"
    command = "AUTH"

    def setUp(self) -> None:
        super().setUp()
        self.realm = _SMTPRealm()
        factory = ClientIDESMTPFactory(Portal(self.realm, [self.checker]), context=object())
        factory.domain = b"mx.example.test"
        self.connect(factory)

    def clientIDAndLogin(self, password: bytes | None) -> None:
        self.assertTrue(self.client.exchange(b"EHLO client.example.net").startswith(b"250-"))
        self.assertEqual(self.client.exchange(b"CLIENTID UUID " + TOKEN.encode())[:4], b"250 ")
        if password is not None:
            self.client.send(b"AUTH PLAIN " + plain(USER, password) + b"\r\n")
