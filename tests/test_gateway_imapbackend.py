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
    Notices wait in the store for the account's next login, bounded.
    """

    def setUp(self) -> None:
        from clientid_twisted.store import MemoryStore

        self.clock = Clock()
        self.store = MemoryStore(self.clock)

    def notices(self, **kwargs: Any) -> PendingNotices:
        return PendingNotices(kwargs.pop("hostname", "mail.example.org"), self.store, **kwargs)

    def alert(self, account: str | None, kind: str = "device-new") -> Alert:
        return Alert(kind=kind, account=account, time=0.0, typeName="UUID", fingerprint="ab12")

    def take(self, notices: PendingNotices, account: str) -> list[bytes]:
        taken: list[bytes] = self.successResultOf(notices.take(account))
        return taken

    def test_takenOnce(self) -> None:
        notices = self.notices()
        notices.alertRaised(self.alert("alice@example.org"))
        [message] = self.take(notices, "Alice@Example.org")
        self.assertIn(b"To: <alice@example.org>\r\n", message)
        self.assertTrue(message.endswith(b"\r\n"))
        self.assertEqual(self.take(notices, "alice@example.org"), [])

    def test_messageIDOnTheHostname(self) -> None:
        """
        A notice's and a sign-in link's Message-ID end in the configured
        host name, as the standalone server's notices do: C{make_msgid}
        without a domain would ask the resolver for this machine's name
        (C{socket.getfqdn}), blocking the reactor, for every message.
        """
        notices = self.notices(hostname="mail.example.test")
        notices.alertRaised(self.alert("alice@example.org"))
        self.assertTrue(notices.addMessage("alice@example.org", "Sign in", ["a link"], 0.0))
        messages = self.take(notices, "alice@example.org")
        self.assertEqual(len(messages), 2)
        for message in messages:
            [line] = [line for line in message.split(b"\r\n") if line.startswith(b"Message-ID:")]
            self.assertTrue(line.endswith(b"@mail.example.test>"), line)

    def test_keptInTheStore(self) -> None:
        """
        The notices wait in the store, not in the object: another
        L{PendingNotices} on the same store (another frontend, or this one
        after a restart) takes them, once.
        """
        self.notices().alertRaised(self.alert("alice@example.org"))
        other = self.notices()
        self.assertEqual(len(self.take(other, "alice@example.org")), 1)
        self.assertEqual(self.take(self.notices(), "alice@example.org"), [])

    def test_operatorAlertsIgnored(self) -> None:
        notices = self.notices()
        notices.alertRaised(self.alert(None, "token-locked"))
        notices.alertRaised(Alert(kind="device-new", account=None, time=0.0))
        self.assertEqual(self.store._messages, {})

    def test_failureNoticesOnlyIfAsked(self) -> None:
        """
        As in the standalone server, alerts of failed logins without the
        right password become notices only with [alerts] notice_failures.
        """
        notices = self.notices(hostname="h")
        notices.alertRaised(self.alert("a@x", "device-locked"))
        notices.alertRaised(self.alert("a@x", "account-closed"))
        self.assertEqual(self.take(notices, "a@x"), [])
        notices = self.notices(hostname="h", failureNotices=True)
        notices.alertRaised(self.alert("a@x", "device-locked"))
        self.assertEqual(len(self.take(notices, "a@x")), 1)

    def test_bounded(self) -> None:
        """
        At most C{perAccount} per account, the oldest dropped; each kept
        at most C{keepSeconds}.
        """
        notices = self.notices(perAccount=2, keepSeconds=60)
        for n in range(3):
            notices.addMessage("a@x", f"number {n}", ["body"], 0.0)
        notices.alertRaised(self.alert("b@x"))
        taken = self.take(notices, "a@x")
        self.assertEqual(
            [m.split(b"Subject: ")[1].split(b"\r\n")[0] for m in taken], [b"number 1", b"number 2"]
        )
        self.clock.advance(61)
        self.assertEqual(self.take(notices, "b@x"), [])

    def test_putBack(self) -> None:
        notices = self.notices()
        notices.putBack("A@x", [b"one", b"two"])
        self.assertEqual(self.take(notices, "a@x"), [b"one", b"two"])

    def test_storeFailureLogged(self) -> None:
        """
        A store that cannot keep the notice: a warning naming the account,
        escaped; nothing raised into the policy that raised the alert.
        """
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.successResultOf(self.store.close())
        self.notices().alertRaised(self.alert("a\x1b@x"))
        [warning] = [e for e in events if "count" in e and "account" in e]
        self.assertEqual(warning["account"], "a\\x1b@x")
        self.assertIn("closed", warning["why"])
