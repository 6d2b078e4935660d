"""
The SMTP submission gateway against a real Postfix: a real C{twistd
clientid-mail} with C{[gateway] smtp_backend} (or C{--smtp-backend}),
Python's smtplib over real TLS as the client (from 127.0.0.2, so the
client and the gateway have different addresses), a private Postfix
(L{tests.postfixserver}) whose submission service checks passwords
through a private Dovecot's SASL socket (L{tests.dovecotserver}) and
delivers into its own maildirs.
"""

from __future__ import annotations

import base64
import imaplib
import io
import re
import smtplib
import socket
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import TestCase

from clientid_twisted.admin import main as adminMain
from clientid_twisted._certificate import selfSignedCertificate
from tests.dovecotserver import DovecotServer
from tests.postfixserver import PostfixServer
from tests.runningserver import RunningServer, canRunServer, readUntil
from tests.services import silentListener

ALICE = "alice@test.example"
BOB = "bob@test.example"
PASSWORD = "alice's secret"
USERS = {ALICE: PASSWORD, BOB: "bob's secret"}
CLIENT = "127.0.0.2"
REFUSED = (535, b"5.7.8 Authentication credentials invalid")
UNAVAILABLE = (454, b"4.7.0 Temporary authentication failure")
BODY = (
    b"From: alice@test.example\r\nTo: bob@test.example\r\nSubject: through the gateway\r\n"
    b"Date: Thu, 3 Dec 2026 12:00:00 +0000\r\nMessage-ID: <gateway-test@test.example>\r\n"
    b"\r\nHello Bob,\r\n.a line that starts with a dot\r\n\xc3\xa9t\xc3\xa9 (8-bit)\r\n"
)


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class GatewayTestCase(TestCase):
    """
    A Dovecot (SASL only), a Postfix submission service using it, and a
    gateway in front of Postfix, per test.
    """

    devices = "learn"
    useOption = False
    timeoutSeconds = 10
    backendTLS = True
    imapToo = False
    backendCA: str | None = None
    """A PEM file for backend_ca instead of Postfix's own certificate."""

    def setUp(self) -> None:
        reason = canRunServer()
        if reason is not None:
            self.skipTest(reason)
        self.dovecot = DovecotServer(
            USERS,
            extra="service auth {\n  unix_listener auth-postfix {\n    mode = 0666\n  }\n}\n",
        )
        self.addCleanup(self.dovecot.cleanUp)
        self.postfix = PostfixServer(
            saslSocket=str(self.dovecot.directory / "run" / "auth-postfix"),
            main={
                "smtpd_client_port_logging": "yes",
                "smtpd_error_sleep_time": "0",
                "message_size_limit": str(40 * 1024 * 1024),
                # Log the HELO name Postfix checks, at RCPT.
                "smtpd_helo_restrictions": "check_helo_access static:warn",
            },
            submissionTLS=self.backendTLS,
            deliverInto=(self.dovecot.mailDir, self.dovecot.mailUser) if self.imapToo else None,
        ).start()
        self.addCleanup(self.postfix.cleanUp)
        self.backend = f"tcp:host=127.0.0.1:port={self.postfix.submissionPort}"
        config = (
            "[server]\nauth_failure_delay_seconds = 0.1\n"
            f'[policy]\ndevices = "{self.devices}"\n'
            f"[gateway]\nbackend_timeout_seconds = {self.timeoutSeconds}\n"
        )
        if self.imapToo:
            config += f'imap_backend = "tcp:host=127.0.0.1:port={self.dovecot.port}"\n'
        if self.backendTLS:
            config += f'backend_starttls = true\nbackend_ca = "{self.backendCA or self.postfix.caFile}"\n'
        arguments: tuple[str, ...] = ()
        if self.useOption:
            arguments = ("--smtp-backend", self.backend)
        else:
            config += f'smtp_backend = "{self.backend}"\n'
        self.work = Path(self.mktemp()).resolve()
        protocols = ("smtp", "imap") if self.imapToo else ("smtp",)
        self.server = RunningServer(self.work, config, protocols=protocols, arguments=arguments)
        self.addCleanup(self.server.stop)

    def connect(
        self, identity: str | None = "tok-laptop", name: str = "laptop.example.net"
    ) -> smtplib.SMTP:
        """
        EHLO, STARTTLS, EHLO, CLIENTID: Thunderbird's start, the client
        calling itself C{name}.
        """
        client = smtplib.SMTP(
            "127.0.0.1", self.server.ports["smtp"], timeout=30, source_address=(CLIENT, 0)
        )
        self.addCleanup(_close, client)
        client.ehlo(name)
        client.starttls(context=self.server.context)
        client.ehlo(name)
        if identity is not None:
            self.assertTrue(client.has_extn("clientid"))
            self.assertEqual(client.docmd("CLIENTID", "UUID " + identity), (250, b"OK"))
        return client

    def auth(
        self, identity: str | None = "tok-laptop", user: str = ALICE, password: str = PASSWORD
    ) -> tuple[smtplib.SMTP, tuple[int, bytes]]:
        client = self.connect(identity)
        return client, client.docmd("AUTH", "PLAIN " + plain(user, password))

    def login(self, identity: str | None = "tok-laptop") -> smtplib.SMTP:
        client, reply = self.auth(identity)
        self.assertEqual(reply, (235, b"2.7.0 Authentication successful"))
        return client

    def admin(self, *arguments: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = adminMain([*arguments, "--data-dir", str(self.server.dataDir)])
        return status, out.getvalue() + err.getvalue()

    def backendConnections(self) -> int:
        """
        How many connections Postfix's submission service has had.
        """
        return len(re.findall(r"submission/smtpd\[\d+\]: connect from", self.postfix.log()))


def _close(client: smtplib.SMTP | imaplib.IMAP4) -> None:
    try:
        client.close() if isinstance(client, smtplib.SMTP) else client.shutdown()
    except Exception:
        pass


class ThunderbirdSequenceTests(GatewayTestCase):
    """
    Thunderbird's submission through the gateway into Postfix.
    """

    def test_plainRefusedThenLoginAndSend(self) -> None:
        """
        EHLO, STARTTLS, EHLO, CLIENTID, AUTH PLAIN (wrong password: the
        front's 535), AUTH LOGIN in the same session, then MAIL with
        C{BODY=8BITMIME SIZE=n}, RCPT and DATA: Postfix's own replies come
        back, and it delivers the message into Bob's maildir byte for
        byte.  Postfix saw the client's address and port (XCLIENT), not
        the gateway's.
        """
        client = self.connect()
        self.assertEqual(client.docmd("AUTH", "PLAIN " + plain(ALICE, "wrong")), REFUSED)
        self.assertEqual(
            client.docmd("AUTH", "LOGIN " + base64.b64encode(ALICE.encode()).decode()),
            (334, b"UGFzc3dvcmQ6"),
        )
        self.assertEqual(
            client.docmd(base64.b64encode(PASSWORD.encode()).decode()),
            (235, b"2.7.0 Authentication successful"),
        )
        self.assertEqual(
            client.docmd("MAIL", f"FROM:<{ALICE}> BODY=8BITMIME SIZE={len(BODY)}"),
            (250, b"2.1.0 Ok"),
        )
        self.assertEqual(client.docmd("RCPT", f"TO:<{BOB}>"), (250, b"2.1.5 Ok"))
        self.assertEqual(client.docmd("DATA"), (354, b"End data with <CR><LF>.<CR><LF>"))
        client.send(BODY.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code, text = client.getreply()
        self.assertEqual(code, 250)
        self.assertRegex(text, rb"^2\.0\.0 Ok: queued as [0-9A-F]+$")
        self.assertEqual(client.docmd("QUIT"), (221, b"2.0.0 Bye"))

        [stored] = self.postfix.waitForMessages("bob")
        self.assertTrue(stored.endswith(BODY.replace(b"\r\n", b"\n")), stored)
        log = self.postfix.waitForLog("status=sent")
        self.assertIn(f"client=unknown[{CLIENT}]:", log)
        # Postfix checked both passwords (the gateway sends AUTH PLAIN for
        # the client's AUTH LOGIN too).
        self.assertEqual(log.count("SASL PLAIN authentication failed"), 1)
        self.assertRegex(log, rf"sasl_method=PLAIN, sasl_username={re.escape(ALICE)}")

    def test_smtplibSendmail(self) -> None:
        """
        smtplib's own sendmail through the gateway, to two recipients.
        """
        client = self.login()
        refused = client.sendmail(ALICE, [BOB, ALICE], BODY)
        self.assertEqual(refused, {})
        client.quit()
        self.assertEqual(len(self.postfix.waitForMessages("bob")), 1)
        self.assertEqual(len(self.postfix.waitForMessages("alice")), 1)

    def test_clientAddressInPostfixLog(self) -> None:
        """
        The gateway sends XCLIENT: Postfix logs and checks the client's
        address and port, not the gateway's.
        """
        client = self.login()
        assert client.sock is not None
        port = client.sock.getsockname()[1]
        client.sendmail(ALICE, [BOB], BODY)
        client.quit()
        log = self.postfix.waitForLog("disconnect from unknown[" + CLIENT)
        self.assertIn(f"client=unknown[{CLIENT}]:{port}", log)

    def test_clientNameInPostfix(self) -> None:
        """
        The gateway sends the client's EHLO name too (C{XCLIENT HELO=}, in
        xtext: this one has C{+} and C{=}), and does not greet Postfix
        again with its own: Postfix's HELO checks, its log and the
        C{Received:} line name the client's.
        """
        name = "anna+laptop=1.example.net"
        client = self.connect(name=name)
        self.assertEqual(
            client.docmd("AUTH", "PLAIN " + plain(ALICE, PASSWORD)),
            (235, b"2.7.0 Authentication successful"),
        )
        self.assertEqual(client.sendmail(ALICE, [BOB], BODY), {})
        client.quit()
        [stored] = self.postfix.waitForMessages("bob")
        self.assertIn(f"Received: from {name} (unknown [{CLIENT}])".encode(), stored)
        log = self.postfix.waitForLog("disconnect from unknown[" + CLIENT)
        self.assertRegex(log, rf"warn: RCPT from unknown\[{re.escape(CLIENT)}\]:\d+: ;")
        helos = re.findall(r"helo=<([^>]*)>", log)
        self.assertEqual(helos, [name])


class OptionTests(ThunderbirdSequenceTests):
    """
    The same with C{--smtp-backend} instead of C{[gateway] smtp_backend}.
    """

    useOption = True


class LoopbackPlaintextTests(ThunderbirdSequenceTests):
    """
    The same with Postfix offering AUTH in plaintext on loopback and no
    C{backend_starttls}: the set-up docs/gateway.md walks through.
    """

    backendTLS = False


class BothGatewaysTests(GatewayTestCase):
    """
    The whole front: a message submitted through the SMTP gateway, which
    Postfix delivers into Dovecot's maildir, read back through the IMAP
    gateway.
    """

    imapToo = True
    # Both on loopback, in plaintext: backend_starttls is one setting for
    # both backends.
    backendTLS = False

    def test_submitThenRead(self) -> None:
        client = self.login()
        self.assertEqual(client.sendmail(ALICE, [BOB], BODY), {})
        client.quit()
        self.postfix.waitForMessages("bob")
        imap = imaplib.IMAP4("127.0.0.1", self.server.ports["imap"], timeout=30)
        self.addCleanup(_close, imap)
        imap.starttls(ssl_context=self.server.context)
        imap.login(BOB, USERS[BOB])
        self.assertEqual(imap.select("INBOX"), ("OK", [b"1"]))
        status, fetched = imap.fetch("1", "(BODY.PEEK[])")
        self.assertEqual(status, "OK")
        [(_, message), _] = fetched  # type: ignore[misc]
        assert isinstance(message, bytes)
        self.assertTrue(message.endswith(BODY), message)
        self.assertIn(b"Received: from ", message)
        imap.logout()


class PostfixDecidesTests(GatewayTestCase):
    """
    After AUTH, Postfix decides on the mail, and its refusals reach the
    client unchanged.
    """

    def test_refusalsPassedBack(self) -> None:
        client = self.login()
        self.assertEqual(client.docmd("MAIL", f"FROM:<{BOB}>"), (250, b"2.1.0 Ok"))
        self.assertEqual(
            client.docmd("RCPT", f"TO:<{ALICE}>"),
            (553, f"5.7.1 <{BOB}>: Sender address rejected: not owned by user {ALICE}".encode()),
        )
        self.assertEqual(client.docmd("RSET"), (250, b"2.0.0 Ok"))
        self.assertEqual(client.docmd("NOOP"), (250, b"2.0.0 Ok"))
        self.assertEqual(client.docmd("MAIL", f"FROM:<{ALICE}>"), (250, b"2.1.0 Ok"))
        self.assertEqual(
            client.docmd("RCPT", "TO:<someone@elsewhere.example>"),
            (
                550,
                b"5.1.1 <someone@elsewhere.example>: Recipient address rejected: "
                b"no mail leaves a test",
            ),
        )
        self.assertEqual(client.docmd("DATA"), (554, b"5.5.1 Error: no valid recipients"))
        client.quit()
        self.assertEqual(self.postfix.messages("alice"), [])

    def test_bareLineFeedsAreData(self) -> None:
        """
        A bare LF is not a line end for the gateway nor for Postfix
        (C{smtpd_forbid_bare_newline = normalize}): commands smuggled
        behind C{LF . LF} stay message data, and one message is delivered.
        """
        client = self.login()
        self.assertEqual(client.docmd("MAIL", f"FROM:<{ALICE}>"), (250, b"2.1.0 Ok"))
        self.assertEqual(client.docmd("RCPT", f"TO:<{BOB}>"), (250, b"2.1.5 Ok"))
        self.assertEqual(client.docmd("DATA")[0], 354)
        client.send(
            b"Subject: smuggling\r\n\r\nhello\n.\nMAIL FROM:<" + ALICE.encode()
            + b">\nRCPT TO:<" + ALICE.encode() + b">\nDATA\nsmuggled\r\n.\r\n"
        )
        code, text = client.getreply()
        self.assertEqual(code, 250, text)
        self.assertEqual(client.docmd("NOOP"), (250, b"2.0.0 Ok"))
        client.quit()
        [stored] = self.postfix.waitForMessages("bob")
        self.assertIn(b"smuggled", stored)
        self.assertEqual(self.postfix.messages("alice"), [])
        # Logged after the delivery (through postlogd): wait for it.
        self.assertEqual(self.postfix.waitForLog("status=sent").count("status=sent"), 1)

    def test_frontCommandsAfterLogin(self) -> None:
        """
        After AUTH, EHLO is the gateway's (CLIENTID still listed) and
        resets the transaction at Postfix too; AUTH again is refused by
        the gateway.
        """
        client = self.login()
        self.assertEqual(client.docmd("MAIL", f"FROM:<{ALICE}>"), (250, b"2.1.0 Ok"))
        client.ehlo("laptop.example.net")
        self.assertTrue(client.has_extn("clientid"))
        # Without the RSET, Postfix would answer "nested MAIL command".
        self.assertEqual(client.docmd("MAIL", f"FROM:<{ALICE}>"), (250, b"2.1.0 Ok"))
        self.assertEqual(client.docmd("AUTH", "PLAIN " + plain(ALICE, PASSWORD))[0], 503)
        self.assertEqual(client.docmd("RCPT", f"TO:<{BOB}>"), (250, b"2.1.5 Ok"))
        client.quit()

    def test_chunking(self) -> None:
        """
        BDAT chunks go through as bytes (CR, LF and a dot line inside),
        and the message is delivered as sent.
        """
        client = self.login()
        self.assertEqual(client.docmd("MAIL", f"FROM:<{ALICE}>"), (250, b"2.1.0 Ok"))
        self.assertEqual(client.docmd("RCPT", f"TO:<{BOB}>"), (250, b"2.1.5 Ok"))
        first, second = BODY[:50], BODY[50:] + b".\r\n"
        client.send(b"BDAT %d\r\n" % len(first) + first)
        self.assertEqual(client.getreply(), (250, b"2.0.0 Ok: %d bytes" % len(first)))
        client.send(b"BDAT %d LAST\r\n" % len(second) + second)
        code, text = client.getreply()
        self.assertEqual(code, 250, text)
        client.quit()
        [stored] = self.postfix.waitForMessages("bob")
        self.assertTrue(stored.endswith((BODY + b".\r\n").replace(b"\r\n", b"\n")), stored)

    def test_largeMessageStreamed(self) -> None:
        """
        A 30 MiB message with long lines goes through byte for byte, and
        the gateway's memory grows by far less than the message: it is
        streamed, not held.
        """
        line = b"x" * 998 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (30 * 1024 * 1024 // len(line))
        client = self.login()
        before = self.server.peakRSS()
        self.assertEqual(client.sendmail(ALICE, [BOB], body), {})
        grown = self.server.peakRSS() - before
        client.quit()
        self.assertLess(grown, 8 * 1024 * 1024)
        [stored] = self.postfix.waitForMessages("bob", timeout=60)
        self.assertEqual(
            stored.split(b"\n\n", 1)[1], body.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        )


class AllowlistTests(GatewayTestCase):
    """
    A refused device gets the wrong password's reply, as slowly, and its
    password never reaches Postfix.
    """

    devices = "allowlist"

    def test_refusalIdenticalToWrongPassword(self) -> None:
        status, output = self.admin("devices", "approve", ALICE, "UUID", "tok-laptop")
        self.assertEqual(status, 0, output)

        started = time.monotonic()
        wrong = self.auth("tok-laptop", password="wrong password")[1]
        wrongSeconds = time.monotonic() - started
        # Postfix logs through postlogd, a little behind its replies: once
        # the failure is in the log, so is the connection it came on.
        self.postfix.waitForLog("authentication failed")
        connections = self.backendConnections()
        started = time.monotonic()
        refused = self.auth("tok-stranger")[1]
        refusedSeconds = time.monotonic() - started

        self.assertEqual(wrong, REFUSED)
        self.assertEqual(refused, REFUSED)
        self.assertLess(abs(refusedSeconds - wrongSeconds), 0.5)
        # The stranger's login never opened a connection to Postfix.
        self.assertEqual(self.backendConnections(), connections)
        self.assertEqual(self.postfix.log().count("authentication failed"), 1)

        client = self.login("tok-laptop")
        self.assertEqual(client.sendmail(ALICE, [BOB], BODY), {})


class RevocationTests(GatewayTestCase):
    """
    A learned device, revoked, is refused without a backend login.
    """

    def test_revoked(self) -> None:
        self.login("tok-old-phone").quit()
        status, output = self.admin("devices", "revoke", ALICE, "UUID", "tok-old-phone")
        self.assertEqual(status, 0, output)
        connections = self.backendConnections()
        self.assertEqual(self.auth("tok-old-phone")[1], REFUSED)
        self.assertEqual(self.backendConnections(), connections)
        self.login("tok-laptop").quit()


class PipeliningTests(GatewayTestCase):
    def test_pipelinedPlaintextAfterSTARTTLS(self) -> None:
        """
        Commands sent in plaintext behind STARTTLS are dropped by the
        front: they never reach Postfix, even once the client has logged
        in.
        """
        s = socket.create_connection(
            ("127.0.0.1", self.server.ports["smtp"]), timeout=30, source_address=(CLIENT, 0)
        )
        self.addCleanup(s.close)
        readUntil(s, b"\r\n")
        s.sendall(b"EHLO laptop.example.net\r\n")
        readUntil(s, b"\r\n250 ")
        s.sendall(
            b"STARTTLS\r\nAUTH PLAIN " + plain(ALICE, PASSWORD).encode()
            + b"\r\nMAIL FROM:<injected@test.example>\r\n"
        )
        self.assertTrue(readUntil(s, b"\r\n").startswith(b"220 "))
        t = self.server.context.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"EHLO laptop.example.net\r\n")
        readUntil(t, b"\r\n250 ")
        t.sendall(b"AUTH PLAIN " + plain(ALICE, PASSWORD).encode() + b"\r\n")
        self.assertEqual(readUntil(t, b"\r\n"), b"235 2.7.0 Authentication successful\r\n")
        # Pipelined after AUTH (on TLS): relayed in order.
        t.sendall(b"MAIL FROM:<" + ALICE.encode() + b">\r\nRSET\r\nQUIT\r\n")
        replies = readUntil(t, b"221 .*\r\n")
        self.assertEqual(replies, b"250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n")
        t.close()
        log = self.postfix.waitForLog("disconnect from unknown[" + CLIENT)
        self.assertNotIn("injected", log)
        self.assertRegex(log, r"auth=1 mail=1 rset=1 quit=1 commands=")


class OutageTests(GatewayTestCase):
    """
    Postfix down: a temporary failure, logged once per outage; service
    resumes when it is back, without a restart.
    """

    timeoutSeconds = 3

    def test_downThenUp(self) -> None:
        self.postfix.stop()
        for _ in range(3):
            self.assertEqual(self.auth()[1], UNAVAILABLE)
        unavailable = "SMTP backend " + self.backend + " unavailable"
        self.assertEqual(self.server.log().count(unavailable), 1)

        self.postfix.start()
        client = self.login()
        self.assertEqual(client.sendmail(ALICE, [BOB], BODY), {})
        self.assertEqual(self.server.log().count("is reachable again"), 1)

        self.postfix.stop()
        # The logged-in session ends with a 421 when Postfix goes away.
        code, text = client.getreply()
        self.assertEqual(code, 421, text)
        self.assertEqual(self.auth()[1], UNAVAILABLE)
        self.assertEqual(self.server.log().count(unavailable), 2)


    def test_notAnswering(self) -> None:
        """
        A backend that accepts connections but says nothing: a temporary
        failure after backend_timeout_seconds.
        """
        self.postfix.stop()
        assert self.postfix.submissionPort is not None
        self.addCleanup(silentListener(self.postfix.submissionPort).close)
        started = time.monotonic()
        self.assertEqual(self.auth()[1], UNAVAILABLE)
        self.assertGreaterEqual(time.monotonic() - started, 2.9)
        self.assertIn("no answer within 3 s", self.server.log())


class UntrustedBackendTests(GatewayTestCase):
    """
    A backend whose certificate does not chain to backend_ca gets no
    password: the login is a temporary failure.
    """

    def setUp(self) -> None:
        other = Path(self.mktemp())
        other.write_bytes(selfSignedCertificate("localhost", days=2)[0])
        self.backendCA = str(other.resolve())
        super().setUp()

    def test_certificateRefused(self) -> None:
        self.assertEqual(self.auth()[1], UNAVAILABLE)
        log = self.postfix.log()
        self.assertIn("certificate verify failed", self.server.log())
        self.assertNotIn("sasl_username", log)
        self.assertNotIn("authentication failed", log)
        self.assertIn("SMTP backend " + self.backend + " unavailable", self.server.log())
