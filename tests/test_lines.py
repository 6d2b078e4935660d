"""
Tests for L{clientid_twisted.server.lines.BoundedLineOnlyReceiver}.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.lines import BoundedLineOnlyReceiver


class Recorder(BoundedLineOnlyReceiver):
    MAX_LENGTH = 10

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []

    def lineReceived(self, line: bytes) -> None:
        self.events.append(("line", line))
        if line == b"QUIT":
            self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        self.events.append(("long", line))


class BoundedLinesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.receiver = Recorder()
        self.receiver.makeConnection(StringTransport())

    def feed(self, *chunks: bytes) -> list[tuple[str, bytes]]:
        for chunk in chunks:
            self.receiver.dataReceived(chunk)
        return self.receiver.events

    def test_lines(self) -> None:
        self.assertEqual(
            self.feed(b"one\r\ntw", b"o\r\n\r\n"),
            [("line", b"one"), ("line", b"two"), ("line", b"")],
        )

    def test_longCompleteLine(self) -> None:
        """
        A too-long line is reported once, and the lines after it in the
        same read still arrive (Twisted's drops them).
        """
        self.assertEqual(
            self.feed(b"x" * 11 + b"\r\nnext\r\n"),
            [("long", b"x" * 11), ("line", b"next")],
        )

    def test_longLineNeverBuffered(self) -> None:
        """
        A line that never ends is discarded as it arrives: the buffer never
        holds more than the limit, and the line is reported when its end
        comes.
        """
        for _ in range(1000):
            self.receiver.dataReceived(b"y" * 1000)
            self.assertLessEqual(len(self.receiver._buffer), 10)
        self.assertTrue(self.receiver.hasPartialLine())
        self.assertEqual(self.feed(b"tail\r\nok\r\n"), [("long", b"tail"), ("line", b"ok")])
        self.assertFalse(self.receiver.hasPartialLine())

    def test_crlfSplitAfterLongLine(self) -> None:
        self.assertEqual(self.feed(b"z" * 20 + b"\r", b"\nok\r\n"), [("long", b""), ("line", b"ok")])

    def test_stopsAfterClose(self) -> None:
        """
        Lines after one that closed the connection are ignored.
        """
        self.assertEqual(self.feed(b"QUIT\r\nNOOP\r\n"), [("line", b"QUIT")])
