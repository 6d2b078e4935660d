"""
Tests for L{clientid_twisted.server.relayconfig}: the C{[relay]} table,
checked at start-up with errors that name the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.assembly import assembleServer
from clientid_twisted.server.config import ConfigError
from clientid_twisted.server.relayconfig import RelaySettings, parseRelayConfig
from clientid_twisted.testing import throwawayCertificate

SOURCE = Path("/etc/clientid/clientid.toml")


class RelayConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp())
        self.dataDir.mkdir()
        (self.dataDir / "relay-password").write_text("s3cret\n")
        (self.dataDir / "ca.pem").write_bytes(throwawayCertificate().certificatePEM)

    def parse(self, **relay: Any) -> RelaySettings | None:
        return parseRelayConfig({"relay": relay}, self.dataDir, SOURCE)

    def error(self, **relay: Any) -> str:
        return str(self.assertRaises(ConfigError, self.parse, **relay))

    def test_absent(self) -> None:
        self.assertIsNone(parseRelayConfig({}, self.dataDir, SOURCE))

    def test_implicitTLS(self) -> None:
        settings = self.parse(
            smarthost="tls:smtp.example.net:465",
            username="relay",
            password_file="relay-password",
        )
        assert settings is not None
        self.assertEqual(settings.host, "smtp.example.net")
        self.assertEqual(settings.smarthost.tcpDescription, "tcp:smtp.example.net:465")
        self.assertTrue(settings.smarthost.implicitTLS)
        self.assertFalse(settings.starttls)
        self.assertEqual(settings.password, b"s3cret")
        self.assertEqual(settings.maxQueueDays, 5.0)
        self.assertNotIn("s3cret", repr(settings))

    def test_starttls(self) -> None:
        settings = self.parse(
            smarthost="tcp:host=smtp.example.net:port=587:timeout=10",
            starttls=True,
            ca="ca.pem",
            max_queue_days=2,
        )
        assert settings is not None
        self.assertEqual(settings.host, "smtp.example.net")
        self.assertFalse(settings.smarthost.implicitTLS)
        self.assertTrue(settings.starttls)
        self.assertEqual(settings.caFile, self.dataDir / "ca.pem")
        self.assertEqual(settings.maxQueueSeconds, 2 * 86400)

    def test_errors(self) -> None:
        """
        Each mistake names the file, the table and the key.
        """
        cases = [
            (dict(), "[relay] smarthost is required"),
            (dict(smarthost="unix:/run/smtp"), "[relay] smarthost is invalid"),
            (dict(smarthost="tcp:host=h"), "names no port"),
            (dict(smarthost="tls:h:465:trustRoots=/x"), "trustRoots= is not supported here; set [relay] ca instead"),
            (dict(smarthost="tls:h:465", starttls=True), "[relay] starttls is for a tcp:"),
            (dict(smarthost="tls:h:465", starttls="yes"), "[relay] starttls must be true or false"),
            (dict(smarthost="tls:h:465", username="u"), "[relay] password_file is required"),
            (dict(smarthost="tls:h:465", password_file="relay-password"), "[relay] username is required"),
            (
                dict(smarthost="tcp:h:25", username="u", password_file="relay-password"),
                "[relay] password_file would send the password in clear",
            ),
            (dict(smarthost="tls:h:465", username="u", password_file="missing"), "[relay] password_file cannot be read"),
            (dict(smarthost="tls:h:465", ca="missing.pem"), "[relay] ca cannot be read"),
            (dict(smarthost="tls:h:465", ca="relay-password"), "[relay] ca holds no PEM certificate"),
            (dict(smarthost="tls:h:465", max_queue_days=0), "[relay] max_queue_days must be more than 0"),
            (dict(smarthost="tls:h:465", max_queue_days="5"), "[relay] max_queue_days must be a number"),
            (dict(smarthost="tls:h:465", smarthots="x"), "[relay] unknown key 'smarthots'"),
        ]
        for relay, expected in cases:
            message = self.error(**relay)
            self.assertIn(expected, message, relay)
            self.assertTrue(message.startswith(f"{SOURCE}: "), message)

    def test_emptyPassword(self) -> None:
        (self.dataDir / "relay-password").write_text("\n")
        self.assertIn(
            "[relay] password_file is empty",
            self.error(smarthost="tls:h:465", username="u", password_file="relay-password"),
        )

    def test_serverStops(self) -> None:
        """
        The server does not start with a broken C{[relay]} table.
        """
        (self.dataDir / "clientid.toml").write_text('[relay]\nsmarthost = "smtp.example.net"\n')
        error = self.assertRaises(ConfigError, assembleServer, self.dataDir)
        self.assertIn("clientid.toml: [relay] smarthost is invalid", str(error))

    def test_notWithSMTPBackend(self) -> None:
        """
        With an SMTP backend the backend relays; a C{[relay]} table beside
        it is a contradiction, not silently ignored.
        """
        (self.dataDir / "clientid.toml").write_text(
            '[relay]\nsmarthost = "tls:smtp.example.net:465"\n'
            '[gateway]\nsmtp_backend = "tcp:host=127.0.0.1:port=587"\n'
        )
        error = self.assertRaises(ConfigError, assembleServer, self.dataDir)
        self.assertIn("[relay] is for the built-in submission server", str(error))
