"""
Tests for L{clientid_twisted.server.metrics} and C{twistd clientid-mail
--metrics}: counts from the log events and the store, the Prometheus
scrape, and what the labels never carry.
"""

from __future__ import annotations

import platform
import ssl
import urllib.request
from pathlib import Path
from typing import Any

from zope.interface.verify import verifyObject

import twisted

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted import __version__
from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.server.metrics import CountingStore, ServerMetrics
from clientid_twisted.server.tap import OptionError, Options, loopbackEndpoint, makeService
from clientid_twisted.server.users import UserDatabase
from clientid_twisted.store._errors import StoreError, UnknownDevice
from clientid_twisted.store._records import APPROVED, Bump, OutcomeRecord, StateQuery
from clientid_twisted.testing import MemoryStore
from tests.runningserver import smtpLogin
from tests.services import freePort

ACCOUNT, PASSWORD = "alice@example.test", "alice password"
GOOD_TOKEN = "5b0e0c1e-laptop-token-9f1d-7a44c0de"
BAD_TOKEN = "77aa01b2-stranger-token-c3d4e5f6"


def _value(metrics: ServerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class ObserverTests(SynchronousTestCase):
    """
    The log observer counts the structured events.
    """

    def setUp(self) -> None:
        self.metrics = ServerMetrics()

    def test_commands(self) -> None:
        self.metrics.observe({"clientIDEvent": "accepted", "protocol": "smtp", "clientIDFingerprint": "ab"})
        self.metrics.observe({"clientIDEvent": "refused", "protocol": "imap", "reason": "malformed"})
        self.assertEqual(
            _value(self.metrics, "clientid_commands_total", protocol="smtp", outcome="accepted", reason=""),
            1,
        )
        self.assertEqual(
            _value(self.metrics, "clientid_commands_total", protocol="imap", outcome="refused", reason="malformed"),
            1,
        )

    def test_loginReportsAcceptance(self) -> None:
        """
        A login's event that also reports the CLIENTID it first used counts
        as both a login and an accepted CLIENTID.
        """
        self.metrics.observe(
            {"authEvent": "succeeded", "clientIDEvent": "accepted", "protocol": "imap"}
        )
        self.assertEqual(_value(self.metrics, "clientid_logins_total", protocol="imap", result="succeeded"), 1)
        self.assertEqual(
            _value(self.metrics, "clientid_commands_total", protocol="imap", outcome="accepted", reason=""),
            1,
        )

    def test_loginsAndRefusals(self) -> None:
        self.metrics.observe({"authEvent": "failed", "protocol": "imap", "username": "a@b"})
        self.metrics.observe(
            {"policyEvent": "refused", "protocol": "smtp", "reason": "device not approved",
             "passwordAccepted": True, "account": "a@b"}
        )
        self.assertEqual(_value(self.metrics, "clientid_logins_total", protocol="imap", result="failed"), 1)
        self.assertEqual(
            _value(
                self.metrics, "clientid_policy_refusals_total",
                protocol="smtp", reason="device_not_approved", password="right",
            ),
            1,
        )

    def test_alertsAndOutages(self) -> None:
        self.metrics.observe({"alertKind": "device-new", "account": "a@b"})
        self.metrics.observe({"storeEvent": "down"})
        self.metrics.observe({"storeEvent": "up"})
        self.assertEqual(_value(self.metrics, "clientid_alerts_total", kind="device_new"), 1)
        self.assertEqual(_value(self.metrics, "clientid_store_outages_total"), 1)

    def test_unknownProtocolLabel(self) -> None:
        """
        A label value that is not one of the known words becomes C{other}.
        """
        self.metrics.observe({"authEvent": "succeeded", "protocol": "alice@example.test"})
        self.assertEqual(_value(self.metrics, "clientid_logins_total", protocol="other", result="succeeded"), 1)
        self.assertNotIn(b"alice", self.metrics.scrape())


class CountingStoreTests(SynchronousTestCase):
    """
    L{CountingStore} passes calls through and counts locks and failures.
    """

    def setUp(self) -> None:
        self.metrics = ServerMetrics()
        self.clock = Clock()
        self.inner = MemoryStore(self.clock)
        self.store = self.metrics.countingStore(self.inner)

    def test_provides(self) -> None:
        self.assertTrue(verifyObject(IClientIDStore, self.store))
        self.assertIsInstance(self.store, CountingStore)

    def test_locks(self) -> None:
        record = OutcomeRecord(
            operations=(Bump("device-failures:d1", 600.0, limit=1, lock="token-locked:d1", lockSeconds=900.0),)
        )
        result = self.successResultOf(self.store.recordOutcome(record))
        self.assertEqual(result.locked, ("token-locked:d1",))
        self.successResultOf(self.store.setLock("account-closed:alice@example.test", 60, None))
        self.assertEqual(_value(self.metrics, "clientid_locks_total", kind="token_locked"), 1)
        self.assertEqual(_value(self.metrics, "clientid_locks_total", kind="account_closed"), 1)
        self.assertNotIn(b"alice", self.metrics.scrape())

    def test_errors(self) -> None:
        original = self.inner.loadState
        self.inner.loadState = lambda query: defer.fail(StoreError("down"))  # type: ignore[method-assign]
        self.failureResultOf(self.store.loadState(StateQuery(account="a")), StoreError)
        self.inner.loadState = original  # type: ignore[method-assign]
        self.successResultOf(self.store.loadState(StateQuery(account="a")))
        self.assertEqual(_value(self.metrics, "clientid_store_errors_total", operation="load_state"), 1)


    def test_renameDevice(self) -> None:
        """
        C{renameDevice} passes through; renaming a device that is not there
        fails as the store says, timed but not counted as a store error.
        """
        self.successResultOf(self.inner.setDeviceState("a@x", "d1", "UUID", "f1", APPROVED, None))
        record = self.successResultOf(self.store.renameDevice("a@x", "d1", "phone", None))
        self.assertEqual(record.name, "phone")
        self.failureResultOf(self.store.renameDevice("a@x", "d2", "phone", None), UnknownDevice)
        self.assertEqual(
            _value(self.metrics, "clientid_store_errors_total", operation="rename_device"), 0
        )
        self.inner.renameDevice = lambda *a: defer.fail(StoreError("down"))  # type: ignore[method-assign]
        self.failureResultOf(self.store.renameDevice("a@x", "d1", "x", None), StoreError)
        self.assertEqual(
            _value(self.metrics, "clientid_store_errors_total", operation="rename_device"), 1
        )

class OptionsTests(SynchronousTestCase):
    """
    C{--metrics} is off by default and on loopback unless told otherwise.
    """

    def test_offByDefault(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertIsNone(options["metrics"])

    def test_loopback(self) -> None:
        self.assertEqual(loopbackEndpoint("9108"), "tcp:9108:interface=127.0.0.1")
        self.assertEqual(loopbackEndpoint("tcp:9108"), "tcp:9108:interface=127.0.0.1")
        self.assertEqual(loopbackEndpoint("tcp:9108:interface=0.0.0.0"), "tcp:9108:interface=0.0.0.0")
        self.assertEqual(loopbackEndpoint("unix:/run/m.sock"), "unix:/run/m.sock")

    def test_invalid(self) -> None:
        self.assertRaises(OptionError, Options().parseOptions, ["--metrics", "nonsense:1"])


class ScrapeTests(TestCase):
    """
    C{twistd clientid-mail --metrics}: a refused and an accepted login over
    TLS, then a scrape that counts both and names no account, token or
    fingerprint.
    """

    @defer.inlineCallbacks
    def test_scrapeAfterRefusedAndAcceptedLogin(self) -> Any:
        dataDir = Path(self.mktemp())
        dataDir.mkdir(parents=True)
        (dataDir / "clientid.toml").write_text(
            "[server]\nauth_failure_delay_seconds = 0\n"
            '[policy]\ndevices = "tofu"\n'
            "[alerts]\nmail_account = false\n"
        )
        UserDatabase(dataDir / "users.json").addUser(ACCOUNT, PASSWORD)
        smtpPort, metricsPort = freePort(), freePort()
        options = Options()
        options.parseOptions(
            [
                "--data-dir", str(dataDir),
                "--store", "memory:",
                "--smtp", f"tcp:{smtpPort}:interface=127.0.0.1",
                "--metrics", f"tcp:{metricsPort}",
            ]
        )
        top = makeService(options)
        top.startService()
        self.addCleanup(top.stopService)
        context = ssl.create_default_context(cafile=str(dataDir / "tls" / "selfsigned.pem"))

        # tofu with one slot: the first device is trusted, the second refused
        # although its password is right.
        accepted = yield deferToThread(smtpLogin, smtpPort, context, ACCOUNT, PASSWORD, GOOD_TOKEN, timeout=20)
        refused = yield deferToThread(smtpLogin, smtpPort, context, ACCOUNT, PASSWORD, BAD_TOKEN, timeout=20)
        self.assertEqual((accepted, refused), (235, 535))

        def scrape() -> tuple[str, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{metricsPort}/metrics", timeout=20) as r:
                return r.headers["Content-Type"], r.read().decode("utf-8")

        contentType, text = yield deferToThread(scrape)
        self.assertTrue(contentType.startswith("text/plain"))
        self.assertIn('clientid_logins_total{protocol="smtp",result="succeeded"} 1.0', text)
        self.assertIn('clientid_logins_total{protocol="smtp",result="failed"} 1.0', text)
        self.assertIn(
            'clientid_policy_refusals_total{password="right",protocol="smtp",'
            'reason="device_not_approved_tofu_limit_reached"} 1.0',
            text,
        )
        self.assertIn('clientid_commands_total{outcome="accepted",protocol="smtp",reason=""} 2.0', text)
        self.assertIn('clientid_alerts_total{kind="device_new"} 1.0', text)
        self.assertIn('clientid_alerts_total{kind="device_refused"} 1.0', text)
        for secret in (ACCOUNT, "alice", GOOD_TOKEN, BAD_TOKEN, GOOD_TOKEN[:8], BAD_TOKEN[:8]):
            self.assertNotIn(secret, text)
        # No fingerprint either: 16 hex digits anywhere in a label.
        import re

        self.assertIsNone(re.search(r'"[0-9a-f]{16}', text))
        # Every label value is a snake_case identifier.
        for value in re.findall(r'="([^"]*)"', text):
            self.assertRegex(value, r"^([a-z0-9_]*|[0-9.+a-zA-Z]+)$")
        self.assertIn(f'clientid_build_info{{python="{platform.python_version()}",twisted="{twisted.__version__}",'
                      f'version="{__version__}"}} 1.0', text)
        self.assertIn("clientid_store_up 1.0", text)
        self.assertIn('clientid_login_decision_seconds_count{protocol="smtp"} 2.0', text)
        self.assertRegex(text, r'clientid_store_call_seconds_count\{operation="load_state"\} [1-9]')
        self.assertIn('clientid_connections{protocol="smtp",tls="no"}', text)

        def scrapeOpenMetrics() -> tuple[str, str]:
            request = urllib.request.Request(
                f"http://127.0.0.1:{metricsPort}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
            )
            with urllib.request.urlopen(request, timeout=20) as r:
                return r.headers["Content-Type"], r.read().decode("utf-8")

        contentType, text = yield deferToThread(scrapeOpenMetrics)
        self.assertTrue(contentType.startswith("application/openmetrics-text"), contentType)
        self.assertTrue(text.endswith("# EOF\n"))
        self.assertIn("clientid_build_info{", text)


class GaugeAndHistogramTests(SynchronousTestCase):
    """
    The gauges an operator alerts on, and the decision-time histogram.
    """

    def setUp(self) -> None:
        self.metrics = ServerMetrics()

    def test_connectionsByProtocolAndTLS(self) -> None:
        class Session:
            def __init__(self, protocolName: str, encrypted: bool) -> None:
                self.protocolName = protocolName
                self.encrypted = encrypted

            def isEncrypted(self) -> bool:
                return self.encrypted

        class Limiter:
            live = [Session("smtp", True), Session("smtp", False), Session("imap", True), Session("imap", True)]

            def sessions(self) -> list[Any]:
                return list(self.live)

        self.metrics.watchConnections(Limiter())
        expected = {("smtp", "yes"): 1, ("smtp", "no"): 1, ("imap", "yes"): 2, ("imap", "no"): 0}
        for (protocol, tls), count in expected.items():
            self.assertEqual(_value(self.metrics, "clientid_connections", protocol=protocol, tls=tls), count)
        Limiter.live = []
        self.assertEqual(_value(self.metrics, "clientid_connections", protocol="imap", tls="yes"), 0)

    def test_storeUpDown(self) -> None:
        self.assertEqual(_value(self.metrics, "clientid_store_up"), 1)
        self.metrics.observe({"storeEvent": "down"})
        self.assertEqual(_value(self.metrics, "clientid_store_up"), 0)
        self.metrics.observe({"storeEvent": "up"})
        self.assertEqual(_value(self.metrics, "clientid_store_up"), 1)

    def test_timedChecker(self) -> None:
        from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
        from twisted.cred.credentials import UsernamePassword

        from clientid_twisted.cred import identifyCredentials

        inner = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
        checker = self.metrics.timedChecker(inner)
        verifyObject(ICredentialsChecker, checker)
        self.assertEqual(checker.credentialInterfaces, tuple(inner.credentialInterfaces))
        good = identifyCredentials(UsernamePassword(b"alice", b"pw"), None, None, "imap", True)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(good)), b"alice")
        bad = identifyCredentials(UsernamePassword(b"alice", b"no"), None, None, "imap", True)
        self.failureResultOf(checker.requestAvatarId(bad))
        self.assertEqual(_value(self.metrics, "clientid_login_decision_seconds_count", protocol="imap"), 2)

    def test_snakeCase(self) -> None:
        from clientid_twisted.server.metrics import snakeCase

        self.assertEqual(snakeCase("no EHLO since TLS"), "no_ehlo_since_tls")
        self.assertEqual(snakeCase("after LOGIN"), "after_login")
        self.assertEqual(snakeCase("token-locked"), "token_locked")
        self.assertEqual(snakeCase("loadState"), "load_state")
