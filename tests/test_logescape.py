"""
Tests that no client can forge or garble a log line: every client-chosen
string in a log event (user names, EHLO/HELO names, addresses, identity
types, mechanism names) is escaped (L{clientid_twisted._authlog.escapeForLog})
before it is logged.  Each control byte, DEL and non-ASCII bytes go into each
field over the runnable server's SMTP and IMAP sessions and the policy's log
lines; every event, formatted as twistd's text log writes it
(L{formatEventAsClassicLogText}), must stay one line of printable ASCII.
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.logger import formatEventAsClassicLogText, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._authlog import escapeForLog
from clientid_twisted.policy._alerts import Alert, LogAlertObserver
from tests.policyharness import PolicyHarness
from tests.test_guard import _Sessions

HOSTILE = [bytes([b]) for b in [*range(0x00, 0x20), 0x7F, 0x80, 0xC3, 0xFF]]
"""Every control byte, DEL, and bytes that are not ASCII."""

HOSTILE_TEXT = [chr(c) for c in [*range(0x00, 0x20), 0x7F, 0xE9, 0x2028, 0x85]]
"""The same for text fields: control characters, DEL, non-ASCII (also
Unicode's own line separators)."""


class EscapeForLogTests(SynchronousTestCase):
    def test_escapes(self) -> None:
        self.assertEqual(escapeForLog(b"al\nice\x00\\\x7f\xc3\xa9"), "al\\x0aice\\x00\\\\\\x7f\\xc3\\xa9")
        self.assertEqual(escapeForLog("caf\u00e9\r"), "caf\\xc3\\xa9\\x0d")
        self.assertEqual(escapeForLog("alice@example.test"), "alice@example.test")
        self.assertEqual(escapeForLog(None), "-")
        self.assertEqual(escapeForLog("\ud800"), "\\\\ud800")


class _LogCapture:
    """
    Collects every log event while a test runs.
    """

    def captureLog(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)  # type: ignore[attr-defined]
        return events

    def assertOneLineEach(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            text = formatEventAsClassicLogText(event)
            if text is None:
                continue
            body = text[:-1]
            self.assertTrue(text.endswith("\n"), text)  # type: ignore[attr-defined]
            self.assertTrue(  # type: ignore[attr-defined]
                all(0x20 <= ord(c) < 0x7F for c in body),
                f"not one line of printable ASCII: {text!r}",
            )


class ProtocolLogTests(_LogCapture, _Sessions, SynchronousTestCase):
    def test_smtp(self) -> None:
        """
        EHLO names, AUTH user names (PLAIN and LOGIN) and envelope
        addresses with any control or non-ASCII byte are logged escaped.
        """
        events = self.captureLog()
        for byte in HOSTILE:
            client = self.smtp(secure=True)
            if not client.exchange(b"EHLO client" + byte + b"forged").startswith(b"250"):
                client.exchange(b"EHLO client")
            client.exchange(b"AUTH PLAIN " + base64.b64encode(b"\0al" + byte + b"ice\0pw"))
            client.exchange(b"AUTH LOGIN " + base64.b64encode(b"lo" + byte + b"gin"))
            client.exchange(base64.b64encode(b"pw"))
            reply = client.exchange(b"AUTH PLAIN " + base64.b64encode(b"\0bob@example.test\0pw"))
            self.assertTrue(reply.startswith(b"235 "), reply)
            client.exchange(b'MAIL FROM:<"se' + byte + b'nder"@example.test>')
            client.exchange(b"RCPT TO:<bob@example.test>")
            client.exchange(b"DATA")
            client.exchange(b"Subject: x\r\n\r\nbody\r\n.")
        failed = [e for e in events if e.get("authEvent") == "failed"]
        self.assertEqual(len(failed), 2 * len(HOSTILE))
        self.assertIn("al\\x0aice", {e["username"] for e in failed})
        self.assertIn("lo\\x00gin", {e["username"] for e in failed})
        received = [e for e in events if "helo" in e]
        self.assertIn("client\\x0aforged", {e["helo"] for e in received})
        self.assertIn('"se\\x0ander"@example.test', {e["origin"] for e in received})
        self.assertOneLineEach(events)

    def test_imap(self) -> None:
        """
        LOGIN (as a literal, so any byte fits) and AUTHENTICATE PLAIN user
        names with any control or non-ASCII byte are logged escaped.
        """
        events = self.captureLog()
        for byte in HOSTILE:
            client = self.imap()
            name = b"al" + byte + b"ice"
            self.assertTrue(client.exchange(b"a LOGIN {%d}" % (len(name),)).startswith(b"+ "))
            client.exchange(name + b" pw")
            client.exchange(b"b AUTHENTICATE PLAIN " + base64.b64encode(b"\0" + name + b"\0pw"))
        failed = [e for e in events if e.get("authEvent") == "failed"]
        self.assertEqual(len(failed), 2 * len(HOSTILE))
        # A NUL splits a PLAIN message: no user name then ("-").
        self.assertEqual(
            {e["username"] for e in failed},
            {escapeForLog(b"al" + byte + b"ice") for byte in HOSTILE} | {"-"},
        )
        self.assertOneLineEach(events)


class PolicyLogTests(_LogCapture, SynchronousTestCase):
    def test_refusal(self) -> None:
        """
        The policy's refusal line carries the account escaped.
        """
        events = self.captureLog()
        harness = PolicyHarness(self, {"policy": {"require_clientid": True}})
        for char in HOSTILE_TEXT:
            self.assertEqual(harness.login(account=f"al{char}ice@example.test", token=None), "refused")
        refusals = harness.refusals()
        self.assertEqual(len(refusals), len(HOSTILE_TEXT))
        self.assertIn("al\\x0aice@example.test", {e["account"] for e in refusals})
        self.assertOneLineEach(events)

    def test_alert(self) -> None:
        """
        The log alert observer writes account, type and detail escaped.
        """
        events = self.captureLog()
        observer = LogAlertObserver()
        for char in HOSTILE_TEXT:
            text = f"x{char}y"
            observer.alertRaised(
                Alert(kind="new-device", time=0.0, account=text, typeName=text, detail=text)
            )
        self.assertEqual(len(events), len(HOSTILE_TEXT))
        self.assertIn("x\\x0ay", {e["account"] for e in events})
        self.assertOneLineEach(events)
