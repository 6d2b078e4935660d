"""
The private Postfix the gateway and relay tests run (L{tests.postfixserver}):
it accepts mail over STARTTLS, delivers it into its maildir byte for byte,
keeps nothing outside its directory, and two of them run side by side.
"""

from __future__ import annotations

import smtplib

from twisted.trial.unittest import SynchronousTestCase

from tests.postfixserver import PostfixServer
from tests.services import silentListener

BODY = b"Subject: fixture\r\n\r\nline one\r\n.leading dot\r\n\xc3\xa9 eight bit\r\n"


def send(server: PostfixServer, recipient: str, body: bytes = BODY) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtpPort, timeout=10) as client:
        client.starttls(context=server.context)
        client.sendmail("sender@elsewhere.example", [recipient], body)


class PostfixServerTests(SynchronousTestCase):
    def test_deliversIntoMaildir(self) -> None:
        """
        A message sent to its MTA port over STARTTLS lands in the
        recipient's maildir with the body unchanged, and its log says so.
        """
        server = PostfixServer().start()
        self.addCleanup(server.cleanUp)
        send(server, "alice@test.example")
        [stored] = server.waitForMessages("alice")
        headers, body = stored.split(b"\n\n", 1)
        self.assertIn(b"Delivered-To: alice@test.example", headers)
        self.assertEqual(body, b"line one\n.leading dot\n\xc3\xa9 eight bit\n")
        server.waitForLog("status=sent (delivered to maildir)")
        self.assertEqual(server.messages("bob"), [])

    def test_refusesOtherDomains(self) -> None:
        """
        Mail for a domain it does not deliver is refused at RCPT: nothing
        leaves the machine.
        """
        server = PostfixServer().start()
        self.addCleanup(server.cleanUp)
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as caught:
            send(server, "someone@elsewhere.example")
        [(code, text)] = caught.exception.recipients.values()
        self.assertEqual(
            (code, text), (554, b"5.7.1 <someone@elsewhere.example>: Relay access denied")
        )

    def test_twoInstances(self) -> None:
        """
        Two instances run at once, each with its own ports and maildirs,
        and cleaning one up stops it and removes its directory without
        touching the other.
        """
        first = PostfixServer().start()
        self.addCleanup(first.cleanUp)
        second = PostfixServer(domain="other.example", mailboxes=["carol"]).start()
        self.addCleanup(second.cleanUp)
        self.assertNotEqual(first.smtpPort, second.smtpPort)
        send(first, "bob@test.example")
        send(second, "carol@other.example")
        self.assertEqual(len(first.waitForMessages("bob")), 1)
        self.assertEqual(len(second.waitForMessages("carol")), 1)
        first.cleanUp()
        self.assertFalse(first.isRunning())
        self.assertFalse(first.directory.exists())
        self.assertTrue(second.isRunning())
        send(second, "carol@other.example")
        self.assertEqual(len(second.waitForMessages("carol", 2)), 2)

    def test_failedStartLeavesNothing(self) -> None:
        """
        A start that fails (here: a port already taken) says why and
        removes the instance's directory.
        """
        server = PostfixServer()
        taken = silentListener(server.smtpPort)
        self.addCleanup(taken.close)
        with self.assertRaises(RuntimeError) as caught:
            server.start()
        self.assertIn("postfix did not start", str(caught.exception))
        self.assertFalse(server.directory.exists())
        self.assertFalse(server.isRunning())
