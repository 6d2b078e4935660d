"""
Tests for L{clientid_twisted.server.limits}: the C{[server]} table, its
defaults, and the errors a wrong key or value gives.
"""

from __future__ import annotations

from pathlib import Path

from attrs import fields

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.assembly import assembleServer
from clientid_twisted.server.config import ConfigError
from clientid_twisted.server.limits import SERVER_KEYS, ServerLimits
from clientid_twisted.server.tap import Options, makeService


class DefaultsTests(SynchronousTestCase):
    """
    The defaults are the issue's contract.
    """

    def test_contract(self) -> None:
        limits = ServerLimits.fromConfig({})
        self.assertEqual(limits, ServerLimits())
        self.assertEqual(limits.idleTimeout, 300)
        self.assertEqual(limits.maxConnections, 2000)
        self.assertEqual(limits.maxConnectionsPerAddress, 50)
        self.assertEqual(limits.maxMessageBytes, 36700160)
        self.assertEqual(limits.maxLiteralBytes, 36700160)
        self.assertEqual(limits.maxErrorsPerSession, 20)
        self.assertEqual(limits.authFailureDelay, 2)

    def test_stages(self) -> None:
        """
        Shorter before the first command and for the handshake, longer
        after an IMAP login (RFC 9051: at least 30 minutes).
        """
        limits = ServerLimits()
        self.assertLess(limits.initialTimeout, limits.idleTimeout)
        self.assertLess(limits.tlsHandshakeTimeout, limits.idleTimeout)
        self.assertLess(limits.commandTimeout, limits.idleTimeout)
        self.assertGreaterEqual(limits.imapIdleTimeout, 1800)

    def test_everyAttributeHasAKey(self) -> None:
        """
        Every limit can be set, and every key is documented in
        docs/limits.md.
        """
        self.assertEqual(len(SERVER_KEYS) - 1, len(fields(ServerLimits)))
        docs = (Path(__file__).parent.parent / "docs" / "limits.md").read_text()
        for key in SERVER_KEYS:
            self.assertIn(f"`{key}`", docs)


class FromConfigTests(SynchronousTestCase):
    """
    L{ServerLimits.fromConfig} reads every key, and names the key in every
    error.
    """

    def test_allKeys(self) -> None:
        table = {
            "idle_timeout_seconds": 301,
            "imap_idle_timeout_seconds": 1801,
            "initial_timeout_seconds": 61,
            "tls_handshake_timeout_seconds": 31,
            "command_timeout_seconds": 2.5,
            "data_timeout_seconds": 601,
            "max_connections": 2001,
            "max_connections_per_address": 51,
            "max_tls_handshakes": 501,
            "max_tls_handshakes_per_address": 21,
            "max_message_bytes": 2048,
            "max_literal_bytes": 4096,
            "max_recipients": 5,
            "imap_max_line_bytes": 8192,
            "max_errors_per_session": 21,
            "auth_failure_delay_seconds": 0,
            "shutdown_grace_seconds": 0,
            "sender_login_match": False,
            "hostname": "mail.example.org",
        }
        limits = ServerLimits.fromConfig(table)
        self.assertEqual(
            limits,
            ServerLimits(
                idleTimeout=301,
                imapIdleTimeout=1801,
                initialTimeout=61,
                tlsHandshakeTimeout=31,
                commandTimeout=2.5,
                dataTimeout=601,
                maxConnections=2001,
                maxConnectionsPerAddress=51,
                maxTLSHandshakes=501,
                maxTLSHandshakesPerAddress=21,
                maxMessageBytes=2048,
                maxLiteralBytes=4096,
                maxRecipients=5,
                imapMaxLineBytes=8192,
                maxErrorsPerSession=21,
                authFailureDelay=0,
                shutdownGrace=0,
                senderLoginMatch=False,
            ),
        )

    def assertRefused(self, table: dict[str, object], *fragments: str) -> str:
        error = self.assertRaises(ConfigError, ServerLimits.fromConfig, table, "x.toml")
        message = str(error)
        self.assertTrue(message.startswith("x.toml: [server] "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message

    def test_unknownKey(self) -> None:
        message = self.assertRefused({"max_conections": 5}, "max_conections", "unknown key")
        self.assertIn("max_connections", message)

    def test_wrongTypes(self) -> None:
        self.assertRefused({"idle_timeout_seconds": "300"}, "idle_timeout_seconds", "'300'")
        self.assertRefused({"max_connections": 2.5}, "max_connections", "integer")
        self.assertRefused({"max_connections": True}, "max_connections")
        self.assertRefused({"auth_failure_delay_seconds": [1]}, "auth_failure_delay_seconds")
        self.assertRefused({"hostname": 5}, "hostname", "string")
        self.assertRefused({"sender_login_match": 1}, "sender_login_match", "true or false")

    def test_outOfRange(self) -> None:
        self.assertRefused({"idle_timeout_seconds": 0}, "idle_timeout_seconds", "greater than 0")
        self.assertRefused({"max_errors_per_session": 0}, "max_errors_per_session")
        self.assertRefused({"max_message_bytes": 10}, "max_message_bytes", "1024")
        self.assertRefused({"imap_max_line_bytes": 1000}, "imap_max_line_bytes", "8192")
        self.assertRefused({"auth_failure_delay_seconds": -1}, "auth_failure_delay_seconds")

    def test_delayZero(self) -> None:
        self.assertEqual(ServerLimits.fromConfig({"auth_failure_delay_seconds": 0}).authFailureDelay, 0)


class WiringTests(SynchronousTestCase):
    """
    The data directory's C{clientid.toml} reaches both factories, which
    share one connection count; a bad table stops start-up with a message.
    """

    def test_assembled(self) -> None:
        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text("[server]\nmax_errors_per_session = 7\n")
        server = self.successResultOf(assembleServer(dataDir))
        self.addCleanup(server.authentication.store.close)
        self.assertEqual(server.limits.maxErrorsPerSession, 7)
        self.assertIs(server.smtpFactory.limits, server.limits)
        self.assertIs(server.imapFactory.limits, server.limits)
        self.assertIs(server.smtpFactory.limiter, server.limiter)
        self.assertIs(server.imapFactory.limiter, server.limiter)
        smtp = server.smtpFactory.buildProtocol(None)
        self.assertEqual(smtp.limits.maxErrorsPerSession, 7)

    def test_badTableStopsStart(self) -> None:
        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text("[server]\nmax_connections = \"lots\"\n")
        options = Options()
        options.parseOptions(["--data-dir", str(dataDir), "--smtp", "tcp:0"])
        error = self.assertRaises(SystemExit, makeService, options)
        self.assertTrue(str(error).startswith("clientid-mail: "), str(error))
        self.assertIn("[server] max_connections", str(error))
        self.assertIn("clientid.toml", str(error))
