"""
The IMAP gateway against a real Dovecot: a real C{twistd clientid-mail}
with C{[gateway] imap_backend} (or C{--imap-backend}), Python's imaplib
over real TLS as the client, a private Dovecot on loopback as the backend
(L{tests.dovecotserver}).
"""

from __future__ import annotations

import base64
import imaplib
import io
import re
import socket
import time
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from twisted.trial.unittest import TestCase

from clientid_twisted.admin import main as adminMain
from tests.dovecotserver import DovecotServer, requireDovecot
from tests.runningserver import RunningServer, readUntil
from tests.services import silentListener

ALICE = "alice@example.org"
BOB = "bob@example.org"
PASSWORD = "alice's secret"
USERS = {ALICE: PASSWORD, BOB: "bob's secret"}
FAILED = b"[AUTHENTICATIONFAILED] Authentication failed"
UNAVAILABLE = b"[UNAVAILABLE] Temporary authentication failure"


class GatewayTestCase(TestCase):
    """
    A Dovecot and a gateway in front of it, per test.
    """

    devices = "learn"
    useOption = False
    timeoutSeconds = 10
    dovecotSSL = False
    dovecotExtra = ""
    extraConfig = ""
    """More tables for C{clientid.toml}, after the others."""

    def backendSettings(self) -> str:
        """
        The C{[gateway]} lines naming the backend.
        """
        return f'imap_backend = "{self.backend}"\n'

    def setUp(self) -> None:
        requireDovecot()
        previous = imaplib.Commands.get("CLIENTID")
        imaplib.Commands["CLIENTID"] = ("NONAUTH",)
        self.addCleanup(
            lambda: imaplib.Commands.pop("CLIENTID") if previous is None else None
        )
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)
        self.dovecot = DovecotServer(USERS, ssl=self.dovecotSSL, extra=self.dovecotExtra)
        self.addCleanup(self.dovecot.cleanUp)
        self.backend = f"tcp:host=127.0.0.1:port={self.dovecot.port}"
        config = (
            "[server]\nauth_failure_delay_seconds = 0.1\n"
            f'[policy]\ndevices = "{self.devices}"\n'
        )
        arguments: tuple[str, ...] = ()
        if self.useOption:
            arguments = ("--imap-backend", self.backend)
        else:
            config += f"[gateway]\n{self.backendSettings()}backend_timeout_seconds = {self.timeoutSeconds}\n"
        config += self.extraConfig
        self.server = RunningServer(self.work, config, protocols=("imap", "imaps"), arguments=arguments)
        self.addCleanup(self.server.stop)

    def connect(self, identity: str | None = "tok-laptop") -> imaplib.IMAP4:
        """
        STARTTLS, CAPABILITY and CLIENTID, as Thunderbird does.
        """
        client = imaplib.IMAP4("127.0.0.1", self.server.ports["imap"], timeout=30)
        self.addCleanup(_close, client)
        client.starttls(ssl_context=self.server.context)
        if identity is not None:
            self.assertIn("CLIENTID", client.capabilities)
            status, _ = client._simple_command("CLIENTID", "UUID", identity)
            self.assertEqual(status, "OK")
        return client

    def login(self, identity: str | None = "tok-laptop", user: str = ALICE, password: str = PASSWORD) -> imaplib.IMAP4:
        client = self.connect(identity)
        client.login(user, password)
        return client

    def refusal(self, client: imaplib.IMAP4, user: str = ALICE, password: str = PASSWORD) -> bytes:
        with self.assertRaises(imaplib.IMAP4.error) as caught:
            client.login(user, password)
        return caught.exception.args[0]  # type: ignore[no-any-return]

    def admin(self, *arguments: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            status = adminMain([*arguments, "--data-dir", str(self.server.dataDir)])
        return status, out.getvalue() + err.getvalue()


def _close(client: imaplib.IMAP4) -> None:
    try:
        client.shutdown()
    except Exception:
        pass


MESSAGE = b"From: carol@example.net\r\nTo: alice@example.org\r\nSubject: delivered by the MTA\r\n\r\nHello Alice\r\n"


class ThunderbirdSequenceTests(GatewayTestCase):
    """
    Thunderbird's IMAP conversation goes through the gateway to Dovecot.
    """

    def test_authenticateThenLoginRetry(self) -> None:
        """
        STARTTLS, CAPABILITY, CLIENTID, AUTHENTICATE PLAIN with a
        continuation (refused: wrong password), then LOGIN on the same
        connection without a new CLIENTID; the OK carries Dovecot's
        post-login capabilities, and a message Dovecot holds is read.
        """
        self.dovecot.deliver(ALICE, MESSAGE)
        client = self.connect()
        with self.assertRaises(imaplib.IMAP4.error) as caught:
            client.authenticate("PLAIN", lambda challenge: f"\0{ALICE}\0wrong".encode())
        self.assertEqual(caught.exception.args[0], FAILED.decode())
        status, data = client.login(ALICE, PASSWORD)
        self.assertEqual(status, "OK")
        # Dovecot's own post-login capabilities, not the front's.
        self.assertIn(b"[CAPABILITY IMAP4rev1", data[0])
        self.assertIn(b" MOVE ", data[0])
        self.assertNotIn(b"CLIENTID", data[0])
        self.assertEqual(client.namespace()[0], "OK")
        self.assertEqual(client.select("INBOX")[0], "OK")
        status, found = client.search(None, "SUBJECT", '"delivered by the MTA"')
        [number] = found[0].split()
        status, fetched = client.fetch(number, "(BODY.PEEK[])")
        self.assertEqual(fetched[0][1], MESSAGE)

        # The login reached Dovecot with the client's address and port
        # (ID x-originating-ip), not the gateway's outgoing connection.
        clientPort = client.sock.getsockname()[1]
        log = self.dovecot.log()
        self.assertRegex(log, rf"Login: user=<{re.escape(ALICE)}>.* rip=127\.0\.0\.1, rport={clientPort},")
        client.logout()

    def test_saslInitialResponse(self) -> None:
        """
        AUTHENTICATE PLAIN with an initial response (SASL-IR).
        """
        client = self.connect()
        response = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode()).decode()
        typ, data = client._simple_command("AUTHENTICATE", "PLAIN", response)
        self.assertEqual(typ, "OK")
        client.state = "AUTH"
        self.assertEqual(client.select("INBOX")[0], "OK")

    def test_implicitTLS(self) -> None:
        """
        The implicit TLS listener works the same.
        """
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", self.server.ports["imaps"], ssl_context=self.server.context, timeout=30
        )
        self.addCleanup(_close, client)
        self.assertIn("CLIENTID", client.capabilities)
        client.login(BOB, "bob's secret")
        self.assertEqual(client.select("INBOX")[0], "OK")


class OptionTests(GatewayTestCase):
    """
    C{--imap-backend} alone turns the IMAP side into a gateway.
    """

    useOption = True

    def test_option(self) -> None:
        client = self.login()
        self.assertEqual(client.select("INBOX")[0], "OK")
        self.assertIn("IMAP gateway: logins and sessions go to " + self.backend, self.server.log())


class BackendSTARTTLSTests(GatewayTestCase):
    """
    C{backend_starttls} with C{backend_ca}: the credentials cross an
    encrypted, verified connection.
    """

    dovecotSSL = True

    def backendSettings(self) -> str:
        self.backend = f"tcp:host=localhost:port={self.dovecot.port}"
        return (
            f'imap_backend = "{self.backend}"\nbackend_starttls = true\n'
            f'backend_ca = "{self.dovecot.caFile}"\n'
        )

    def test_starttlsVerified(self) -> None:
        client = self.login()
        self.assertEqual(client.select("INBOX")[0], "OK")
        self.assertRegex(self.dovecot.log(), r"Login: user=<alice@example\.org>.* TLS")


class BackendImplicitTLSTests(GatewayTestCase):
    """
    A C{tls:} backend whose certificate does not chain to C{backend_ca}:
    a temporary failure, and the password is never sent.
    """

    dovecotSSL = True

    def backendSettings(self) -> str:
        other = self.work.parent / "other-ca.pem"
        from clientid_twisted.server.tls import selfSignedCertificate

        other.write_bytes(selfSignedCertificate("localhost")[0])
        self.backend = f"tls:localhost:{self.dovecot.tlsPort}"
        return f'imap_backend = "{self.backend}"\nbackend_ca = "{other}"\n'

    def test_untrusted(self) -> None:
        self.assertEqual(self.refusal(self.connect()), UNAVAILABLE)
        self.assertNotIn("auth failed", self.dovecot.log())
        self.assertNotIn("Login: user=<", self.dovecot.log())


class RelayTests(GatewayTestCase):
    """
    After the login, bytes go both ways unchanged.
    """

    def test_idleSeesNewMessage(self) -> None:
        client = self.login()
        exists = int(client.select("INBOX")[1][0])
        tag = client._new_tag()
        client.send(tag + b" IDLE\r\n")
        self.assertTrue(client.readline().startswith(b"+ "))
        self.dovecot.deliver(ALICE, MESSAGE)
        deadline = time.monotonic() + 20
        seen = b""
        while b"EXISTS" not in seen and time.monotonic() < deadline:
            seen += client.readline()
        self.assertIn(b"* %d EXISTS" % (exists + 1,), seen)
        client.send(b"DONE\r\n")
        line = client.readline()
        while not line.startswith(tag):
            line = client.readline()
        self.assertIn(b"OK", line)

    def test_largeAppendAndFetch(self) -> None:
        """
        A 20 MiB message goes in (APPEND, a literal) and comes back
        byte for byte.
        """
        line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/!\r\n"
        body = line * (20 * 1024 * 1024 // len(line) + 1)
        message = b"Subject: large\r\n\r\n" + body
        client = self.login()
        status, _ = client.append("INBOX", None, None, message)
        self.assertEqual(status, "OK")
        status, found = client.select("INBOX")
        status, fetched = client.fetch(found[0], "(BODY.PEEK[])")
        self.assertEqual(status, "OK")
        self.assertEqual(len(fetched[0][1]), len(message))
        self.assertTrue(fetched[0][1] == message)

    def test_backendByeClosesClient(self) -> None:
        """
        Dovecot going away mid-session ends the client's connection
        cleanly: its BYE is relayed, then the connection closes.
        """
        client = self.login()
        client.select("INBOX")
        self.dovecot.stop()
        rest = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            chunk = client.sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        self.assertIn(b"* BYE", rest)
        self.assertEqual(client.sock.recv(4096), b"")

    def test_noticeAppendedOnBackend(self) -> None:
        """
        A new device's notice goes into the backend INBOX, APPENDed before
        the relay starts: the client's next reply is its own.
        """
        sock = socket.create_connection(("127.0.0.1", self.server.ports["imaps"]), timeout=30)
        s = self.server.context.wrap_socket(sock, server_hostname="localhost")
        self.addCleanup(s.close)
        readUntil(s, b"\r\n")
        s.sendall(b"a CLIENTID UUID tok-new-phone\r\n")
        readUntil(s, b"a OK")
        s.sendall(b'b LOGIN "' + ALICE.encode() + b'" "alice\'s secret"\r\nc NOOP\r\n')
        reply = readUntil(s, b"c OK")
        # Exactly the two replies: nothing of the APPEND exchange.
        self.assertRegex(reply, rb"\Ab OK \[CAPABILITY [^\]]+\] LOGIN succeeded\r\nc OK [^\r\n]*\r\n\Z")
        notices = [m for m in self.dovecot.inbox(ALICE) if b"New device logged in" in m]
        self.assertEqual(len(notices), 1)
        self.assertIn(b"To: <alice@example.org>", notices[0])


class DurableNoticesTests(GatewayTestCase):
    """
    A notice raised without a login (a device locked out, with
    C{[alerts] notice_failures}) waits in the store, not in the gateway's
    memory: it survives a restart, and with a store shared by several
    frontends it is APPENDed once, by whichever sees the account's login.
    """

    extraConfig = "[limits]\ndevice_failures = 2\n[alerts]\nnotice_failures = true\n"
    LOCKED = b"Subject: A device was locked out of your mail account"

    def start(self, work: Path, store: str | None = None) -> RunningServer:
        """
        Another gateway with this test's configuration on C{work}.
        """
        config = (self.server.dataDir / "clientid.toml").read_text()
        server = RunningServer(work, config, protocols=("imap", "imaps"), store=store)
        self.addCleanup(server.stop)
        return server

    def lockOut(self, server: RunningServer) -> None:
        """
        Two wrong passwords from one device: it is locked, and Alice's
        lockout notice waits for her next login.
        """
        for _ in range(2):
            client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
            self.addCleanup(_close, client)
            client.starttls(ssl_context=server.context)
            client._simple_command("CLIENTID", "UUID", "tok-thief")
            with self.assertRaises(imaplib.IMAP4.error):
                client.login(ALICE, "wrong")
            client.logout()
        self.assertEqual(self.locked(), 0)

    def loginThrough(self, server: RunningServer) -> None:
        client = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=30)
        self.addCleanup(_close, client)
        client.starttls(ssl_context=server.context)
        client._simple_command("CLIENTID", "UUID", "tok-laptop")
        self.assertEqual(client.login(ALICE, PASSWORD)[0], "OK")
        self.assertEqual(client.select("INBOX")[0], "OK")
        client.logout()

    def locked(self) -> int:
        return sum(1 for m in self.dovecot.inbox(ALICE) if self.LOCKED in m)

    def test_survivesRestart(self) -> None:
        """
        Queued, the gateway stopped and started again on the same data
        directory: the next login APPENDs it, once.
        """
        self.lockOut(self.server)
        self.server.stop()
        self.server = self.start(self.work)
        self.loginThrough(self.server)
        self.assertEqual(self.locked(), 1)
        self.loginThrough(self.server)
        self.assertEqual(self.locked(), 1)

    def test_sharedStoreAppendsOnce(self) -> None:
        """
        Two gateways on one Redis: the notice raised on one is APPENDed
        by the other, which saw the login, and never again by either.
        """
        from tests.redisserver import requireRedisServer, sharedRedisServer, uniquePrefix

        requireRedisServer()
        url = f"{sharedRedisServer().url}?prefix={uniquePrefix(self)}"
        self.server.stop()
        one = self.start(self.work / "one", store=url)
        two = self.start(self.work / "two", store=url)
        self.lockOut(one)
        self.loginThrough(two)
        self.assertEqual(self.locked(), 1)
        self.loginThrough(one)
        self.loginThrough(two)
        self.assertEqual(self.locked(), 1)


class CompressTests(GatewayTestCase):
    """
    COMPRESS=DEFLATE (RFC 4978), asked of the backend after the login,
    goes through the relay: the gateway does not look at the bytes.
    """

    dovecotExtra = "mail_plugins = zlib\nprotocol imap {\n  mail_plugins = zlib imap_zlib\n}\n"

    def test_compress(self) -> None:
        client = self.connect()
        status, data = client.login(ALICE, PASSWORD)
        self.assertIn(b" COMPRESS=DEFLATE", data[0])
        imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))
        status, _ = client._simple_command("COMPRESS", "DEFLATE")
        self.assertEqual(status, "OK")
        compressor = zlib.compressobj(wbits=-15)
        decompressor = zlib.decompressobj(wbits=-15)
        client.sock.sendall(
            compressor.compress(b"z1 SELECT INBOX\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
        )
        received = b""
        deadline = time.monotonic() + 20
        while b"z1 OK" not in received and time.monotonic() < deadline:
            received += decompressor.decompress(client.sock.recv(65536))
        self.assertIn(b"z1 OK [READ-WRITE]", received)


class PlaintextInjectionTests(GatewayTestCase):
    """
    Nothing sent before a successful login reaches the backend.
    """

    def test_pipelinedPlaintextAfterSTARTTLS(self) -> None:
        s = socket.create_connection(("127.0.0.1", self.server.ports["imap"]), timeout=30)
        self.addCleanup(s.close)
        readUntil(s, b"\r\n")
        s.sendall(b"a STARTTLS\r\nb LOGIN \"" + ALICE.encode() + b"\" \"alice's secret\"\r\n")
        readUntil(s, b"a OK")
        t = self.server.context.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"c NOOP\r\n")
        reply = readUntil(t, b"c OK")
        self.assertNotIn(b"b OK", reply)
        t.sendall(b"d SELECT INBOX\r\n")
        self.assertIn(b"d BAD", readUntil(t, b"d "))
        t.close()
        self.assertNotIn("Login: user=<", self.dovecot.log())
        self.assertNotIn("LOGIN succeeded", self.server.log())


class AllowlistTests(GatewayTestCase):
    """
    A refused device gets the wrong password's reply, as slowly, and its
    password never reaches the backend.
    """

    devices = "allowlist"
    # Dovecot answers a wrong password late: a refusal that did not wait as
    # long would stand out.  Dovecot 2.3 flushes delayed failures on a
    # half-second timer, so a 2 s delay is 1.5-2 s in practice (with 1 s the
    # "over a second" check below failed about half the time).
    dovecotExtra = "auth_failure_delay = 2 secs\n"

    def test_refusalIdenticalToWrongPassword(self) -> None:
        status, output = self.admin("devices", "approve", ALICE, "UUID", "tok-laptop")
        self.assertEqual(status, 0, output)

        started = time.monotonic()
        wrong = self.refusal(self.connect("tok-laptop"), password="wrong password")
        wrongSeconds = time.monotonic() - started
        started = time.monotonic()
        refused = self.refusal(self.connect("tok-stranger"))
        refusedSeconds = time.monotonic() - started

        self.assertEqual(wrong, FAILED)
        self.assertEqual(refused, FAILED)
        self.assertGreater(wrongSeconds, 1.0)
        self.assertLess(abs(refusedSeconds - wrongSeconds), 0.5)
        # One login reached Dovecot: the approved device's.
        self.assertEqual(self.dovecot.log().count("auth failed"), 1)
        self.assertNotIn("Login: user=<", self.dovecot.log())

        client = self.login("tok-laptop")
        self.assertEqual(client.select("INBOX")[0], "OK")

    def test_adminForBackendAccount(self) -> None:
        """
        clientid-admin lists, approves and revokes devices of an account
        that exists only on the backend.
        """
        status, output = self.admin("devices", "approve", ALICE, "UUID", "tok-laptop")
        self.assertEqual(status, 0, output)
        self.login("tok-laptop").logout()
        status, output = self.admin("devices", "list", ALICE)
        self.assertEqual(status, 0, output)
        self.assertIn("UUID", output)
        status, output = self.admin("devices", "revoke", ALICE, "UUID", "tok-laptop")
        self.assertEqual(status, 0, output)
        self.assertEqual(self.refusal(self.connect("tok-laptop")), FAILED)
        logins = self.dovecot.log().count("Login: user=<")
        self.assertEqual(logins, 1)

        # Without a backend in the configuration, accounts must be local.
        (self.server.dataDir / "clientid.toml").write_text('[policy]\ndevices = "allowlist"\n')
        status, output = self.admin("devices", "list", ALICE)
        self.assertEqual(status, 2)
        self.assertIn("no such user", output)


class RevocationTests(GatewayTestCase):
    """
    A learned device, revoked, is refused.
    """

    def test_revoked(self) -> None:
        self.login("tok-old-phone").logout()
        status, output = self.admin("devices", "revoke", ALICE, "UUID", "tok-old-phone")
        self.assertEqual(status, 0, output)
        self.assertEqual(self.refusal(self.connect("tok-old-phone")), FAILED)
        self.assertEqual(self.dovecot.log().count("Login: user=<"), 1)
        self.login("tok-laptop").logout()


class OutageTests(GatewayTestCase):
    """
    A backend that is down gives a temporary failure, logged once per
    outage, and service resumes when it is back, without a restart.
    """

    timeoutSeconds = 3

    def test_downThenUp(self) -> None:
        self.dovecot.stop()
        for _ in range(3):
            self.assertEqual(self.refusal(self.connect()), UNAVAILABLE)
        self.assertEqual(self.server.log().count("IMAP backend " + self.backend + " unavailable"), 1)

        self.dovecot.start()
        client = self.login()
        self.assertEqual(client.select("INBOX")[0], "OK")
        self.assertEqual(self.server.log().count("is reachable again"), 1)
        client.logout()

        self.dovecot.stop()
        self.assertEqual(self.refusal(self.connect()), UNAVAILABLE)
        self.assertEqual(self.server.log().count("IMAP backend " + self.backend + " unavailable"), 2)

    def test_notAnswering(self) -> None:
        """
        A backend that accepts connections but says nothing: a temporary
        failure after backend_timeout_seconds.
        """
        self.dovecot.stop()
        self.addCleanup(silentListener(self.dovecot.port).close)
        started = time.monotonic()
        self.assertEqual(self.refusal(self.connect()), UNAVAILABLE)
        self.assertGreaterEqual(time.monotonic() - started, 2.9)
        self.assertIn("no answer within 3 s", self.server.log())
