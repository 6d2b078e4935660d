"""
Tests for the gateway's configuration: the C{[gateway]} table and the
C{--imap-backend} / C{--smtp-backend} options.
"""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.gateway.config import (
    GatewayConfig,
    parseBackendAddress,
    parseGatewayConfig,
)
from clientid_twisted.server.config import ConfigError
from clientid_twisted.server.tap import OptionError, Options


class BackendAddressTests(SynchronousTestCase):
    """
    A backend is a tcp: or tls: client endpoint with a host and a port.
    """

    def test_tcp(self) -> None:
        for description in ("tcp:host=127.0.0.1:port=143", "tcp:127.0.0.1:143"):
            address = parseBackendAddress(description)
            self.assertEqual(address.host, "127.0.0.1")
            self.assertFalse(address.implicitTLS)
            self.assertEqual(address.tcpDescription, description)

    def test_tls(self) -> None:
        address = parseBackendAddress("tls:mail.example.net:993")
        self.assertTrue(address.implicitTLS)
        self.assertEqual(address.host, "mail.example.net")
        self.assertEqual(address.tcpDescription, "tcp:mail.example.net:993")

    def test_invalid(self) -> None:
        cases = {
            "udp:1": "not a tcp: or tls:",
            "tcp:host=h": "names no port",
            "tcp:port=143": "names no host",
            "tcp:host=h:port=x": "invalid literal",
            "tls:h:993:trustRoots=/etc/ssl": "backend_ca",
            "": "not a tcp: or tls:",
        }
        for description, message in cases.items():
            error = self.assertRaises(ValueError, parseBackendAddress, description)
            self.assertIn(message, str(error), description)


class GatewayTableTests(SynchronousTestCase):
    """
    C{[gateway]} is checked strictly, with errors naming file and key.
    """

    def test_defaults(self) -> None:
        config = parseGatewayConfig({}, "c.toml")
        self.assertEqual(config, GatewayConfig())
        self.assertFalse(config.enabled)
        self.assertEqual(config.timeoutSeconds, 10.0)
        self.assertTrue(config.verify)

    def test_full(self) -> None:
        config = parseGatewayConfig(
            {
                "gateway": {
                    "imap_backend": "tcp:host=127.0.0.1:port=143",
                    "smtp_backend": "tcp:host=127.0.0.1:port=587",
                    "backend_starttls": True,
                    "backend_ca": "/etc/ca.pem",
                    "backend_timeout_seconds": 2.5,
                }
            }
        )
        self.assertTrue(config.enabled)
        assert config.imapBackend is not None and config.smtpBackend is not None
        self.assertEqual(config.imapBackend.host, "127.0.0.1")
        self.assertEqual(config.smtpBackend.description, "tcp:host=127.0.0.1:port=587")
        self.assertTrue(config.starttls)
        self.assertEqual(config.caPath, "/etc/ca.pem")
        self.assertEqual(config.timeoutSeconds, 2.5)

    def test_errorsNameFileAndKey(self) -> None:
        cases = [
            ({"imap_backend": "udp:1"}, "[gateway] imap_backend is invalid"),
            ({"smtp_backend": 587}, "[gateway] smtp_backend must be a string"),
            ({"backend_starttls": "yes"}, "[gateway] backend_starttls must be true or false"),
            ({"backend_verify": 0}, "[gateway] backend_verify must be true or false"),
            ({"backend_timeout_seconds": 0}, "[gateway] backend_timeout_seconds must be a positive"),
            ({"backend_timout_seconds": 3}, "[gateway] unknown key 'backend_timout_seconds'"),
            (
                {"imap_backend": "tls:h:993", "backend_starttls": True},
                "[gateway] backend_starttls cannot be used with the implicit TLS",
            ),
            ({"backend_ca": "/x", "backend_verify": False}, "[gateway] backend_ca is set"),
        ]
        for table, message in cases:
            error = self.assertRaises(
                ConfigError, parseGatewayConfig, {"gateway": table}, "/etc/clientid.toml"
            )
            self.assertIn("/etc/clientid.toml: " + message, str(error))
        error = self.assertRaises(ConfigError, parseGatewayConfig, {"gateway": 1}, "f.toml")
        self.assertIn("f.toml: 'gateway' must be a table", str(error))

    def test_optionsOverrideFile(self) -> None:
        config = parseGatewayConfig(
            {"gateway": {"imap_backend": "tcp:host=a:port=1", "smtp_backend": "tcp:host=b:port=2"}}
        )
        merged = config.withOptions(imapBackend="tls:c:993")
        assert merged.imapBackend is not None and merged.smtpBackend is not None
        self.assertEqual(merged.imapBackend.description, "tls:c:993")
        self.assertEqual(merged.smtpBackend.description, "tcp:host=b:port=2")
        self.assertEqual(config.withOptions(), config)


class BackendOptionsTests(SynchronousTestCase):
    """
    C{--imap-backend} and C{--smtp-backend} take client endpoint strings,
    checked at once, and win over the file.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaultNone(self) -> None:
        options = self.parse()
        self.assertIsNone(options["imap-backend"])
        self.assertIsNone(options["smtp-backend"])

    def test_valid(self) -> None:
        options = self.parse(
            "--imap-backend", "tcp:host=127.0.0.1:port=143", "--smtp-backend", "tls:mx:465"
        )
        self.assertEqual(options["imap-backend"], "tcp:host=127.0.0.1:port=143")
        self.assertEqual(options["smtp-backend"], "tls:mx:465")

    def test_invalid(self) -> None:
        error = self.assertRaises(OptionError, self.parse, "--imap-backend", "tcp:1")
        self.assertIn("--imap-backend", str(error))
        error = self.assertRaises(OptionError, self.parse, "--smtp-backend", "unix:/x")
        self.assertIn("--smtp-backend", str(error))

    def test_assemblyMergesOptionsOverFile(self) -> None:
        from clientid_twisted.server.assembly import assembleServer

        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text(
            '[gateway]\nimap_backend = "tcp:host=127.0.0.1:port=1"\n'
            'smtp_backend = "tcp:host=127.0.0.1:port=2"\nbackend_timeout_seconds = 3\n'
        )
        server = self.successResultOf(
            assembleServer(dataDir, imapBackend="tcp:host=127.0.0.1:port=9")
        )
        self.addCleanup(server.authentication.service.store.close)
        assert server.gateway.imapBackend is not None and server.gateway.smtpBackend is not None
        self.assertEqual(server.gateway.imapBackend.description, "tcp:host=127.0.0.1:port=9")
        self.assertEqual(server.gateway.smtpBackend.description, "tcp:host=127.0.0.1:port=2")
        self.assertEqual(server.gateway.timeoutSeconds, 3.0)
