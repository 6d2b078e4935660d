"""
Unit tests of the gateway's IMAP backend conversation
(L{clientid_twisted.gateway.imapbackend}) and the gateway's checker and
notices (L{clientid_twisted.gateway.imap}), with StringTransport and Clock.
"""

from __future__ import annotations

import base64
from typing import Any

from zope.interface.verify import verifyObject

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.mail import imap4
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.cred import identifyCredentials
from clientid_twisted.gateway.backend import Backend, BackendUnavailable
from clientid_twisted.gateway.config import GatewayConfig, parseBackendAddress
from clientid_twisted.gateway.imap import GatewayRealm, IMAPBackendChecker, PendingNotices
from clientid_twisted.gateway.imapbackend import (
    BackendIMAPSession,
    imapQuoted,
    loginToBackend,
)
from clientid_twisted.interfaces import IPasswordForwardingChecker
from clientid_twisted.policy._alerts import Alert

PEER = IPv4Address("TCP", "198.51.100.7", 51234)
HOST = IPv4Address("TCP", "192.0.2.1", 993)


class FakeBackend(Backend):
    """
    A backend reached over a StringTransport, on a Clock.
    """

    def __init__(self, starttls: bool = False) -> None:
        self.clock = Clock()
        Backend.__init__(
            self,
            parseBackendAddress("tcp:host=127.0.0.1:port=143"),
            GatewayConfig(starttls=starttls, verify=False, timeoutSeconds=5),
            self.clock,
        )
        self.transports: list[StringTransport] = []
        self.startedTLS = 0

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        self.transports.append(transport)
        protocol.makeConnection(transport)
        self.protocol = protocol
        return defer.succeed(protocol)

    def startTLS(self, transport: Any) -> None:
        self.startedTLS += 1

    def receive(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def sent(self) -> bytes:
        data = self.transports[-1].value()
        self.transports[-1].clear()
        return data


GREETING = b"* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN] ready\r\n"


class BackendLoginTests(SynchronousTestCase):
    """
    L{loginToBackend}: the conversation, line by line.
    """

    def setUp(self) -> None:
        self.backend = FakeBackend()

    def login(self, password: bytes = b"pa ss") -> defer.Deferred[BackendIMAPSession]:
        return loginToBackend(self.backend, b"alice", password, PEER, HOST)

    def test_idThenSaslIR(self) -> None:
        """
        The client's address goes first (ID), then AUTHENTICATE PLAIN with
        an initial response; the OK's capabilities are the session's.
        """
        d = self.login()
        self.backend.receive(GREETING)
        self.assertEqual(
            self.backend.sent(),
            b'G1 ID ("x-originating-ip" "198.51.100.7" "x-originating-port" "51234" '
            b'"x-connected-ip" "192.0.2.1" "x-connected-port" "993")\r\n',
        )
        self.backend.receive(b'* ID ("name" "Dovecot")\r\nG1 OK ID completed\r\n')
        plain = base64.b64encode(b"\0alice\0pa ss")
        self.assertEqual(self.backend.sent(), b"G2 AUTHENTICATE PLAIN " + plain + b"\r\n")
        self.backend.receive(b"G2 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n")
        session = self.successResultOf(d)
        self.assertEqual(session.capabilities, [b"IMAP4rev1", b"IDLE", b"MOVE"])
        self.assertEqual(session.username, "alice")

    def test_continuationAndCapabilityFetched(self) -> None:
        """
        Without SASL-IR the response follows a continuation; without ID
        no ID; capabilities not sent with the OK are asked for.
        """
        d = self.login()
        self.backend.receive(b"* OK ready\r\n")
        self.assertEqual(self.backend.sent(), b"G1 CAPABILITY\r\n")
        self.backend.receive(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\nG1 OK done\r\n")
        self.assertEqual(self.backend.sent(), b"G2 AUTHENTICATE PLAIN\r\n")
        self.backend.receive(b"+ \r\n")
        self.assertEqual(self.backend.sent(), base64.b64encode(b"\0alice\0pa ss") + b"\r\n")
        self.backend.receive(b"G2 OK Logged in\r\n")
        self.assertEqual(self.backend.sent(), b"G3 CAPABILITY\r\n")
        self.backend.receive(b"* CAPABILITY IMAP4rev1 QUOTA\r\nG3 OK done\r\n")
        self.assertEqual(self.successResultOf(d).capabilities, [b"IMAP4rev1", b"QUOTA"])

    def test_loginWithLiterals(self) -> None:
        """
        A backend without AUTH=PLAIN gets LOGIN, with the credentials as
        literals (any byte, no quoting).
        """
        d = self.login(b'p"w\\')
        self.backend.receive(b"* OK [CAPABILITY IMAP4rev1] ready\r\n")
        self.assertEqual(self.backend.sent(), b"G1 LOGIN {5}\r\n")
        self.backend.receive(b"+ go\r\n")
        self.assertEqual(self.backend.sent(), b"alice {4}\r\n")
        self.backend.receive(b"+ go\r\n")
        self.assertEqual(self.backend.sent(), b'p"w\\\r\n')
        self.backend.receive(b"G1 OK [CAPABILITY IMAP4rev1] Logged in\r\n")
        self.successResultOf(d)

    def test_refused(self) -> None:
        d = self.login()
        self.backend.receive(GREETING + b"G1 OK ID\r\n")
        self.backend.sent()
        self.backend.receive(b"G2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(self.backend.sent(), b"G0 LOGOUT\r\n")
        self.assertTrue(self.backend.transports[-1].disconnecting)
        self.assertFalse(self.backend.failing)

    def test_temporaryNo(self) -> None:
        """
        The backend's own trouble (RFC 5530 codes) is a temporary failure,
        not a refusal.
        """
        d = self.login()
        self.backend.receive(GREETING + b"G1 OK ID\r\n")
        self.backend.receive(b"G2 NO [UNAVAILABLE] Temporary failure\r\n")
        self.failureResultOf(d, BackendUnavailable)
        self.assertTrue(self.backend.failing)

    def test_floodBeforeRelay(self) -> None:
        """
        A backend reply line longer than the gateway reads during the
        login is cut off: a temporary failure, not unbounded memory.
        """
        d = self.login()
        self.backend.receive(GREETING)
        self.backend.receive(b"* " + b"x" * 60000 + b"\r\n")
        for _ in range(20):
            self.backend.receive(b"y" * 60000)
        self.failureResultOf(d, BackendUnavailable)
        self.assertTrue(self.backend.transports[-1].disconnected or self.backend.transports[-1].disconnecting)

    def test_greetingBye(self) -> None:
        d = self.login()
        self.backend.receive(b"* BYE Too many connections\r\n")
        self.failureResultOf(d, BackendUnavailable)

    def test_timeout(self) -> None:
        d = self.login()
        self.backend.clock.advance(5)
        failure = self.failureResultOf(d, BackendUnavailable)
        self.assertIn("no answer within 5 s", str(failure.value))
        self.assertTrue(self.backend.transports[-1].disconnecting or self.backend.transports[-1].disconnected)

    def test_starttls(self) -> None:
        self.backend = FakeBackend(starttls=True)
        d = self.login()
        self.backend.receive(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n")
        self.assertEqual(self.backend.sent(), b"G1 STARTTLS\r\n")
        self.backend.receive(b"G1 OK Begin TLS\r\n")
        self.assertEqual(self.backend.startedTLS, 1)
        self.assertEqual(self.backend.sent(), b"G2 CAPABILITY\r\n")
        self.backend.receive(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\nG2 OK\r\n")
        self.assertTrue(self.backend.sent().startswith(b"G3 AUTHENTICATE PLAIN "))
        self.backend.receive(b"G3 OK [CAPABILITY IMAP4rev1] in\r\n")
        self.successResultOf(d)

    def test_starttlsNotOffered(self) -> None:
        """
        With backend_starttls, a backend that offers no STARTTLS never
        sees the credentials.
        """
        self.backend = FakeBackend(starttls=True)
        d = self.login()
        self.backend.receive(GREETING)
        failure = self.failureResultOf(d, BackendUnavailable)
        self.assertIn("offers no STARTTLS", str(failure.value))
        self.assertEqual(self.backend.sent(), b"")

    def test_relay(self) -> None:
        """
        After the login, bytes go to the sink unchanged, including what
        arrived with the login's reply; the backend's close is reported.
        """
        d = self.login()
        self.backend.receive(GREETING + b"G1 OK ID\r\n")
        self.backend.receive(b"G2 OK [CAPABILITY IMAP4rev1] in\r\n* 3 EXISTS\r\n")
        session = self.successResultOf(d)
        received: list[bytes] = []
        closed: list[Any] = []
        session.protocol.startRelay(received.append, closed.append)
        self.backend.receive(b"* 4 EXISTS\r\n{3}\r\nab")
        self.assertEqual(b"".join(received), b"* 3 EXISTS\r\n* 4 EXISTS\r\n{3}\r\nab")
        session.protocol.connectionLost()
        self.assertEqual(len(closed), 1)

    def test_append(self) -> None:
        d = self.login()
        self.backend.receive(GREETING + b"G1 OK ID\r\nG2 OK [CAPABILITY IMAP4rev1] in\r\n")
        session = self.successResultOf(d)
        self.backend.sent()
        appended = session.append(b"Subject: x\r\n\r\nbody\r\n")
        self.assertEqual(self.backend.sent(), b"G3 APPEND INBOX {20}\r\n")
        self.backend.receive(b"+ Ready\r\n")
        self.assertEqual(self.backend.sent(), b"Subject: x\r\n\r\nbody\r\n\r\n")
        self.backend.receive(b"G3 OK [APPENDUID 1 1] done\r\n")
        self.assertEqual(self.successResultOf(appended).status, b"OK")

    def test_quoted(self) -> None:
        self.assertEqual(imapQuoted(b'a"b\\c'), b'"a\\"b\\\\c"')
        self.assertRaises(ValueError, imapQuoted, b"a\r\nb")


class CheckerTests(SynchronousTestCase):
    """
    L{IMAPBackendChecker}: a refusal without the backend takes as long as
    the backend's refusals.
    """

    def setUp(self) -> None:
        self.backend = FakeBackend()
        self.checker = IMAPBackendChecker(self.backend, self.backend.clock, initialRefusalSeconds=2.0)

    def credentials(self, password: bytes) -> Any:
        return identifyCredentials(UsernamePassword(b"alice", password), None, PEER, "imap", True, HOST)

    def test_interface(self) -> None:
        self.assertTrue(verifyObject(IPasswordForwardingChecker, self.checker))

    def test_refusalTakesAsLongAsTheBackends(self) -> None:
        d = self.checker.refuseUnchecked(self.credentials(b"x"))
        self.backend.clock.advance(1.99)
        self.assertNoResult(d)
        self.backend.clock.advance(0.01)
        self.failureResultOf(d, UnauthorizedLogin)

        # The backend refuses in 0.5 s: so do refusals from now on.
        d = self.checker.requestAvatarId(self.credentials(b"wrong"))
        self.backend.receive(GREETING + b"G1 OK ID\r\n")
        self.backend.clock.advance(0.5)
        self.backend.receive(b"G2 NO [AUTHENTICATIONFAILED] no\r\n")
        self.failureResultOf(d, UnauthorizedLogin)
        self.assertEqual(self.checker.refusalSeconds, 0.5)
        # The password went to the backend, and the address with it.
        self.assertNotEqual(self.backend.transports, [])

        d = self.checker.refuseUnchecked(self.credentials(b"x"))
        self.backend.clock.advance(0.49)
        self.assertNoResult(d)
        self.backend.clock.advance(0.01)
        self.failureResultOf(d, UnauthorizedLogin)

    def test_realm(self) -> None:
        d = self.checker.requestAvatarId(self.credentials(b"right"))
        self.backend.receive(GREETING + b"G1 OK ID\r\nG2 OK [CAPABILITY IMAP4rev1] in\r\n")
        session = self.successResultOf(d)
        iface, avatar, logout = GatewayRealm().requestAvatar(session, None, imap4.IAccount)
        self.assertIs(iface, imap4.IAccount)
        self.assertIs(avatar, session)
        logout()
        self.assertTrue(self.backend.transports[-1].disconnecting)


class PendingNoticesTests(SynchronousTestCase):
    """
    Notices wait for the account's next login, bounded.
    """

    def alert(self, account: str | None, kind: str = "device-new") -> Alert:
        return Alert(kind=kind, account=account, time=0.0, typeName="UUID", fingerprint="ab12")

    def test_takenOnce(self) -> None:
        notices = PendingNotices("mail.example.org")
        notices.alertRaised(self.alert("alice@example.org"))
        [message] = notices.take("Alice@Example.org")
        self.assertIn(b"To: <alice@example.org>\r\n", message)
        self.assertTrue(message.endswith(b"\r\n"))
        self.assertEqual(notices.take("alice@example.org"), [])

    def test_operatorAlertsIgnored(self) -> None:
        notices = PendingNotices("mail.example.org")
        notices.alertRaised(self.alert(None, "token-locked"))
        self.assertEqual(notices._pending, {})

    def test_failureNoticesOnlyIfAsked(self) -> None:
        """
        As in the standalone server, alerts of failed logins without the
        right password become notices only with [alerts] notice_failures.
        """
        notices = PendingNotices("h")
        notices.alertRaised(self.alert("a@x", "device-locked"))
        notices.alertRaised(self.alert("a@x", "account-closed"))
        self.assertEqual(notices.take("a@x"), [])
        notices = PendingNotices("h", failureNotices=True)
        notices.alertRaised(self.alert("a@x", "device-locked"))
        self.assertEqual(len(notices.take("a@x")), 1)

    def test_bounded(self) -> None:
        notices = PendingNotices("h", accounts=2, perAccount=2)
        for _ in range(3):
            notices.alertRaised(self.alert("a@x"))
        notices.alertRaised(self.alert("b@x"))
        notices.alertRaised(self.alert("c@x"))
        self.assertEqual(notices.take("a@x"), [])
        self.assertEqual(len(notices.take("c@x")), 1)

    def test_putBack(self) -> None:
        notices = PendingNotices("h")
        notices.putBack("a@x", [b"one"])
        self.assertEqual(notices.take("a@x"), [b"one"])
