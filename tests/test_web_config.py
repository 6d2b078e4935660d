"""
Tests for L{clientid_twisted.web.config}.
"""

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.config import ConfigError
from clientid_twisted.web.config import WebConfig, parseWebConfig


class WebConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        self.assertEqual(parseWebConfig({}), WebConfig(None, 86400.0, 900.0))

    def test_values(self) -> None:
        web = parseWebConfig(
            {"web": {"base_url": "https://mail.example.net/", "link_ttl_seconds": 600, "session_idle_seconds": 60}}
        )
        self.assertEqual(web, WebConfig("https://mail.example.net/", 600.0, 60.0))
        self.assertEqual(web.linkBase("ignored", "tcp:8443"), "https://mail.example.net")

    def test_linkBaseFromListener(self) -> None:
        self.assertEqual(
            WebConfig().linkBase("mail.example.test", "tcp:8443:interface=127.0.0.1"),
            "https://mail.example.test:8443",
        )
        self.assertEqual(WebConfig().linkBase("mail.example.test", "tcp:443"), "https://mail.example.test")

    def test_errors(self) -> None:
        for table, words in [
            ({"base_url": "http://mail.example.net"}, "base_url"),
            ({"base_url": "https://mail.example.net/?x=1"}, "base_url"),
            ({"link_ttl_seconds": 0}, "link_ttl_seconds"),
            ({"link_ttl": 5}, "unknown key 'link_ttl'"),
        ]:
            e = self.assertRaises(ConfigError, parseWebConfig, {"web": table}, "clientid.toml")
            self.assertIn(words, str(e))
            self.assertIn("clientid.toml: [web]", str(e))


class WebOptionTests(SynchronousTestCase):
    """
    C{--web} of C{twistd clientid-mail}.
    """

    def options(self, *arguments: str) -> dict:  # type: ignore[type-arg]
        from clientid_twisted.server.tap import Options

        options = Options()
        options.parseOptions(list(arguments))
        return options

    def test_onByDefault(self) -> None:
        from clientid_twisted.server.tap import DEFAULT_WEB_LISTENER

        self.assertEqual(self.options()["web"], [DEFAULT_WEB_LISTENER])

    def test_offWithOtherListeners(self) -> None:
        self.assertEqual(self.options("--imaps", "tcp:9993")["web"], [])

    def test_given(self) -> None:
        options = self.options("--imaps", "tcp:9993", "--web", "tcp:9443:interface=127.0.0.1")
        self.assertEqual(options["web"], ["tcp:9443:interface=127.0.0.1"])

    def test_invalid(self) -> None:
        from clientid_twisted.server.tap import OptionError

        self.assertRaises(OptionError, self.options, "--web", "nonsense:1")
