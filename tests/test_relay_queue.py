"""
Tests for L{clientid_twisted.server.relayqueue}: Twisted's relay queue made
durable, with JSON envelopes that carry the retry state.
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from zope.interface.verify import verifyObject

from twisted.internet.task import Clock
from twisted.mail import relaymanager, smtp
from twisted.mail.interfaces import IMessageSMTP
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server import relayqueue
from clientid_twisted.server.relayqueue import RelayQueue, isMessageID

NOW = 1700000000.0


class QueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.directory = Path(self.mktemp()).resolve() / "queue"
        self.queue = RelayQueue(self.directory, clock=self.clock)

    def test_isTwistedQueue(self) -> None:
        self.assertIsInstance(self.queue, relaymanager.Queue)
        self.assertEqual(self.directory.stat().st_mode & 0o777, 0o700)

    def test_message(self) -> None:
        """
        Lines arrive in C{ID-C}; at the end the data is C{ID-D} (LF line
        ends, as Twisted's relayer sends it) and the envelope C{ID-H} JSON.
        """
        message = self.queue.newMessage("a@example.test", "Bob@Remote.test", "a@example.test")
        verifyObject(IMessageSMTP, message)
        message.lineReceived(b"Received: from x\n\tby y")
        message.lineReceived(b"Subject: s\r")
        message.lineReceived(b"")
        message.lineReceived(b"body")
        self.assertTrue(message.temporaryPath.exists())
        result: list[Any] = []
        message.eomReceived().addCallback(result.append)
        self.assertEqual(result, [message.entry.id])
        self.assertFalse(message.temporaryPath.exists())
        self.assertEqual(
            message.finalPath.read_bytes(), b"Received: from x\n\tby y\nSubject: s\n\nbody\n"
        )
        envelope = json.loads(message.envelopePath.read_bytes())
        self.assertEqual(envelope["from"], "a@example.test")
        self.assertEqual(envelope["to"], "Bob@Remote.test")
        self.assertEqual(envelope["queued"], NOW)
        self.assertEqual(envelope["attempts"], 0)
        self.assertEqual(self.queue.getEnvelope(message.entry.id), ["a@example.test", "Bob@Remote.test"])
        self.assertIn(message.entry.id, self.queue.waiting)

    def test_durableBeforeAcknowledged(self) -> None:
        """
        The data and the envelope are synced, and the directory after the
        rename, before L{eomReceived} fires (the server's C{250}).
        """
        synced: list[str] = []
        realFsync = os.fsync

        def fsync(fd: int) -> None:
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
            realFsync(fd)

        self.patch(relayqueue.os, "fsync", fsync)
        import clientid_twisted.server.files as files

        self.patch(files.os, "fsync", fsync)
        message = self.queue.newMessage("a@example.test", "b@remote.test", None)
        message.lineReceived(b"x")
        fired: list[Any] = []
        message.eomReceived().addCallback(fired.append)
        self.assertEqual(len(fired), 1)
        base = str(self.directory / message.entry.id)
        self.assertEqual(synced, [base + "-C", base + "-T", str(self.directory)])

    def test_diskFull(self) -> None:
        """
        A full disk while the message arrives is C{452 4.3.1} (temporary,
        as for local delivery), and the partial file is gone.
        """
        message = self.queue.newMessage("a@example.test", "b@remote.test", None)

        class FullDisk:
            def write(self, data: bytes) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            def close(self) -> None:
                pass

        message._file = FullDisk()  # type: ignore[assignment]
        error = self.assertRaises(smtp.SMTPServerError, message.lineReceived, b"x")
        self.assertEqual(error.code, 452)
        self.assertEqual(list(self.directory.iterdir()), [])
        self.assertEqual(self.queue.entries, {})

    def test_lostConnection(self) -> None:
        message = self.queue.newMessage("a@example.test", "b@remote.test", None)
        message.lineReceived(b"partial")
        message.connectionLost()
        self.assertEqual(list(self.directory.iterdir()), [])
        self.assertEqual(self.queue.entries, {})

    def test_readAtStart(self) -> None:
        message = self.queue.newMessage("a@example.test", "b@remote.test", "a@example.test")
        message.lineReceived(b"x")
        message.eomReceived()
        again = RelayQueue(self.directory, clock=self.clock)
        self.assertEqual(again.entries, {message.entry.id: message.entry})
        self.assertEqual(list(again.waiting), [message.entry.id])

    def test_unreadableEnvelope(self) -> None:
        """
        A damaged envelope leaves the message in place (for the operator)
        and the rest of the queue working.
        """
        (self.directory / "0123456789abcdef-D").write_bytes(b"x\n")
        (self.directory / "0123456789abcdef-H").write_bytes(b"\x80(pickle?)")
        again = RelayQueue(self.directory, clock=self.clock)
        self.assertEqual(again.entries, {})
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_sweep(self) -> None:
        """
        Partial files older than an hour are removed at start-up; newer
        ones (perhaps still being written) and whole messages stay.
        """
        old = time.time() - 7200
        names = ["00000000aaaaaaaa-C", "00000000bbbbbbbb-T", "00000000cccccccc-H"]
        for name in names:
            (self.directory / name).write_bytes(b"")
            os.utime(self.directory / name, (old, old))
        (self.directory / "00000000dddddddd-C").write_bytes(b"")
        message = self.queue.newMessage("a@example.test", "b@remote.test", None)
        message.eomReceived()
        for path in [message.envelopePath, message.finalPath]:
            os.utime(path, (old, old))
        self.assertEqual(self.queue.sweep(), 3)
        self.assertEqual(
            sorted(p.name for p in self.directory.iterdir()),
            sorted(["00000000dddddddd-C", message.envelopePath.name, message.finalPath.name]),
        )

    def test_remove(self) -> None:
        message = self.queue.newMessage("a@example.test", "b@remote.test", None)
        message.eomReceived()
        self.assertTrue(self.queue.remove(message.entry.id))
        self.assertFalse(self.queue.remove(message.entry.id))
        self.assertEqual(list(self.directory.iterdir()), [])

    def test_messageIDs(self) -> None:
        self.assertTrue(isMessageID("6554d7f0a1b2c3d4e5f6"))
        for bad in ["", "../users.json", "abc", "6554D7F0A1B2C3D4", "6554d7f0a1b2c3d4/x"]:
            self.assertFalse(isMessageID(bad), bad)
