# -*- test-case-name: tests.test_walkthroughs -*-
"""
The walk-throughs in README.md and docs/, replayed against a running
C{twistd clientid-mail}: every C{C:} line is sent as typed (after the
STARTTLS that C{openssl s_client -starttls} does), and the replies must be
the C{S:} lines, byte for byte.  The log block's lines must appear in the
server's log, with any fingerprint (it is keyed per installation).

A transcript is a fenced block after a C{<!-- transcript: smtp -->} or
C{<!-- transcript: imap -->} comment; a block of C{C:}/C{S:} lines without
one fails the test, so none can drift unreplayed.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted.server.users import UserDatabase
from tests.runningserver import RunningServer, canRunServer, connect, readUntil

ROOT = Path(__file__).resolve().parent.parent

_BLOCK = re.compile(r"(?:<!-- (?P<marker>[a-z]+)(?:: (?P<protocol>[a-z]+))? -->\n)?```[a-z]*\n(?P<body>.*?)```", re.S)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def transcripts(text: str) -> list[tuple[str, list[str]]]:
    """
    The marked transcripts of a Markdown text: (protocol, lines).

    @raise AssertionError: For a C{C:}/C{S:} block without a marker.
    """
    found = []
    for match in _BLOCK.finditer(text):
        lines = match.group("body").splitlines()
        dialogue = bool(lines) and all(line.startswith(("C: ", "S: ")) for line in lines)
        if match.group("marker") == "transcript":
            found.append((match.group("protocol"), lines))
        elif dialogue:
            raise AssertionError(f"a C:/S: block without a <!-- transcript: PROTOCOL --> marker:\n{lines[0]}")
    return found


def logBlocks(text: str) -> list[list[str]]:
    return [m.group("body").splitlines() for m in _BLOCK.finditer(text) if m.group("marker") == "log"]


def _startTLS(server: RunningServer, protocol: str) -> socket.socket:
    """
    What C{openssl s_client -starttls PROTOCOL} does before the user types:
    the greeting, EHLO or CAPABILITY, STARTTLS, the handshake.
    """
    s = connect(server.ports[protocol])
    if protocol == "smtp":
        readUntil(s, rb"^220 [^\r\n]*\r\n")
        s.sendall(b"EHLO openssl.client.net\r\n")
        readUntil(s, rb"(?m)^250 [^\r\n]*\r\n")
        s.sendall(b"STARTTLS\r\n")
        readUntil(s, rb"(?m)^220 [^\r\n]*\r\n")
    else:
        readUntil(s, rb"^\* OK[^\r\n]*\r\n")
        s.sendall(b". CAPABILITY\r\n. STARTTLS\r\n")
        readUntil(s, rb"(?m)^\. OK [^\r\n]*\r\n\. OK [^\r\n]*\r\n")
    return server.context.wrap_socket(s, server_hostname="localhost")


def replay(server: RunningServer, protocol: str, lines: list[str]) -> list[str]:
    """
    Send the C{C:} lines; return the transcript as it happened, in the same
    form (C{C:} lines as sent, C{S:} lines as received).
    """
    s = _startTLS(server, protocol)
    happened = []
    try:
        for line in lines:
            if not line.startswith("C: "):
                continue
            command = line[3:]
            happened.append(line)
            s.sendall(command.encode() + b"\r\n")
            if protocol == "smtp":
                end = rb"(?m)^\d{3} [^\r\n]*\r\n"
            else:
                tag = re.escape(command.split(" ", 1)[0].encode())
                end = rb"(?m)^" + tag + rb" [^\r\n]*\r\n"
            reply = readUntil(s, end)
            happened += ["S: " + r for r in reply.decode().split("\r\n") if r]
    finally:
        s.close()
    return happened


class WalkthroughTests(SynchronousTestCase):
    """
    Each document's transcripts, replayed.
    """

    def setUp(self) -> None:
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        if not (ROOT / "README.md").exists():
            raise SkipTest("not running from a source checkout")
        self.server = RunningServer(Path(self.mktemp()), "[server]\nauth_failure_delay_seconds = 0\n", ("smtp", "imap"))
        self.addCleanup(self.server.stop)
        UserDatabase(self.server.dataDir / "users.json").setPassword("alice@example.test", "hunter2")

    def test_transcripts(self) -> None:
        replayed = 0
        for document in documents():
            text = document.read_text()
            for protocol, lines in transcripts(text):
                with self.subTest(document=document.name, protocol=protocol):
                    self.assertEqual(replay(self.server, protocol, lines), lines)
                    replayed += 1
        self.assertGreaterEqual(replayed, 2)
        self.checkLog()

    def checkLog(self) -> None:
        """
        The documented log lines are what the server logged, whatever the
        fingerprint; a login without CLIENTID says so.
        """
        log = self.server.log()
        blocks = [block for document in documents() for block in logBlocks(document.read_text())]
        self.assertTrue(blocks)
        for block in blocks:
            for line in block:
                pattern = re.sub(r"fingerprint=[0-9a-f]{16}", "fingerprint=[0-9a-f]{16}", re.escape(line))
                self.assertRegex(log, pattern)
        s = _startTLS(self.server, "smtp")
        s.sendall(b"EHLO client.example\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABodW50ZXIy\r\n")
        self.assertIn(b"235 ", readUntil(s, rb"(?m)^235 [^\r\n]*\r\n"))
        s.close()
        self.server.stop()
        log = self.server.log()
        self.assertIn("AUTH succeeded for alice@example.test from 127.0.0.1 (without CLIENTID)", log)
        self.assertNotIn("=None", log)


class TranscriptParsingTests(SynchronousTestCase):
    """
    An unmarked C{C:}/C{S:} block cannot hide from the replay.
    """

    def test_unmarked(self) -> None:
        self.assertRaises(AssertionError, transcripts, "text\n\n```\nC: EHLO x\nS: 250 x\n```\n")

    def test_marked(self) -> None:
        self.assertEqual(
            transcripts("<!-- transcript: smtp -->\n```\nC: NOOP\nS: 250 OK\n```\n"),
            [("smtp", ["C: NOOP", "S: 250 OK"])],
        )

    def test_everyDocumentParses(self) -> None:
        for document in documents():
            transcripts(document.read_text())


class BareLineFeedTests(SynchronousTestCase):
    """
    Lines end in CRLF (RFC 5321 section 2.3.8, RFC 3501 section 2.2): a
    bare LF does not end a command, so a client that sends one (openssl
    s_client without -crlf) gets no reply until its CRLF.  Deliberately:
    taking LF alone as a line end is what SMTP smuggling abuses (a
    message's end written as LF.LF), and a submission server has no
    legacy clients that need it (README, A session; docs/limits.md).
    """

    def setUp(self) -> None:
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        self.server = RunningServer(Path(self.mktemp()), "", ("smtp", "imap"))
        self.addCleanup(self.server.stop)

    def check(self, protocol: str, greeting: bytes, command: bytes, answered: bytes) -> None:
        s = connect(self.server.ports[protocol], timeout=1)
        readUntil(s, greeting)
        s.sendall(command + b"\n")
        self.assertEqual(readUntil(s, rb"\r\n"), b"")  # nothing within a second
        s.settimeout(10)
        s.sendall(b"\r\n")
        reply = readUntil(s, rb"\r\n")
        s.close()
        self.assertTrue(reply.startswith(answered), reply)

    def test_smtp(self) -> None:
        # The line "NOOP\n" ends at the CRLF; the LF in it is trailing
        # white space to the command parser.
        self.check("smtp", rb"^220 [^\r\n]*\r\n", b"NOOP", b"250 ")

    def test_imap(self) -> None:
        self.check("imap", rb"^\* OK[^\r\n]*\r\n", b"a NOOP", b"a OK ")
