# -*- test-case-name: tests.test_proxy_protocol -*-
"""
Behind a load balancer speaking the PROXY protocol (C{--smtp
haproxy:tcp:...}, Twisted's C{haproxy:} endpoint), the server sees and logs
the real client's address, and STARTTLS through the wrapper counts as TLS
(AUTH and CLIENTID are offered after it).  A real C{twistd clientid-mail}
child, its clients sending the PROXY v1 header as HAProxy does.
"""

from __future__ import annotations

import base64
import socket
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.runningserver import PASSWORD, RunningServer, canRunServer, connect, readUntil

CLIENT = "203.0.113.9"
"""The address the proxy says the client has (TEST-NET-3, never dialled)."""

TOKEN = b"0f6a2c1e-3b7d-4e55-8f0a-6d2b9c1e7a44"


class ProxyProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        self.server = RunningServer(
            Path(self.mktemp()),
            "[server]\nauth_failure_delay_seconds = 0\n",
            ("smtp", "smtps", "imap"),
            listen="haproxy:tcp:0:interface=127.0.0.1",
        )
        self.addCleanup(self.server.stop)

    def proxied(self, name: str) -> socket.socket:
        s = connect(self.server.ports[name])
        s.sendall(f"PROXY TCP4 {CLIENT} 127.0.0.1 40000 {self.server.ports[name]}\r\n".encode())
        return s

    def test_smtpStartTLS(self) -> None:
        s = self.proxied("smtp")
        readUntil(s, rb"^220 [^\r\n]*\r\n")
        s.sendall(b"EHLO client.example\r\n")
        self.assertIn(f"Hello {CLIENT}".encode(), readUntil(s, rb"(?m)^250 [^\r\n]*\r\n"))
        s.sendall(b"STARTTLS\r\n")
        readUntil(s, rb"(?m)^220 [^\r\n]*\r\n")
        t = self.server.context.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"EHLO client.example\r\n")
        ehlo = readUntil(t, rb"(?m)^250 [^\r\n]*\r\n")
        self.assertIn(b"250-CLIENTID\r\n", ehlo)
        self.assertIn(b"250-AUTH PLAIN LOGIN\r\n", ehlo)
        t.sendall(b"CLIENTID UUID " + TOKEN + b"\r\n")
        self.assertEqual(readUntil(t, rb"\r\n"), b"250 OK\r\n")
        plain = base64.b64encode(b"\0alice@example.test\0" + PASSWORD.encode())
        t.sendall(b"AUTH PLAIN " + plain + b"\r\n")
        self.assertTrue(readUntil(t, rb"\r\n").startswith(b"235 "))
        t.close()
        log = self.server.stop()
        self.assertIn(f"AUTH succeeded for alice@example.test from {CLIENT} (CLIENTID type=UUID fingerprint=", log)

    def test_smtpImplicitTLS(self) -> None:
        t = self.server.context.wrap_socket(self.proxied("smtps"), server_hostname="localhost")
        readUntil(t, rb"^220 [^\r\n]*\r\n")
        t.sendall(b"EHLO client.example\r\n")
        self.assertIn(f"Hello {CLIENT}".encode(), readUntil(t, rb"(?m)^250 [^\r\n]*\r\n"))
        t.close()

    def test_imapStartTLS(self) -> None:
        s = self.proxied("imap")
        readUntil(s, rb"^\* OK[^\r\n]*\r\n")
        s.sendall(b"s STARTTLS\r\n")
        readUntil(s, rb"(?m)^s [^\r\n]*\r\n")
        t = self.server.context.wrap_socket(s, server_hostname="localhost")
        t.sendall(b"a CAPABILITY\r\n")
        self.assertIn(b" CLIENTID", readUntil(t, rb"(?m)^a [^\r\n]*\r\n"))
        t.sendall(b"b CLIENTID UUID " + TOKEN + b"\r\n")
        self.assertIn(b"b OK", readUntil(t, rb"(?m)^b [^\r\n]*\r\n"))
        t.sendall(b'c LOGIN "alice@example.test" "' + PASSWORD.encode() + b'"\r\n')
        self.assertIn(b"c OK", readUntil(t, rb"(?m)^c [^\r\n]*\r\n"))
        t.close()
        log = self.server.stop()
        self.assertIn(f"LOGIN succeeded for alice@example.test from {CLIENT} (CLIENTID type=UUID", log)

    def test_noHeader(self) -> None:
        """
        A connection that does not start with a PROXY header (someone
        reaching the port directly) is closed at its first line, which is
        not run (the greeting has gone out already: Twisted's wrapper
        connects the protocol before the header arrives).
        """
        s = connect(self.server.ports["smtp"], timeout=5)
        s.sendall(b"EHLO client.example\r\n")
        received = readUntil(s, rb"(?!)")
        s.close()
        self.assertNotIn(b"250", received)
        log = self.server.stop()
        self.assertNotIn("Traceback", log)
