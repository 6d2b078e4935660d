"""
Tests for L{clientid_twisted.policy._config}: the policy's TOML tables are
read strictly, and every mistake is named.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.policy._config import (
    DEFAULT_HANDLING,
    AlertSettings,
    ConfigError,
    Limits,
    PolicyConfig,
    StoreSettings,
    parsePolicyConfig,
)
from clientid_twisted.policy._engine import policyFromConfig
from clientid_twisted.store._memory import MemoryStore


class DefaultsTests(SynchronousTestCase):
    def test_empty(self) -> None:
        self.assertEqual(parsePolicyConfig({}), PolicyConfig())

    def test_documentedDefaults(self) -> None:
        config = parsePolicyConfig({})
        self.assertEqual(
            (config.requireClientID, config.devices, config.tofuMaxDevices, config.underAttack),
            (False, "learn", 1, False),
        )
        self.assertEqual(config.limits, Limits(5, 20, 600.0, 900.0, 5, 10, 0))
        self.assertEqual(config.alerts, AlertSettings(mailAccount=True, webhook=""))
        self.assertEqual(config.storeFailure, "tempfail")
        self.assertEqual(config.handlingFor("ANY"), DEFAULT_HANDLING)
        self.assertEqual(DEFAULT_HANDLING, {"system-log", "auth", "alert-failure"})


class ValuesTests(SynchronousTestCase):
    def test_everything(self) -> None:
        config = parsePolicyConfig(
            {
                "policy": {
                    "require_clientid": True,
                    "allowed_types": ["uuid", "TBIRD-UUID"],
                    "denied_types": ["mac"],
                    "devices": "tofu",
                    "tofu_max_devices": 3,
                    "under_attack": True,
                    "store_failure": "open",
                    "store_timeout_seconds": 1.5,
                    "last_seen_interval_seconds": 60,
                },
                "limits": {
                    "device_failures": 1,
                    "address_failures": 2,
                    "window_seconds": 3,
                    "lockout_seconds": 4.5,
                    "accounts_per_token": 0,
                    "unknown_device_failures": 6,
                    "attack_failures_per_minute": 7,
                },
                "types": {"UUID": {"handling": ["auth", "user-log"]}, "Mac": {"handling": ["ignore"]}},
                "alerts": {
                    "mail_account": False,
                    "webhook": "https://hooks.example.test/clientid",
                    "webhook_retries": 2,
                    "webhook_timeout_seconds": 3,
                    "new_device": False,
                    "repeat_seconds": 60,
                    "notice_interval_seconds": 600,
                    "notice_failures": True,
                },
                "store": {"url": "sqlite:///var/lib/x.sqlite3", "key_env": "CLIENTID_KEY"},
            }
        )
        self.assertEqual(config.allowedTypes, {"UUID", "TBIRD-UUID"})
        self.assertEqual(config.deniedTypes, {"MAC"})
        self.assertEqual(
            (config.requireClientID, config.devices, config.tofuMaxDevices, config.underAttack),
            (True, "tofu", 3, True),
        )
        self.assertEqual((config.storeFailure, config.storeTimeoutSeconds), ("open", 1.5))
        self.assertEqual(config.lastSeenIntervalSeconds, 60.0)
        self.assertEqual(config.limits, Limits(1, 2, 3.0, 4.5, 0, 6, 7))
        self.assertEqual(config.handlingFor("UUID"), {"auth", "user-log"})
        self.assertEqual(config.handlingFor("MAC"), {"ignore"})
        self.assertEqual(
            config.alerts,
            AlertSettings(False, "https://hooks.example.test/clientid", 2, 3.0, False, 60.0, 600.0, True),
        )
        self.assertEqual(
            config.store, StoreSettings("sqlite:///var/lib/x.sqlite3", None, "CLIENTID_KEY")
        )


class ErrorTests(SynchronousTestCase):
    def assertError(self, config: dict[str, Any], *fragments: str) -> None:
        e = self.assertRaises(ConfigError, parsePolicyConfig, config, "clientid.toml")
        message = str(e)
        self.assertTrue(message.startswith("clientid.toml: "), message)
        for fragment in fragments:
            self.assertIn(fragment, message)

    def test_unknownKeys(self) -> None:
        for table in ("policy", "limits", "alerts", "store"):
            with self.subTest(table=table):
                self.assertError({table: {"devcies": 1}}, f"[{table}] unknown key 'devcies'")

    def test_tableNotTable(self) -> None:
        self.assertError({"policy": "learn"}, "'policy' must be a table")

    def test_booleans(self) -> None:
        self.assertError({"policy": {"require_clientid": 1}}, "[policy] require_clientid", "true or false")
        self.assertError({"policy": {"under_attack": "yes"}}, "[policy] under_attack")
        self.assertError({"alerts": {"mail_account": "no"}}, "[alerts] mail_account")

    def test_integers(self) -> None:
        self.assertError({"limits": {"device_failures": "5"}}, "[limits] device_failures", "integer")
        self.assertError({"limits": {"device_failures": True}}, "[limits] device_failures", "integer")
        self.assertError({"limits": {"device_failures": 2.5}}, "[limits] device_failures")
        self.assertError({"limits": {"address_failures": -1}}, "[limits] address_failures", "at least 0")
        self.assertError({"policy": {"tofu_max_devices": 0}}, "[policy] tofu_max_devices", "at least 1")

    def test_seconds(self) -> None:
        self.assertError({"limits": {"window_seconds": 0}}, "[limits] window_seconds", "positive")
        self.assertError({"limits": {"lockout_seconds": "900"}}, "[limits] lockout_seconds")
        self.assertError({"limits": {"lockout_seconds": float("inf")}}, "[limits] lockout_seconds")

    def test_lastSeenInterval(self) -> None:
        """
        C{last_seen_interval_seconds} is 300 by default, may be 0 (every
        login writes), and is otherwise checked like the other durations.
        """
        self.assertEqual(parsePolicyConfig({}).lastSeenIntervalSeconds, 300.0)
        zero = parsePolicyConfig({"policy": {"last_seen_interval_seconds": 0}})
        self.assertEqual(zero.lastSeenIntervalSeconds, 0.0)
        key = "[policy] last_seen_interval_seconds"
        self.assertError({"policy": {"last_seen_interval_seconds": -1}}, key, "0 or more")
        self.assertError({"policy": {"last_seen_interval_seconds": "5"}}, key, "number of seconds")
        self.assertError({"policy": {"last_seen_interval_seconds": True}}, key)
        self.assertError({"policy": {"last_seen_interval_seconds": float("inf")}}, key)

    def test_choices(self) -> None:
        self.assertError({"policy": {"devices": "whitelist"}}, "[policy] devices", "off, learn, tofu, allowlist")
        self.assertError({"policy": {"store_failure": "crash"}}, "[policy] store_failure", "tempfail, open")

    def test_typeLists(self) -> None:
        self.assertError({"policy": {"allowed_types": "UUID"}}, "[policy] allowed_types", "list")
        self.assertError({"policy": {"denied_types": ["has space"]}}, "[policy] denied_types", "'has space'")
        self.assertError({"policy": {"denied_types": ["X" * 17]}}, "[policy] denied_types")

    def test_types(self) -> None:
        self.assertError({"types": {"UU ID": {"handling": []}}}, "[types.UU ID] is not a type name")
        self.assertError({"types": {"UUID": {"handling": ["auth"]}, "uuid": {"handling": []}}},
                         "name the same type")
        self.assertError({"types": {"UUID": "auth"}}, "types.UUID must be a table")
        self.assertError({"types": {"UUID": {}}}, "[types.UUID] handling is missing")
        self.assertError({"types": {"UUID": {"handling": "auth"}}}, "[types.UUID] handling", "list")
        self.assertError({"types": {"UUID": {"handling": ["auth", "blink"]}}}, "unknown flag 'blink'")
        self.assertError({"types": {"UUID": {"handling": ["auth"], "other": 1}}},
                         "[types.UUID] unknown key 'other'")
        self.assertError({"types": {"UUID": {"handling": ["ignore", "system-log"]}}}, "'ignore'")
        self.assertError({"types": {"UUID": {"handling": ["debug", "auth"]}}}, "'debug'")

    def test_webhook(self) -> None:
        self.assertError({"alerts": {"webhook": "ftp://x"}}, "[alerts] webhook", "http://")
        self.assertError({"alerts": {"webhook": "https://"}}, "[alerts] webhook")
        self.assertError({"alerts": {"webhook": 5}}, "[alerts] webhook", "string")

    def test_keyFileAndEnv(self) -> None:
        self.assertError({"store": {"key_file": "k", "key_env": "K"}}, "[store] key_env")

    def test_policyFromConfig(self) -> None:
        self.assertRaises(
            ConfigError,
            policyFromConfig,
            {"limits": {"window_second": 1}},
            MemoryStore(),
            None,
        )
