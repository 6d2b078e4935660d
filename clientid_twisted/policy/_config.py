# -*- test-case-name: tests.test_policy_config -*-
"""
The policy's configuration: the C{[policy]}, C{[limits]}, C{[types.NAME]},
C{[alerts]} and C{[store]} tables of C{clientid.toml}, checked strictly.

A typo must not silently weaken a security setting, so an unknown key, a
value of the wrong type or out of range is an error that names the table
and the key.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import urlsplit

from attrs import field, frozen

from clientid_twisted._configfile import ConfigError, ConfigTable, TableChecker, getTable

__all__ = [
    "APPLICATION_TABLES",
    "POLICY_TABLES",
    "ConfigError",
    "PolicyConfig",
    "Limits",
    "AlertSettings",
    "StoreSettings",
    "parsePolicyConfig",
    "DEVICE_MODES",
    "HANDLING_FLAGS",
    "DEFAULT_HANDLING",
]

OFF, LEARN, TOFU, ALLOWLIST = "off", "learn", "tofu", "allowlist"
DEVICE_MODES = (OFF, LEARN, TOFU, ALLOWLIST)

HANDLING_FLAGS = (
    "ignore",
    "debug",
    "system-log",
    "user-log",
    "auth",
    "alert-failure",
    "alert-success",
)
"""The drafts' per-type flags (section 7 of the SMTP draft), by our names."""

DEFAULT_HANDLING = frozenset({"system-log", "auth", "alert-failure"})
"""The handling of a type that has no C{[types.NAME]} table."""

STORE_FAILURE_MODES = ("tempfail", "open")

_TYPE_NAME = re.compile(r"[A-Za-z0-9-]{1,16}")

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
_FACTORY_NAME = re.compile(rf"{_IDENTIFIER}(\.{_IDENTIFIER})*:{_IDENTIFIER}(\.{_IDENTIFIER})*")
"""C{[policy] custom}: C{package.module:factory} (the factory may be an
attribute path, C{module:Class.create})."""


@frozen
class Limits:
    """
    C{[limits]}: failure counting and lockouts.  A limit of 0 switches its
    rule off.
    """

    deviceFailures: int = 5
    addressFailures: int = 20
    windowSeconds: float = 600.0
    lockoutSeconds: float = 900.0
    accountsPerToken: int = 5
    unknownDeviceFailures: int = 10
    attackFailuresPerMinute: int = 0


@frozen
class AlertSettings:
    """
    C{[alerts]}: where alerts go besides the log.
    """

    mailAccount: bool = True
    webhook: str = ""
    webhookRetries: int = 5
    webhookTimeoutSeconds: float = 10.0
    newDevice: bool = True
    repeatSeconds: float = 86400.0
    noticeIntervalSeconds: float = 3600.0
    noticeFailures: bool = False


@frozen
class StoreSettings:
    """
    C{[store]}: which store, and where the token-hashing key lives when not
    in the store.
    """

    url: str | None = None
    keyFile: str | None = None
    keyEnv: str | None = None


@frozen
class PolicyConfig:
    """
    Everything the built-in policy is configured with.

    @ivar allowedTypes: Case-folded type names; empty: any.
    @ivar handling: Case-folded type name to its handling flags.
    @ivar lastSeenIntervalSeconds: How stale a known, approved device's
        last-seen time and address may grow before a successful login
        writes them again (0: every login writes them).
    @ivar custom: C{[policy] custom}: the C{"package.module:factory"} that
        makes the policy instead of the built-in one
        (L{clientid_twisted.policy.PolicyFactoryContext}), or L{None}.
    """

    requireClientID: bool = False
    allowedTypes: frozenset[str] = frozenset()
    deniedTypes: frozenset[str] = frozenset()
    devices: str = LEARN
    tofuMaxDevices: int = 1
    underAttack: bool = False
    storeFailure: str = "tempfail"
    storeTimeoutSeconds: float = 5.0
    lastSeenIntervalSeconds: float = 300.0
    limits: Limits = Limits()
    handling: Mapping[str, frozenset[str]] = field(factory=dict)
    alerts: AlertSettings = AlertSettings()
    store: StoreSettings = StoreSettings()
    custom: str | None = None

    def handlingFor(self, typeKey: str) -> frozenset[str]:
        """
        The flags of a (case-folded) type.
        """
        return self.handling.get(typeKey, DEFAULT_HANDLING)

    def showsInLog(self, typeKey: str) -> bool:
        """
        Whether log lines may name a device of this (case-folded) type by
        type and fingerprint: C{system-log} or C{debug}, never C{ignore}.
        The protocols' lines follow this as the policy's do.
        """
        return bool(self.handlingFor(typeKey) & {"system-log", "debug"})


class _Table(ConfigTable):
    """
    A policy table: a L{ConfigTable} that also reads lists of type names.
    """

    def typeNames(self, key: str) -> frozenset[str]:
        value = self.get(key, [])
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of type names, not {value!r}")
        names = set()
        for name in value:
            if not isinstance(name, str) or _TYPE_NAME.fullmatch(name) is None:
                raise self.error(
                    key, f"holds {name!r}, not a type name (1-16 letters, digits or '-')"
                )
            names.add(name.upper())
        return frozenset(names)


def parsePolicyConfig(config: Mapping[str, Any], source: object = None) -> PolicyConfig:
    """
    Check and read the policy's tables of a loaded configuration.

    @param config: The top-level table (L{clientid_twisted._configfile.loadConfig}).
    @param source: The file, for error messages.
    @raise ConfigError: Naming the table and key of the first problem.
    """
    policy = _Table("policy", getTable(dict(config), "policy", source), source)
    requireClientID = policy.boolean("require_clientid", False)
    allowedTypes = policy.typeNames("allowed_types")
    deniedTypes = policy.typeNames("denied_types")
    devices = policy.choice("devices", LEARN, DEVICE_MODES)
    tofuMaxDevices = policy.integer("tofu_max_devices", 1, minimum=1)
    underAttack = policy.boolean("under_attack", False)
    storeFailure = policy.choice("store_failure", "tempfail", STORE_FAILURE_MODES)
    storeTimeout = policy.seconds("store_timeout_seconds", 5.0)
    lastSeenInterval = policy.seconds("last_seen_interval_seconds", 300.0, zero=True)
    custom = policy.string("custom", None) or None
    if custom is not None and _FACTORY_NAME.fullmatch(custom) is None:
        raise policy.error("custom", f'must name a factory as "package.module:factory", not {custom!r}')
    policy.finish()

    limitsTable = _Table("limits", getTable(dict(config), "limits", source), source)
    limits = Limits(
        deviceFailures=limitsTable.integer("device_failures", 5),
        addressFailures=limitsTable.integer("address_failures", 20),
        windowSeconds=limitsTable.seconds("window_seconds", 600.0),
        lockoutSeconds=limitsTable.seconds("lockout_seconds", 900.0),
        accountsPerToken=limitsTable.integer("accounts_per_token", 5),
        unknownDeviceFailures=limitsTable.integer("unknown_device_failures", 10),
        attackFailuresPerMinute=limitsTable.integer("attack_failures_per_minute", 0),
    )
    limitsTable.finish()

    alertsTable = _Table("alerts", getTable(dict(config), "alerts", source), source)
    webhook = alertsTable.string("webhook", "") or ""
    if webhook:
        parts = urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise alertsTable.error("webhook", f"must be an http:// or https:// URL, not {webhook!r}")
    alerts = AlertSettings(
        mailAccount=alertsTable.boolean("mail_account", True),
        webhook=webhook,
        webhookRetries=alertsTable.integer("webhook_retries", 5),
        webhookTimeoutSeconds=alertsTable.seconds("webhook_timeout_seconds", 10.0),
        newDevice=alertsTable.boolean("new_device", True),
        repeatSeconds=alertsTable.seconds("repeat_seconds", 86400.0),
        noticeIntervalSeconds=alertsTable.seconds("notice_interval_seconds", 3600.0),
        noticeFailures=alertsTable.boolean("notice_failures", False),
    )
    alertsTable.finish()

    storeTable = _Table("store", getTable(dict(config), "store", source), source)
    store = StoreSettings(
        url=storeTable.string("url", None) or None,
        keyFile=storeTable.string("key_file", None) or None,
        keyEnv=storeTable.string("key_env", None) or None,
    )
    if store.keyFile and store.keyEnv:
        raise storeTable.error("key_env", "and key_file cannot both be set")
    storeTable.finish()

    return PolicyConfig(
        requireClientID=requireClientID,
        allowedTypes=allowedTypes,
        deniedTypes=deniedTypes,
        devices=devices,
        tofuMaxDevices=tofuMaxDevices,
        underAttack=underAttack,
        storeFailure=storeFailure,
        storeTimeoutSeconds=storeTimeout,
        lastSeenIntervalSeconds=lastSeenInterval,
        limits=limits,
        handling=_handling(config, source),
        alerts=alerts,
        store=store,
        custom=custom,
    )


def _handling(config: Mapping[str, Any], source: object) -> dict[str, frozenset[str]]:
    where = f"{source}: " if source is not None else ""
    types = getTable(dict(config), "types", source)
    handling: dict[str, frozenset[str]] = {}
    spelled: dict[str, str] = {}
    for name, table in types.items():
        if _TYPE_NAME.fullmatch(name) is None:
            raise ConfigError(
                f"{where}[types.{name}] is not a type name (1-16 letters, digits or '-')"
            )
        key = name.upper()
        if key in spelled:
            raise ConfigError(
                f"{where}[types.{spelled[key]}] and [types.{name}] name the same type "
                "(type names are case-insensitive)"
            )
        spelled[key] = name
        if not isinstance(table, dict):
            raise ConfigError(f"{where}types.{name} must be a table ([types.{name}])")
        reader = _Table(f"types.{name}", table, source)
        flags = reader.get("handling", None)
        reader.finish()
        if flags is None:
            raise reader.error("handling", "is missing")
        if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
            raise reader.error("handling", f"must be a list of flags, not {flags!r}")
        for flag in flags:
            if flag not in HANDLING_FLAGS:
                raise reader.error(
                    "handling", f"has unknown flag {flag!r} (known: {', '.join(HANDLING_FLAGS)})"
                )
        chosen = frozenset(flags)
        if "ignore" in chosen and len(chosen) > 1:
            raise reader.error("handling", "cannot combine 'ignore' with other flags")
        if "debug" in chosen and chosen & {"auth", "alert-failure", "alert-success"}:
            raise reader.error(
                "handling",
                "cannot combine 'debug' (treated as not presented) with "
                "'auth' or alerts",
            )
        handling[key] = chosen
    return handling


def _checkPolicyTables(config: Mapping[str, Any], source: object, dataDir: Any) -> None:
    parsePolicyConfig(config, source)


POLICY_TABLES: dict[str, TableChecker] = {
    name: _checkPolicyTables for name in ("policy", "limits", "types", "alerts", "store")
}
"""The tables of C{clientid.toml} the policy reads, with their checker
(for L{clientid_twisted._configfile.checkTables})."""

APPLICATION_TABLES = frozenset({"server", "gateway", "users", "relay", "web"})
"""The tables the applications own (the runnable server checks them): the
C{clientid:} cred plugin, given a server's C{clientid.toml}, leaves them
alone and checks the policy's."""
