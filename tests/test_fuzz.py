"""
Fuzz the running C{twistd clientid-mail}: a seeded random stream of a few
thousand random and mutated command lines for each protocol, before TLS
(the STARTTLS ports) and after (the implicit-TLS ports, logged in), then a
clean session must still work and the server's log must hold no
traceback.

Seeded, so a failure is reproducible: the seed is in the failure message;
set C{CLIENTID_FUZZ_SEED} to replay one, C{CLIENTID_FUZZ_LINES} for a
longer run.
"""

from __future__ import annotations

import base64
import os
import random
import select
import shutil
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.runningserver import PASSWORD, RunningServer, canRunServer, connect, readUntil

SEED = int(os.environ.get("CLIENTID_FUZZ_SEED", "20261123"))
LINES = int(os.environ.get("CLIENTID_FUZZ_LINES", "1500"))
"""Lines per protocol and side of TLS."""

_AUTH = base64.b64encode(b"\0bob@example.test\0" + PASSWORD.encode())

SMTP_CORPUS = [
    b"EHLO client.example", b"HELO client.example", b"STARTTLS", b"NOOP", b"RSET",
    b"VRFY bob", b"QUIT", b"HELP", b"CLIENTID UUID 0f6a2c1e-3b7d-4e55-8f0a-6d2b9c1e7a44",
    b"CLIENTID UUID", b"AUTH PLAIN " + _AUTH, b"AUTH PLAIN", b"AUTH LOGIN", b"AUTH CRAM-MD5",
    b"AUTH PLAIN =", b"*", b"MAIL FROM:<bob@example.test>",
    b"MAIL FROM:<bob@example.test> BODY=8BITMIME SIZE=1000", b"MAIL FROM:<>",
    b"RCPT TO:<bob@example.test>", b"RCPT TO:<carol@elsewhere.example>", b"DATA",
    b"Subject: fuzz", b"", b".", b"..", b"BDAT 10 LAST",
]

IMAP_CORPUS = [
    b"a CAPABILITY", b"a NOOP", b"a STARTTLS", b"a LOGOUT", b"a LOGIN bob@example.test {21}",
    b'a LOGIN "bob@example.test" "' + PASSWORD.encode() + b'"', b"a AUTHENTICATE PLAIN " + _AUTH,
    b"a AUTHENTICATE PLAIN", b"a CLIENTID UUID 9d8c7b6a-5f4e", b"a CLIENTID UUID", b"a ID NIL",
    b"a SELECT INBOX", b"a EXAMINE INBOX", b"a CREATE Fuzz", b"a DELETE Fuzz", b"a RENAME Fuzz Zz",
    b"a LIST \"\" *", b"a LSUB \"\" *", b"a STATUS INBOX (MESSAGES UIDNEXT)", b"a NAMESPACE",
    b"a APPEND INBOX (\\Seen) {11}", b"a APPEND INBOX {5+}", b"a FETCH 1:* (FLAGS BODY.PEEK[])",
    b"a UID FETCH 1:* (UID RFC822.SIZE ENVELOPE BODYSTRUCTURE)", b"a FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]",
    b"a STORE 1 +FLAGS (\\Deleted)", b"a SEARCH UNSEEN", b"a UID SEARCH ALL", b"a COPY 1 Fuzz",
    b"a EXPUNGE", b"a CLOSE", b"a IDLE", b"DONE", b"a CHECK", b"a SUBSCRIBE INBOX",
]

_INTERESTING = [
    b"\x00", b"\xff", b"\r", b"\n", b" ", b"  ", b"\t", b"{", b"}", b"(", b")", b'"', b"\\", b"*",
    b"%", b"[", b"]", b"<", b">", b":", b"+", b"=", b"{0}", b"{1}", b"{4096}", b"{999999999}",
    b"{7+}", b"{999999999+}", b"\xc3\xa9", b"NIL", b"1:*", b"-1", b"4294967296",
]


def mutate(rng: random.Random, line: bytes) -> bytes:
    """
    One to three random edits of C{line}.
    """
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(9)
        position = rng.randint(0, len(line))
        if choice == 0 and line:
            i = rng.randrange(len(line))
            line = line[:i] + bytes([rng.randrange(256)]) + line[i + 1 :]
        elif choice == 1:
            line = line[:position] + rng.choice(_INTERESTING) + line[position:]
        elif choice == 2:
            line = line[:position] + line[rng.randint(position, len(line)) :]
        elif choice == 3:
            line = line[:position]
        elif choice == 4:
            line = line + b" " + rng.choice(_INTERESTING)
        elif choice == 5:
            line = line.swapcase()
        elif choice == 6:
            line = line + rng.choice(_INTERESTING) * rng.randint(1, 600)
        elif choice == 7:
            line = line[:position] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 20))) + line[position:]
        else:
            line = line + b" " + line
    return line


def randomLine(rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
    if kind == 1:
        return bytes(rng.randrange(0x20, 0x7F) for _ in range(rng.randint(0, 300)))
    return b"x" * rng.choice([510, 511, 512, 1000, 9000, 20000, 70000])


def lines(rng: random.Random, corpus: list[bytes], count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.25:
            out.append(rng.choice(corpus))
        elif roll < 0.85:
            out.append(mutate(rng, rng.choice(corpus)))
        else:
            out.append(randomLine(rng))
    return out


class FuzzTests(SynchronousTestCase):
    """
    Garbage before and after TLS, then a clean session.
    """

    def setUp(self) -> None:
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        self.work = Path(tempfile.mkdtemp(prefix="clientid-fuzz-"))
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.server = RunningServer(
            self.work,
            "[server]\n"
            "auth_failure_delay_seconds = 0\n"
            "max_errors_per_session = 200\n"
            "command_timeout_seconds = 5\n"
            "shutdown_grace_seconds = 1\n"
            "max_message_bytes = 65536\n"
            "max_literal_bytes = 65536\n",
        )
        self.addCleanup(self.server.stop)
        self.sessions = 0

    def open(self, protocol: str) -> Any:
        """
        A fresh session: plaintext on the STARTTLS ports, logged in over
        implicit TLS on the others.
        """
        self.sessions += 1
        source = f"127.0.1.{self.sessions % 200 + 1}"
        s: Any = connect(self.server.ports[protocol], source, timeout=5)
        if protocol in ("smtps", "imaps"):
            s = self.server.context.wrap_socket(s, server_hostname="localhost")
        readUntil(s, rb"\r\n")
        if protocol == "smtps":
            s.sendall(b"EHLO fuzz\r\nAUTH PLAIN " + _AUTH + b"\r\n")
            readUntil(s, rb"(?m)^23\d [^\r\n]*\r\n")
        elif protocol == "imaps":
            s.sendall(b'l LOGIN "bob@example.test" "' + PASSWORD.encode() + b'"\r\ns SELECT INBOX\r\n')
            readUntil(s, rb"(?m)^s [^\r\n]*\r\n")
        s.setblocking(False)
        return s

    def drain(self, s: Any) -> bool:
        """
        Read what the server says to a batch (until it pauses); return
        whether the connection is still open.  Waiting for the answers keeps
        the stream in step with the server: otherwise the kernel's buffers
        would take the whole stream before the server has read a line.
        """
        wait = 0.05
        while True:
            readable, _, _ = select.select([s], [], [], wait)
            wait = 0.002
            pending = getattr(s, "pending", lambda: 0)()
            if not readable and not pending:
                return True
            try:
                if not s.recv(65536):
                    return False
            except (ssl.SSLWantReadError, BlockingIOError):
                return True
            except (OSError, ssl.SSLError):
                return False

    def blast(self, protocol: str, corpus: list[bytes], rng: random.Random) -> None:
        stream = lines(rng, corpus, LINES)
        s = self.open(protocol)
        i = 0
        while i < len(stream):
            batch = b"".join(line + b"\r\n" for line in stream[i : i + 5])
            i += 5
            try:
                s.setblocking(True)
                s.settimeout(5)
                s.sendall(batch)
                s.setblocking(False)
                alive = self.drain(s)
            except (OSError, ssl.SSLError):
                alive = False
            if not alive:
                s.close()
                s = self.open(protocol)
        s.close()

    def cleanSMTP(self) -> bytes:
        s = connect(self.server.ports["smtp"], "127.0.0.99")
        readUntil(s, rb"\r\n")
        s.sendall(b"EHLO clean\r\n")
        readUntil(s, rb"(?m)^250 [^\r\n]*\r\n")
        s.sendall(b"STARTTLS\r\n")
        readUntil(s, rb"\r\n")
        t = self.server.context.wrap_socket(s, server_hostname="localhost")
        replies = b""
        for line in [
            b"EHLO clean", b"CLIENTID UUID 0f6a2c1e-3b7d-4e55-8f0a-6d2b9c1e7a44", b"AUTH PLAIN " + _AUTH,
            b"MAIL FROM:<bob@example.test>", b"RCPT TO:<alice@example.test>", b"DATA",
            b"Subject: after the fuzz\r\n\r\nstill here\r\n.", b"QUIT",
        ]:
            t.sendall(line + b"\r\n")
            replies += readUntil(t, rb"(?m)^\d{3} [^\r\n]*\r\n")
        t.close()
        return replies

    def cleanIMAP(self) -> bytes:
        s = self.server.context.wrap_socket(connect(self.server.ports["imaps"], "127.0.0.99"), server_hostname="localhost")
        readUntil(s, rb"\r\n")
        replies = b""
        for tag, line in [
            (b"c", b"CLIENTID UUID 0f6a2c1e"), (b"l", b'LOGIN "alice@example.test" "' + PASSWORD.encode() + b'"'),
            (b"s", b"SELECT INBOX"), (b"f", b"FETCH 1:* (BODY.PEEK[TEXT])"), (b"o", b"LOGOUT"),
        ]:
            s.sendall(tag + b" " + line + b"\r\n")
            replies += readUntil(s, rb"(?m)^" + tag + rb" [^\r\n]*\r\n")
        s.close()
        return replies

    def test_fuzz(self) -> None:
        rng = random.Random(SEED)
        started = time.monotonic()
        try:
            for protocol, corpus in [
                ("smtp", SMTP_CORPUS), ("smtps", SMTP_CORPUS), ("imap", IMAP_CORPUS), ("imaps", IMAP_CORPUS),
            ]:
                self.blast(protocol, corpus, rng)
            self.assertIsNone(self.server.process.poll(), "server died")
            smtp = self.cleanSMTP()
            self.assertIn(b"\r\n250 Delivery in progress\r\n", smtp)
            imap = self.cleanIMAP()
            self.assertIn(b"c OK CLIENTID completed", imap)
            self.assertIn(b"still here", imap)
            self.assertIn(b"f OK FETCH completed", imap)
            log = self.server.log()
            for bad in ("Traceback", "Unhandled", "Unexpected error", "Server error"):
                if bad in log:
                    at = log.index(bad)
                    self.fail(f"server log has {bad!r}:\n{log[max(0, at - 1500) : at + 2500]}")
        except BaseException as e:
            raise AssertionError(f"fuzz seed {SEED} failed: {e}") from e
        elapsed = time.monotonic() - started
        print(f"fuzz: {4 * LINES} lines in {self.sessions} sessions, {elapsed:.1f} s")
