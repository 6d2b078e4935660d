"""
Tests for L{clientid_twisted.policy.setup.buildAuthentication}: what the
server's assembly gets from the configuration.
"""

from __future__ import annotations

import binascii
import os
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.fingerprint import IdentityHasher
from clientid_twisted.policy.alerts import LogAlertObserver
from clientid_twisted.policy.checker import ClientIDChecker
from clientid_twisted.policy.config import ConfigError
from clientid_twisted.policy.mailnotice import MailboxAlertObserver
from clientid_twisted.policy.setup import StoreService, buildAuthentication
from clientid_twisted.policy.webhook import WebhookAlertObserver
from clientid_twisted.server.users import ScryptChecker, UserDatabase
from clientid_twisted.store import _SCHEMES, MemoryStore, SQLiteStore, registerStoreScheme
from tests.policyharness import PasswordChecker

INSTALLATION = IdentityHasher(b"i" * 32)


class BuildAuthenticationTests(TestCase):
    def setUp(self) -> None:
        self.dataDir = Path(self.mktemp()).absolute()
        self.dataDir.mkdir(parents=True)
        self.users = UserDatabase(self.dataDir / "users.json")

    def build(self, config: dict[str, Any] | None = None, storeURL: str | None = None,
              hasher: IdentityHasher | None = INSTALLATION) -> Any:
        auth = buildAuthentication(
            config or {}, self.dataDir, storeURL, self.users, ScryptChecker(self.users),
            hasher, "mail.example.test", reactor,
        )
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
            [type(o) for o in auth.policy.alertObservers], [LogAlertObserver, MailboxAlertObserver]
        )

    def test_newStoreAdoptsInstallationKey(self) -> None:
        auth = self.build()
        self.assertEqual(auth.hasher.key, INSTALLATION.key)
        self.assertEqual(auth.policy.hasher, auth.hasher)

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
        A store that gives its key asynchronously (a network store): logins
        are temporary failures until it has, then work.
        """
        answer: defer.Deferred[bytes] = defer.Deferred()

        class Slow(MemoryStore):
            def identityKey(self, candidate: Any) -> Any:
                return answer

        registerStoreScheme("slow", lambda url, dataDir, **kw: Slow(Clock()))
        self.addCleanup(_SCHEMES.pop, "slow")
        auth = buildAuthentication(
            {}, self.dataDir, "slow:", self.users, PasswordChecker(), INSTALLATION, "h", reactor
        )
        self.assertIsNone(auth.hasher)
        from tests.policyharness import PolicyHarness

        credentials = PolicyHarness(self).credentials()
        from clientid_twisted.errors import TemporaryAuthenticationFailure

        self.failureResultOf(auth.checker.requestAvatarId(credentials), TemporaryAuthenticationFailure)
        answer.callback(b"s" * 32)
        self.assertEqual(auth.policy.hasher, IdentityHasher(b"s" * 32))
        self.assertEqual(self.successResultOf(auth.checker.requestAvatarId(credentials)), b"alice@example.test")


class StoreServiceTests(SynchronousTestCase):
    def test_name(self) -> None:
        self.assertEqual(StoreService(MemoryStore(Clock())).name, "clientid store")
