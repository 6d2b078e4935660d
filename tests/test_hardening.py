"""
Each limit of issue 9 against the running C{twistd clientid-mail}, over
real sockets: idle and slow clients are cut on time, oversized lines,
literals and messages are refused without the server's memory growing by
their size, the per-address limit refuses one address while another still
connects, the error budget ends a session, and a SIGTERM during DATA loses
no accepted message.

The server runs as a child process (L{tests.runningserver}) with short
timeouts in its C{clientid.toml}.  Each test plays its clients from its own
loopback address (127.0.0.N), so the per-address limit of one test does not
meet the connections of another.
"""

from __future__ import annotations

import atexit
import base64
import select
import signal
import socket
import shutil
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.runningserver import (
    PASSWORD,
    RunningServer,
    canRunServer,
    closedWithin,
    connect,
    readAll,
    readUntil,
)

SMTP_REPLY = rb"(?m)^\d{3} [^\r\n]*\r\n"
"""The last line of an SMTP reply."""


def imapTagged(tag: bytes) -> bytes:
    return rb"(?m)^(?:" + tag + rb" |\* BYE )[^\r\n]*\r\n"


def _plainAuth(user: str) -> bytes:
    return base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode())


class _Sessions:
    """
    Clients for a test case with a C{server}.
    """

    server: RunningServer
    assertTrue: Any
    assertIn: Any

    def smtp(self, source: str, implicit: bool = True, login: bool = True) -> Any:
        """
        An SMTP session over TLS (implicit, or STARTTLS), logged in as bob
        unless C{login} is false.
        """
        if implicit:
            s: Any = self.server.context.wrap_socket(
                connect(self.server.ports["smtps"], source), server_hostname="localhost"
            )
            self.assertTrue(readUntil(s, SMTP_REPLY).startswith(b"220 "))
        else:
            s = connect(self.server.ports["smtp"], source)
            self.assertTrue(readUntil(s, SMTP_REPLY).startswith(b"220 "))
            self.command(s, b"EHLO tester")
            self.assertTrue(self.command(s, b"STARTTLS").startswith(b"220 "))
            s = self.server.context.wrap_socket(s, server_hostname="localhost")
        self.command(s, b"EHLO tester")
        if login:
            reply = self.command(s, b"AUTH PLAIN " + _plainAuth("bob@example.test"))
            self.assertTrue(reply.startswith(b"235 "), reply)
        return s

    def command(self, s: Any, line: bytes, pattern: bytes = SMTP_REPLY) -> bytes:
        s.sendall(line + b"\r\n")
        return readUntil(s, pattern)

    def imap(self, source: str, login: bool = True) -> Any:
        """
        An IMAP session over implicit TLS, logged in as bob with INBOX
        selected unless C{login} is false.
        """
        s = self.server.context.wrap_socket(
            connect(self.server.ports["imaps"], source), server_hostname="localhost"
        )
        self.assertIn(b"* OK", readUntil(s, rb"\r\n"))
        if login:
            reply = self.command(s, b"l LOGIN bob@example.test {%d}" % (len(PASSWORD),), rb"\+[^\r\n]*\r\n")
            self.assertTrue(reply.startswith(b"+"), reply)
            reply = self.command(s, PASSWORD.encode(), imapTagged(b"l"))
            self.assertIn(b"l OK", reply)
            self.assertIn(b"s OK", self.command(s, b"s SELECT INBOX", imapTagged(b"s")))
        return s

    def maildir(self, user: str = "bob@example.test") -> dict[str, list[bytes]]:
        root = self.server.dataDir / "mail" / user
        return {
            name: [p.read_bytes() for p in sorted((root / name).iterdir())] if (root / name).exists() else []
            for name in ("new", "cur", "tmp")
        }


_servers: dict[type, list[Any]] = {}
"""Per test class: [server, tests still to run, work directory]."""


def _stopServer(cls: type) -> None:
    entry = _servers.pop(cls, None)
    if entry is not None:
        entry[0].stop()
        shutil.rmtree(entry[2], ignore_errors=True)


class _Server(_Sessions):
    """
    One server for all tests of a class: started by the first test, stopped
    after the last (trial has no setUpClass), or at exit when only some
    tests run.
    """

    config = ""

    def setUp(self) -> None:
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        cls = type(self)
        if cls not in _servers:
            work = Path(tempfile.mkdtemp(prefix="clientid-hardening-"))
            tests = [name for name in dir(cls) if name.startswith("test_")]
            _servers[cls] = [RunningServer(work, cls.config), len(tests), work]
            atexit.register(_stopServer, cls)
        self.server = _servers[cls][0]
        self.addCleanup(self._finished)

    def _finished(self) -> None:
        log = self.server.log()
        entry = _servers[type(self)]
        entry[1] -= 1
        if entry[1] == 0:
            _stopServer(type(self))
        self.assertNotIn("Traceback", log)  # type: ignore[attr-defined]


def trickle(s: Any, data: bytes, interval: float, limit: float) -> tuple[bytes, float]:
    """
    Send C{data} one byte every C{interval} seconds (again and again) until
    the server closes the connection or C{limit} seconds pass.

    @return: What the server said meanwhile, and after how long it closed
        (C{limit} if it did not).
    """
    start = time.monotonic()
    received = b""
    i = 0
    s.setblocking(False)
    try:
        while time.monotonic() - start < limit:
            readable, _, _ = select.select([s], [], [], interval)
            if readable:
                try:
                    chunk = s.recv(65536)
                except (ssl.SSLWantReadError, BlockingIOError):
                    chunk = None
                except (ConnectionError, ssl.SSLError):
                    chunk = b""
                if chunk == b"":
                    return received, time.monotonic() - start
                if chunk:
                    received += chunk
                continue
            try:
                s.send(data[i % len(data) : i % len(data) + 1])
            except (ConnectionError, ssl.SSLError, BlockingIOError, ssl.SSLWantWriteError):
                pass
            i += 1
    finally:
        s.setblocking(True)
    return received, limit


class TimeoutTests(_Server, SynchronousTestCase):
    """
    Idle clients are cut after the idle timeout for their stage; slow
    clients after the deadline for the command or transfer they are
    trickling, however steadily bytes arrive.
    """

    config = """
[server]
initial_timeout_seconds = 1.5
idle_timeout_seconds = 2
imap_idle_timeout_seconds = 2.5
command_timeout_seconds = 0.7
data_timeout_seconds = 1.2
tls_handshake_timeout_seconds = 1
auth_failure_delay_seconds = 0
shutdown_grace_seconds = 1
"""

    def test_idleBeforeFirstCommand(self) -> None:
        """
        A client that connects and says nothing is cut after the initial
        timeout, with a 421.
        """
        s = connect(self.server.ports["smtp"], "127.0.0.11")
        data, elapsed = closedWithin(s, 15)
        self.assertTrue(data.startswith(b"220 "), data)
        self.assertIn(b"\r\n421 4.4.2 localhost Idle timeout", data)
        self.assertTrue(1.4 <= elapsed < 10, elapsed)

    def test_idleAfterCommandOverTLS(self) -> None:
        """
        After a command over TLS (here after STARTTLS, whose handshake must
        count as finished: the handshake timeout is shorter) the longer
        idle timeout applies.
        """
        s = self.smtp("127.0.0.12", implicit=False, login=False)
        data, elapsed = closedWithin(s, 15)
        self.assertEqual(data, b"421 4.4.2 localhost Idle timeout, closing connection\r\n")
        self.assertTrue(1.9 <= elapsed < 10, elapsed)

    def test_handshakeTimeout(self) -> None:
        """
        A client that opens an implicit-TLS connection and never sends a
        ClientHello is cut by the handshake timeout.
        """
        s = connect(self.server.ports["imaps"], "127.0.0.17")
        data, elapsed = closedWithin(s, 15)
        self.assertEqual(data, b"")
        self.assertLess(elapsed, 10)
        self.assertIn("Closing imap session from 127.0.0.17: handshake-timeout", self.server.log())

    def test_idleAfterLogin(self) -> None:
        """
        A logged-in IMAP session gets its own idle timeout.
        """
        s = self.imap("127.0.0.13")
        data, elapsed = closedWithin(s, 15)
        self.assertEqual(data, b"* BYE Autologout; idle for too long\r\n")
        self.assertTrue(2.4 <= elapsed < 12, elapsed)

    def test_slowlorisCommandLine(self) -> None:
        """
        A command line trickled a byte at a time is cut by the command
        deadline, although every byte restarts nothing.
        """
        s = connect(self.server.ports["smtp"], "127.0.0.14")
        self.assertTrue(readUntil(s, SMTP_REPLY).startswith(b"220 "))
        received, elapsed = trickle(s, b"NOOP NOOP NOOP ", 0.1, 15)
        self.assertIn(b"421 4.4.2 localhost Command not completed in time", received)
        self.assertLess(elapsed, 10)

    def test_slowlorisIMAPCommandLine(self) -> None:
        s = connect(self.server.ports["imap"], "127.0.0.14")
        readUntil(s, rb"\r\n")
        received, elapsed = trickle(s, b"a NOOP ", 0.1, 15)
        self.assertIn(b"* BYE Command not completed in time", received)
        self.assertLess(elapsed, 10)

    def test_slowlorisData(self) -> None:
        """
        Message data sent as short complete lines, each in time for the
        idle timeout, is cut by the DATA deadline; nothing is stored.
        """
        s = self.smtp("127.0.0.15")
        self.command(s, b"MAIL FROM:<bob@example.test>")
        self.command(s, b"RCPT TO:<bob@example.test>")
        self.assertTrue(self.command(s, b"DATA").startswith(b"354 "))
        received, elapsed = trickle(s, b"x\r\n", 0.1, 15)
        self.assertIn(b"421 4.4.2 localhost Message data not completed in time", received)
        self.assertLess(elapsed, 10)
        self.assertEqual(self.maildir()["new"], [])
        self.assertEqual(self.maildir()["tmp"], [])

    def test_slowlorisLiteral(self) -> None:
        """
        An APPEND literal trickled a byte at a time is cut by the deadline
        for transfers.
        """
        s = self.imap("127.0.0.16")
        reply = self.command(s, b"a APPEND INBOX {1000}", rb"\+[^\r\n]*\r\n")
        self.assertTrue(reply.startswith(b"+ "), reply)
        received, elapsed = trickle(s, b"y", 0.1, 15)
        self.assertIn(b"* BYE Literal not completed in time", received)
        self.assertLess(elapsed, 10)


class LimitTests(_Server, SynchronousTestCase):
    """
    Sizes, error budget and connection limits.
    """

    config = """
[server]
max_message_bytes = 1048576
max_literal_bytes = 1048576
imap_max_line_bytes = 16384
max_errors_per_session = 5
max_connections_per_address = 4
auth_failure_delay_seconds = 0
shutdown_grace_seconds = 1
"""

    PAYLOAD = 32 * 1024 * 1024
    """Bytes thrown at a limit; the server's memory must not grow by them."""

    def assertMemoryBounded(self, before: int) -> None:
        grown = self.server.rss() - before
        self.assertLess(grown, self.PAYLOAD // 4, f"RSS grew by {grown} bytes")

    def warmUp(self, source: str) -> int:
        # One full session first, so lazily allocated state is in place.
        s = self.smtp(source)
        self.command(s, b"QUIT")
        s = self.imap(source)
        self.command(s, b"z LOGOUT", imapTagged(b"z"))
        return self.server.rss()

    def test_oversizedSMTPLine(self) -> None:
        """
        A 32 MiB command line gets C{500 5.5.2 Line too long}, the session
        goes on, and the server does not hold the line.
        """
        before = self.warmUp("127.0.0.21")
        s = connect(self.server.ports["smtp"], "127.0.0.21", timeout=30)
        readUntil(s, SMTP_REPLY)
        chunk = b"x" * 65536
        s.sendall(b"NOOP ")
        for _ in range(self.PAYLOAD // len(chunk)):
            s.sendall(chunk)
        self.assertEqual(self.command(s, b""), b"500 5.5.2 Line too long\r\n")
        self.assertEqual(self.command(s, b"NOOP"), b"250 OK\r\n")
        # Just over the RFC 5321 limit of 512 octets with CRLF.
        self.assertEqual(self.command(s, b"NOOP " + b"x" * 506), b"500 5.5.2 Line too long\r\n")
        self.assertEqual(self.command(s, b"NOOP " + b"x" * 505), b"250 OK\r\n")
        self.assertMemoryBounded(before)

    def test_oversizedIMAPLine(self) -> None:
        """
        An IMAP command line over C{imap_max_line_bytes} ends the session
        with BYE as soon as the cap is passed.
        """
        before = self.warmUp("127.0.0.22")
        s = connect(self.server.ports["imap"], "127.0.0.22", timeout=30)
        readUntil(s, rb"\r\n")
        chunk = b"x" * 65536
        s.sendall(b"a NOOP ")
        try:
            for _ in range(self.PAYLOAD // len(chunk)):
                s.sendall(chunk)
        except ConnectionError:
            pass
        self.assertIn(b"* BYE Command line too long\r\n", readAll(s))
        self.assertMemoryBounded(before)

    def test_hugeLiteral(self) -> None:
        """
        C{{999999999}} gets C{NO [TOOBIG]} without a continuation, so the
        client sends nothing; the session goes on.  A non-synchronising
        C{{999999999+}} ends the session with BYE, and the bytes that
        follow are never buffered.
        """
        before = self.warmUp("127.0.0.23")
        s = self.imap("127.0.0.23")
        reply = self.command(s, b"a APPEND INBOX {999999999}", imapTagged(b"a"))
        self.assertEqual(reply, b"a NO [TOOBIG] Literal larger than 1048576 octets\r\n")
        self.assertIn(b"b OK", self.command(s, b"b NOOP", imapTagged(b"b")))
        s.sendall(b"c APPEND INBOX {999999999+}\r\n")
        chunk = b"z" * 65536
        try:
            for _ in range(self.PAYLOAD // len(chunk)):
                s.sendall(chunk)
        except (ConnectionError, ssl.SSLError, socket.timeout):
            pass
        self.assertIn(b"* BYE Literal too large\r\n", readAll(s))
        self.assertMemoryBounded(before)

    def test_oversizedMessage(self) -> None:
        """
        EHLO lists SIZE; a declared SIZE over it gets 552 at MAIL; an
        undeclared one is counted as it streams, dropped at the limit, and
        answered 552 after the final dot.  Nothing is stored, the session
        goes on, and the server's memory does not grow by the message.
        """
        before = self.warmUp("127.0.0.24")
        s = self.smtp("127.0.0.24")
        self.assertRegex(self.command(s, b"EHLO tester"), rb"\r\n250[- ]SIZE 1048576\r\n")
        reply = self.command(s, b"MAIL FROM:<bob@example.test> SIZE=1048577")
        self.assertEqual(reply, b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
        self.assertTrue(self.command(s, b"MAIL FROM:<bob@example.test> SIZE=1000").startswith(b"250 "))
        self.assertTrue(self.command(s, b"RCPT TO:<bob@example.test>").startswith(b"250 "))
        self.assertTrue(self.command(s, b"DATA").startswith(b"354 "))
        line = b"y" * 998 + b"\r\n"
        block = line * 64
        for _ in range(self.PAYLOAD // len(block)):
            s.sendall(block)
        reply = self.command(s, b".")
        self.assertEqual(reply, b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
        self.assertMemoryBounded(before)
        self.assertEqual(self.maildir()["new"], [])
        self.assertEqual(self.maildir()["tmp"], [])
        # The session goes on, and a message under the limit goes through.
        self.command(s, b"MAIL FROM:<bob@example.test>")
        self.command(s, b"RCPT TO:<bob@example.test>")
        self.command(s, b"DATA")
        self.assertTrue(self.command(s, b"Subject: small\r\n\r\nfits\r\n.").startswith(b"250 "))
        [stored] = self.maildir()["new"]
        self.assertTrue(stored.endswith(b"fits\r\n"))

    def flood(self, port: int, source: str, greeting: bytes, line: bytes) -> int:
        """
        Connect with small socket buffers, read the greeting, then send
        C{line} again and again without reading: up to C{PAYLOAD // 4}
        bytes or 10 seconds, stopping when a send blocks for a second.

        @return: The bytes sent.
        """
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)  # type: ignore[attr-defined]
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        readUntil(s, greeting)
        s.settimeout(1)
        batch = line * (65536 // len(line))
        sent = 0
        deadline = time.monotonic() + 10
        while sent < self.PAYLOAD // 4 and time.monotonic() < deadline:
            try:
                sent += s.send(batch)
            except socket.timeout:
                break
        time.sleep(0.5)
        return sent

    def test_unreadReplies(self) -> None:
        """
        A client that sends C{EHLO x} (SMTP) or C{a CAPABILITY} (IMAP) in a
        loop without reading the replies (no login needed) does not make
        the server's memory grow: it stops reading from that client (goal:
        under 5 MB per connection).
        """
        before = self.warmUp("127.0.0.29")
        sent = self.flood(self.server.ports["smtp"], "127.0.0.29", SMTP_REPLY, b"EHLO x\r\n")
        sent += self.flood(self.server.ports["imap"], "127.0.0.30", rb"\r\n", b"a CAPABILITY\r\n")
        grown = self.server.rss() - before
        self.assertGreater(sent, 256 * 1024)
        self.assertLess(grown, 2 * 5 * 1024 * 1024, f"RSS grew by {grown} bytes after {sent} sent")

    def test_errorBudgetSMTP(self) -> None:
        """
        The sixth error of a session with a budget of five ends it with
        C{421}: unknown commands and failed AUTH both count.
        """
        s = self.smtp("127.0.0.25", login=False)
        for n in range(3):
            self.assertTrue(self.command(s, b"FROB %d" % (n,)).startswith(b"500 "))
        for n in range(2):
            reply = self.command(s, b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0wrong"))
            self.assertEqual(reply, b"535 5.7.8 Authentication credentials invalid\r\n")
        reply = self.command(s, b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0wrong"), rb"421 [^\r\n]*\r\n")
        self.assertEqual(
            reply,
            b"535 5.7.8 Authentication credentials invalid\r\n"
            b"421 4.7.0 localhost Too many errors, closing connection\r\n",
        )
        self.assertEqual(readAll(s), b"")

    def test_errorBudgetIMAP(self) -> None:
        """
        The same for IMAP: BAD replies and failed LOGINs count; BYE ends it.
        """
        s = self.imap("127.0.0.26", login=False)
        for n in range(2):
            self.assertIn(b"BAD", self.command(s, b"t%d FROB" % (n,), imapTagged(b"t%d" % (n,))))
        reply = self.command(s, b"m CLIENTID UUID", imapTagged(b"m"))
        self.assertEqual(reply, b"m BAD Malformed CLIENTID: expected CLIENTID <type> <token>\r\n")
        for n in range(2):
            reply = self.command(s, b"l%d LOGIN bob@example.test wrong" % (n,), imapTagged(b"l%d" % (n,)))
            self.assertEqual(reply, b"l%d NO [AUTHENTICATIONFAILED] Authentication failed\r\n" % (n,))
        s.sendall(b"x FROB\r\n")
        self.assertEqual(readAll(s), b"x BAD Unsupported command\r\n* BYE Too many errors\r\n")

    def test_perAddressLimit(self) -> None:
        """
        With four connections from one address (SMTP and IMAP together),
        the fifth gets 421 / BYE and is closed, while another address still
        connects; a closed connection frees its place.
        """
        held = [
            connect(self.server.ports["smtp"], "127.0.0.27"),
            connect(self.server.ports["imap"], "127.0.0.27"),
            connect(self.server.ports["smtp"], "127.0.0.27"),
            connect(self.server.ports["imap"], "127.0.0.27"),
        ]
        for s in held:
            readUntil(s, rb"\r\n")
        extra = connect(self.server.ports["smtp"], "127.0.0.27")
        self.assertEqual(
            readAll(extra),
            b"421 4.7.0 localhost Too many connections from your address, try again later\r\n",
        )
        extra = connect(self.server.ports["imap"], "127.0.0.27")
        self.assertEqual(readAll(extra), b"* BYE Too many connections from your address, try again later\r\n")
        other = connect(self.server.ports["smtp"], "127.0.0.28")
        self.assertTrue(readUntil(other, SMTP_REPLY).startswith(b"220 "))
        held.pop().close()
        for _ in range(50):
            time.sleep(0.05)
            again = connect(self.server.ports["smtp"], "127.0.0.27")
            greeting = readUntil(again, SMTP_REPLY)
            if greeting.startswith(b"220 "):
                break
        self.assertTrue(greeting.startswith(b"220 "), greeting)


class ShutdownTests(_Sessions, SynchronousTestCase):
    """
    SIGTERM: connections are refused, idle sessions get a goodbye, a
    message in DATA is finished and kept, a stalled one is cut after the
    grace and leaves nothing in the maildir.
    """

    def setUp(self) -> None:
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        self.server = RunningServer(
            Path(self.mktemp()),
            "[server]\nshutdown_grace_seconds = 2\nauth_failure_delay_seconds = 0\n",
        )
        self.addCleanup(self.server.stop)

    def test_sigtermDuringData(self) -> None:
        sender = self.smtp("127.0.0.41")
        body = b"Subject: first\r\n\r\nfirst message\r\n"
        self.command(sender, b"MAIL FROM:<bob@example.test>")
        self.command(sender, b"RCPT TO:<bob@example.test>")
        self.command(sender, b"DATA")
        self.assertTrue(self.command(sender, body + b".").startswith(b"250 "))
        # The second message is half sent when the server is told to stop.
        self.command(sender, b"MAIL FROM:<bob@example.test>")
        self.command(sender, b"RCPT TO:<bob@example.test>")
        self.assertTrue(self.command(sender, b"DATA").startswith(b"354 "))
        sender.sendall(b"Subject: second\r\n\r\nfirst half\r\n")
        # One that stalls in DATA, one idle SMTP and one idle IMAP session.
        staller = self.smtp("127.0.0.42")
        self.command(staller, b"MAIL FROM:<bob@example.test>")
        self.command(staller, b"RCPT TO:<bob@example.test>")
        self.command(staller, b"DATA")
        staller.sendall(b"Subject: never finished\r\n\r\npart\r\n")
        idleSMTP = connect(self.server.ports["smtp"], "127.0.0.43")
        readUntil(idleSMTP, SMTP_REPLY)
        idleIMAP = self.imap("127.0.0.44")
        time.sleep(0.2)

        self.server.terminate()

        self.assertEqual(
            readAll(idleSMTP), b"421 4.3.2 localhost Service shutting down, closing connection\r\n"
        )
        self.assertEqual(readAll(idleIMAP), b"* BYE Server shutting down\r\n")
        sender.sendall(b"second half\r\n.\r\n")
        reply = readAll(sender)
        self.assertTrue(reply.startswith(b"250 "), reply)
        self.assertTrue(reply.endswith(b"421 4.3.2 localhost Service shutting down, closing connection\r\n"), reply)
        # The staller is cut once the grace is over.
        data, elapsed = closedWithin(staller, 20)
        self.assertIn(b"421 4.3.2", data)
        staller.close()
        sender.close()
        # twistd ends itself with the signal that stopped it.
        self.assertIn(self.server.wait(30), (0, -signal.SIGTERM))
        stored = self.maildir()
        # The IMAP session may have moved the first one to cur/.
        messages = stored["new"] + stored["cur"]
        self.assertEqual(len(messages), 2)
        self.assertTrue(any(m.endswith(b"first message\r\n") for m in messages))
        self.assertTrue(any(m.endswith(b"first half\r\nsecond half\r\n") for m in messages))
        self.assertEqual(stored["tmp"], [])
        log = self.server.stop()
        self.assertNotIn("Traceback", log)
        self.assertIn("Shutting down: 2 busy of 4 sessions", log)
