"""
Tests for L{clientid_twisted.policy._credfactory} and its dropin
C{twisted/plugins/clientid_cred.py}: C{strcred.makeChecker("clientid:...")}
makes a L{ClientIDChecker} that decides on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zope.interface.verify import verifyObject

from twisted.cred import strcred
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.plugin import IPlugin
from twisted.trial.unittest import TestCase

from clientid_twisted.cred import identifyCredentials
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._credfactory import ClientIDCheckerFactory, parseArgString
from clientid_twisted.store._records import APPROVED


def _identified(password: bytes, token: str | None) -> Any:
    return identifyCredentials(
        UsernamePassword(b"alice", password),
        ClientIdentity("UUID", token) if token else None,
        IPv4Address("TCP", "192.0.2.9", 40000),
        "smtp",
        True,
    )


class ParseTests(TestCase):
    """
    The argument string: options split at colons that start a known name.
    """

    def test_valuesWithColons(self) -> None:
        self.assertEqual(
            parseArgString("inner=file:/etc/passwd:mode=allowlist:store=sqlite:///var/x.sqlite3"),
            {"inner": "file:/etc/passwd", "mode": "allowlist", "store": "sqlite:///var/x.sqlite3"},
        )

    def test_anyOrder(self) -> None:
        self.assertEqual(
            parseArgString("store=memory::inner=memory:alice:pw"),
            {"store": "memory:", "inner": "memory:alice:pw"},
        )

    def test_errors(self) -> None:
        for bad in ("", "mode=learn", "inner=unix:inner=unix", "nonsense"):
            self.assertRaises(ValueError, parseArgString, bad)


class MakeCheckerTests(TestCase):
    """
    C{strcred.makeChecker("clientid:...")} finds the dropin and makes a
    working checker.
    """

    def makeChecker(self, description: str) -> ClientIDChecker:
        checker = strcred.makeChecker(description)
        self.addCleanup(checker.policy.store.close)
        return checker

    def test_dropin(self) -> None:
        factory = strcred.findCheckerFactory("clientid")
        self.assertIsInstance(factory, ClientIDCheckerFactory)
        self.assertTrue(verifyObject(strcred.ICheckerFactory, factory))
        self.assertTrue(verifyObject(IPlugin, factory))

    @defer.inlineCallbacks
    def test_allowlistFromFile(self) -> Any:
        passwd = self.passwd()
        store = Path(self.mktemp()).absolute()
        checker = self.makeChecker(f"clientid:inner=file:{passwd}:mode=allowlist:store=sqlite://{store}")
        self.assertIsInstance(checker, ClientIDChecker)
        self.assertTrue(verifyObject(ICredentialsChecker, checker))
        self.assertEqual(checker.policy.config.devices, "allowlist")
        # An unknown device with the right password: refused like a wrong one.
        yield self.assertFailure(checker.requestAvatarId(_identified(b"secret", "laptop")), UnauthorizedLogin)
        # Approved, it gets in.
        policy = checker.policy
        identity = ClientIdentity("UUID", "laptop")
        yield policy.store.setDeviceState(
            "alice", policy.hasher.digest(identity), "UUID",
            policy.hasher.fingerprint(identity), APPROVED, None,
        )
        avatarId = yield checker.requestAvatarId(_identified(b"secret", "laptop"))
        self.assertEqual(avatarId, b"alice")

    def passwd(self) -> Path:
        path = Path(self.mktemp())
        path.write_text("alice:secret\n")
        return path

    def test_learnByDefault(self) -> None:
        checker = self.makeChecker(f"clientid:inner=file:{self.passwd()}")
        self.assertEqual(checker.policy.config.devices, "learn")
        self.assertEqual(self.successResultOf(checker.requestAvatarId(_identified(b"secret", None))), b"alice")
        self.failureResultOf(checker.requestAvatarId(_identified(b"wrong", "laptop")), UnauthorizedLogin)

    def test_config(self) -> None:
        config = Path(self.mktemp())
        config.write_text('[policy]\ndevices = "tofu"\nrequire_clientid = true\n')
        checker = self.makeChecker(f"clientid:inner=memory:alice:secret:config={config}")
        self.assertEqual(checker.policy.config.devices, "tofu")
        self.assertTrue(checker.policy.config.requireClientID)

    def test_configChecked(self) -> None:
        """
        A C{config=} file: a misspelt policy table or key is an error; the
        server's own tables (a shared C{clientid.toml}) are left alone.
        """
        config = Path(self.mktemp())
        config.write_text('[limit]\nlockout_seconds = 1\n')
        e = self.assertRaises(ValueError, strcred.makeChecker, f"clientid:inner=memory:a:b:config={config}")
        self.assertIn("unknown table [limit]", str(e))
        config.write_text('[policy]\ndevices = "tofu"\nnope = 1\n')
        e = self.assertRaises(ValueError, strcred.makeChecker, f"clientid:inner=memory:a:b:config={config}")
        self.assertIn("nope", str(e))
        config.write_text('[server]\nhostname = "mx.example.net"\n[policy]\ndevices = "tofu"\n')
        checker = self.makeChecker(f"clientid:inner=memory:alice:secret:config={config}")
        self.assertEqual(checker.policy.config.devices, "tofu")

    def test_badMode(self) -> None:
        self.assertRaises(ValueError, strcred.makeChecker, "clientid:inner=memory:a:b:mode=sometimes")
