"""
Tests for L{clientid_twisted.policy._builder.buildAuthentication}: what
every front (the server's assembly, the cred plugin, the gateway) gets from
the configuration, and the one identity key.
"""

from __future__ import annotations

import binascii
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted.policy._alerts import LogAlertObserver
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._config import ConfigError
from clientid_twisted._keyfile import KEY_FILE
from clientid_twisted.policy._builder import StoreService, buildAuthentication
from clientid_twisted.policy._webhook import WebhookAlertObserver
from clientid_twisted.server.users import ScryptChecker, UserDatabase
from clientid_twisted.store import _SCHEMES, MemoryStore, SQLiteStore, registerStoreScheme
from tests.policyharness import PasswordChecker

INSTALLATION = IdentityHasher(b"i" * 32)


class Notices(LogAlertObserver):
    """
    Stands for an application's own alert observer.
    """


class BuildAuthenticationTests(TestCase):
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp()).absolute()
        self.dataDir.mkdir(parents=True)
        self.users = UserDatabase(self.dataDir / "users.json")

    def build(self, config: dict[str, Any] | None = None, storeURL: str | None = None,
              hasher: IdentityHasher | None = INSTALLATION) -> Any:
        """
        Build with C{hasher}'s key in the data directory's key file (none
        for L{None}); the L{Authentication}, which must be ready at once.
        """
        keyFile = self.dataDir / KEY_FILE
        if hasher is not None:
            keyFile.write_text(binascii.hexlify(hasher.key).decode() + "\n")
            keyFile.chmod(0o600)
        elif keyFile.exists():
            keyFile.unlink()
        built = buildAuthentication(
            ScryptChecker(self.users), config or {}, storeURL, keyFile,
            dataDir=self.dataDir, reactor=reactor,
            applicationObservers=lambda settings, hasher: [Notices()] if settings.alerts.mailAccount else [],
        )
        auth = self.successResultOf(built)
        self.addCleanup(auth.store.close)
        return auth

    def test_defaults(self) -> None:
        auth = self.build()
        self.assertIsInstance(auth.store, SQLiteStore)
        self.assertEqual(auth.store.path, self.dataDir / "clientid.sqlite3")
        self.assertIsInstance(auth.checker, ClientIDChecker)
        self.assertIs(auth.checker.policy, auth.policy)
        self.assertIsInstance(auth.checker.innerChecker, ScryptChecker)
        self.assertEqual(auth.policy.config.devices, "learn")
        self.assertEqual(
            [type(o) for o in auth.policy.alertObservers], [LogAlertObserver, Notices]
        )

    def test_newStoreAdoptsInstallationKey(self) -> None:
        auth = self.build()
        self.assertEqual(auth.hasher.key, INSTALLATION.key)
        self.assertIs(auth.policy.hasher, auth.hasher)

    def test_localStoreMakesKeyFile(self) -> None:
        """
        A local store with no key file yet: the file is made and the new
        store adopts its key (fingerprints survive a lost store file).
        """
        auth = self.build(hasher=None)
        key = (self.dataDir / KEY_FILE).read_text().strip()
        self.assertEqual(auth.hasher.key, binascii.unhexlify(key))

    def test_sharedStoreMakesNoKeyFile(self) -> None:
        """
        A shared store (any scheme but sqlite: and memory:) keeps its own
        key: no key file is made or read into being, nothing is logged
        about one, and the store's key is the one hasher.
        """
        registerStoreScheme("shared", lambda url, dataDir, **kw: MemoryStore(Clock()))
        self.addCleanup(_SCHEMES.pop, "shared")
        logged: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        auth = self.build(storeURL="shared:", hasher=None)
        self.assertFalse((self.dataDir / KEY_FILE).exists())
        self.assertEqual(len(auth.hasher.key), 32)
        self.assertIs(auth.policy.hasher, auth.hasher)
        self.assertFalse([e for e in logged if "key" in str(e.get("log_format", ""))])

    def test_sharedStoreAdoptsExistingKeyFile(self) -> None:
        """
        A key file that exists is offered to a new shared store (moving an
        installation from SQLite to Redis keeps its fingerprints).
        """
        registerStoreScheme("shared", lambda url, dataDir, **kw: MemoryStore(Clock()))
        self.addCleanup(_SCHEMES.pop, "shared")
        auth = self.build(storeURL="shared:")
        self.assertEqual(auth.hasher, INSTALLATION)

    @defer.inlineCallbacks
    def test_storeKeyWins(self) -> Any:
        """
        Processes sharing a store agree on its key, whatever their own
        clientid.key says.
        """
        first = self.build()
        yield first.store.close()
        second = self.build(hasher=IdentityHasher(b"o" * 32))
        self.assertEqual(second.hasher.key, INSTALLATION.key)

    def test_keyFile(self) -> None:
        (self.dataDir / "other.key").write_text(binascii.hexlify(b"f" * 32).decode() + "\n")
        auth = self.build({"store": {"key_file": "other.key"}})
        self.assertEqual(auth.hasher.key, b"f" * 32)

    def test_keyEnv(self) -> None:
        self.patch(os, "environ", {**os.environ, "TEST_CLIENTID_KEY": binascii.hexlify(b"e" * 20).decode()})
        auth = self.build({"store": {"key_env": "TEST_CLIENTID_KEY"}})
        self.assertEqual(auth.hasher.key, b"e" * 20)

    def test_badKeys(self) -> None:
        (self.dataDir / "short.key").write_text("abcd")
        for config, message in [
            ({"store": {"key_file": "missing.key"}}, "[store] key_file"),
            ({"store": {"key_file": "short.key"}}, "at least 32 hex digits"),
            ({"store": {"key_env": "SURELY_NOT_SET_ANYWHERE"}}, "is not set"),
        ]:
            with self.subTest(config=config):
                e = self.assertRaises(ConfigError, self.build, config)
                self.assertIn(message, str(e))

    def test_storeURL(self) -> None:
        auth = self.build({"store": {"url": "sqlite:configured.sqlite3"}})
        self.assertEqual(auth.store.path, self.dataDir / "configured.sqlite3")
        auth = self.build({"store": {"url": "sqlite:configured.sqlite3"}}, storeURL="memory:")
        self.assertIsInstance(auth.store, MemoryStore)

    def test_unknownStore(self) -> None:
        self.assertRaises(ValueError, self.build, storeURL="nosql://x")

    def test_badConfig(self) -> None:
        e = self.assertRaises(ConfigError, self.build, {"policy": {"devices": "maybe"}})
        self.assertIn("[policy] devices", str(e))

    def test_alertObservers(self) -> None:
        auth = self.build(
            {"alerts": {"mail_account": False, "webhook": "https://hooks.example.test/x"}}
        )
        observers = auth.policy.alertObservers
        self.assertEqual([type(o) for o in observers], [LogAlertObserver, WebhookAlertObserver])
        self.assertEqual(observers[1].url, "https://hooks.example.test/x")

    @defer.inlineCallbacks
    def test_serviceClosesStore(self) -> Any:
        auth = self.build()
        self.assertIsInstance(auth.service, StoreService)
        auth.service.startService()
        yield auth.service.stopService()
        self.assertTrue(auth.store._closed)

    def test_storeAnsweringLater(self) -> None:
        """
        A store that gives its key asynchronously (a network store): nothing
        is built until it has; then the policy gets that one hasher,
        without ever having had another.
        """
        answer: defer.Deferred[bytes] = defer.Deferred()

        class Slow(MemoryStore):
            def identityKey(self, candidate: Any) -> Any:
                return answer

        registerStoreScheme("slow", lambda url, dataDir, **kw: Slow(Clock()))
        self.addCleanup(_SCHEMES.pop, "slow")
        built = buildAuthentication(PasswordChecker(), {}, "slow:", reactor=reactor)
        self.assertNoResult(built)
        answer.callback(b"s" * 32)
        auth = self.successResultOf(built)
        self.addCleanup(auth.store.close)
        self.assertEqual(auth.hasher, IdentityHasher(b"s" * 32))
        self.assertIs(auth.policy.hasher, auth.hasher)
        from tests.policyharness import PolicyHarness

        credentials = PolicyHarness(self).credentials()
        self.assertEqual(self.successResultOf(auth.checker.requestAvatarId(credentials)), b"alice@example.test")

    def test_failureClosesStore(self) -> None:
        """
        A custom policy factory that does not make a policy: the build
        fails and the store it opened is closed.
        """
        opened: list[Any] = []
        built = buildAuthentication(
            PasswordChecker(), {"policy": {"custom": "tests.test_policy_setup:notAPolicy"}},
            "memory:", reactor=reactor, wrapStore=lambda store: opened.append(store) or store,
        )
        self.failureResultOf(built, ConfigError)
        self.assertTrue(opened[0].closed)


def notAPolicy(context: Any) -> object:
    return object()


class StoreServiceTests(SynchronousTestCase):
    def test_name(self) -> None:
        self.assertEqual(StoreService(MemoryStore(Clock())).name, "clientid store")
