"""
Tests for C{twistd clientid-mail}'s options and service tree.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.server.tap import DEFAULT_LISTENERS, OptionError, Options, makeService
from clientid_twisted._certificate import selfSignedCertificate


class OptionsTests(SynchronousTestCase):
    """
    Listener options are endpoint strings, repeatable, checked at once.
    """

    def parse(self, *args: str) -> Options:
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaultsLoopbackUnprivileged(self) -> None:
        options = self.parse()
        for name in ("smtp", "smtps", "imap", "imaps"):
            [description] = options[name]
            self.assertEqual(description, DEFAULT_LISTENERS[name][0])
            self.assertIn("interface=127.0.0.1", description)
            self.assertGreater(int(description.split(":")[1]), 1023)
        self.assertEqual(options["data-dir"], "clientid-data")

    def test_repeatableAndExclusive(self) -> None:
        """
        Naming any listener replaces all the defaults.
        """
        options = self.parse("--smtp", "tcp:2525", "--smtp", "tcp6:2526:interface=\\:\\:1")
        self.assertEqual(options["smtp"], ["tcp:2525", "tcp6:2526:interface=\\:\\:1"])
        self.assertEqual(options["smtps"], [])
        self.assertEqual(options["imap"], [])
        self.assertEqual(options["imaps"], [])

    def test_invalidEndpoint(self) -> None:
        """
        A bad endpoint is one line naming the option (an L{OptionError},
        which twistd does not follow with its whole usage text).
        """
        error = self.assertRaises(OptionError, self.parse, "--imap", "tcp:notaport")
        self.assertTrue(str(error).startswith("clientid-mail: --imap: invalid endpoint 'tcp:notaport'"), error)
        self.assertNotIn("\n", str(error))
        self.assertNotIsInstance(error, usage.UsageError)
        self.assertRaises(OptionError, self.parse, "--smtps", "bogus:1")
        self.assertRaises(OptionError, self.parse, "--metrics", "bogus:1")

    def test_storeHelpNamesRedis(self) -> None:
        help_ = str(Options())
        for scheme in ("sqlite:", "redis://", "rediss://", "redis+sentinel://", "memory:"):
            self.assertIn(scheme, help_)

    def test_certificateNeedsKey(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "--certificate", "c.pem")
        self.assertRaises(usage.UsageError, self.parse, "--private-key", "k.pem")


class MakeServiceTests(SynchronousTestCase):
    """
    L{makeService} builds one named listener per endpoint, over one data
    directory.
    """

    def test_listeners(self) -> None:
        dataDir = Path(self.mktemp())
        options = Options()
        options.parseOptions(
            ["--data-dir", str(dataDir), "--smtp", "tcp:0", "--imaps", "tcp:0", "--imaps", "tcp:0:interface=127.0.0.2"]
        )
        top = makeService(options)
        self.addCleanup(top.getServiceNamed("clientid store").store.close)
        names = sorted(service.name for service in top)
        self.assertEqual(
            names,
            [
                "clientid store",
                "graceful shutdown",
                "imaps tcp:0",
                "imaps tcp:0:interface=127.0.0.2",
                "smtp tcp:0",
            ],
        )
        # The last child is stopped first: it refuses connections while
        # the ports close.
        self.assertEqual(list(top)[-1].name, "graceful shutdown")
        self.assertTrue((dataDir / "tls" / "selfsigned.pem").exists())
        self.assertTrue((dataDir / "clientid.key").exists())

    def test_sharedStoreListensOnceKeyed(self) -> None:
        """
        With a store that gives its identity key later (Redis), nothing
        listens before it has: the listeners join the tree once the key is
        known, with it in both protocol factories, and no clientid.key is
        made.
        """
        from twisted.internet import defer
        from twisted.internet.task import Clock
        from twisted.logger import globalLogPublisher

        from clientid_twisted.store import _SCHEMES, MemoryStore, registerStoreScheme

        answer: defer.Deferred[bytes] = defer.Deferred()

        class Later(MemoryStore):
            def identityKey(self, candidate: object) -> defer.Deferred[bytes]:
                return answer

        registerStoreScheme("later", lambda url, dataDir, **kw: Later(Clock()))
        self.addCleanup(_SCHEMES.pop, "later")
        logged: list[dict[str, object]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        dataDir = Path(self.mktemp())
        options = Options()
        options.parseOptions(["--data-dir", str(dataDir), "--store", "later:", "--smtp", "tcp:0"])
        top = makeService(options)
        self.assertEqual([service.name for service in top], [])
        self.assertIn(
            "waiting for the CLIENTID store's identity key before listening",
            [e.get("log_format") for e in logged],
        )
        answer.callback(b"s" * 32)
        self.assertEqual(
            sorted(service.name for service in top), ["clientid store", "graceful shutdown", "smtp tcp:0"]
        )
        store = top.getServiceNamed("clientid store").store
        self.addCleanup(store.close)
        factory = top.getServiceNamed("smtp tcp:0").factory
        self.assertEqual(factory.identityHasher.key, b"s" * 32)
        self.assertFalse((dataDir / "clientid.key").exists())

    def test_operatorCertificate(self) -> None:
        """
        With --certificate and --private-key nothing is generated.
        """
        dataDir = Path(self.mktemp())
        work = Path(self.mktemp())
        work.mkdir()
        certificate, key = selfSignedCertificate("mail.example.org")
        (work / "cert.pem").write_bytes(certificate)
        (work / "key.pem").write_bytes(key)
        options = Options()
        options.parseOptions(
            [
                "--data-dir", str(dataDir),
                "--certificate", str(work / "cert.pem"),
                "--private-key", str(work / "key.pem"),
                "--smtp", "tcp:0",
            ]
        )
        top = makeService(options)
        self.addCleanup(top.getServiceNamed("clientid store").store.close)
        self.assertFalse((dataDir / "tls").exists())

    def test_badConfig(self) -> None:
        """
        A broken config file stops start-up with a message naming it.
        """
        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text("[server\n")
        options = Options()
        options.parseOptions(["--data-dir", str(dataDir), "--smtp", "tcp:0"])
        error = self.assertRaises(SystemExit, makeService, options)
        self.assertIn("clientid.toml", str(error))
        self.assertTrue(str(error).startswith("clientid-mail: "))

    def test_unknownTable(self) -> None:
        """
        A misspelt table stops start-up naming the file and the table,
        instead of silently leaving its settings at their defaults.
        """
        dataDir = Path(self.mktemp())
        dataDir.mkdir()
        (dataDir / "clientid.toml").write_text("[limit]\nlockout_seconds = 3600\n")
        options = Options()
        options.parseOptions(["--data-dir", str(dataDir), "--smtp", "tcp:0"])
        error = str(self.assertRaises(SystemExit, makeService, options))
        self.assertTrue(error.startswith(f"clientid-mail: {dataDir / 'clientid.toml'}: unknown table [limit]"), error)

    def test_storeInMissingDirectory(self) -> None:
        """
        C{--store} naming a missing directory stops start-up in one line
        naming it; the server does not create the directories.
        """
        dataDir = Path(self.mktemp()).absolute()
        missing = Path(self.mktemp()).absolute()
        options = Options()
        options.parseOptions(
            ["--data-dir", str(dataDir), "--store", f"sqlite://{missing}/dir/x.sqlite3", "--smtp", "tcp:0"]
        )
        error = str(self.assertRaises(SystemExit, makeService, options))
        self.assertIn(f"no directory {missing}/dir", error)
        self.assertEqual(error.count("\n"), 0)
        self.assertFalse(missing.exists())


class PluginTests(SynchronousTestCase):
    """
    The dropin is found by twistd's plugin system.
    """

    def test_discovered(self) -> None:
        import twisted.plugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIn("clientid-mail", makers)
        self.assertIsInstance(makers["clientid-mail"].options(), Options)
