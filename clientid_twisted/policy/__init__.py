# -*- test-case-name: tests.test_policy_engine -*-
"""
The device policy engine: decides, per login, whether the device a client
identified itself as may use the password it presented.

    - L{ClientIDChecker} wraps any C{twisted.cred} checker with a policy;
    - L{DevicePolicy} holds the built-in rules, configured from
      C{clientid.toml} by L{policyFromConfig};
    - L{buildAuthentication} puts store, identity key, policy and checker
      together from the configuration, for every front;
    - alerts go to L{IAlertObserver}s: the log, a webhook, and what the
      application adds (the server: the account's INBOX), which writes
      them with L{noticeLines} and L{messageLines};
    - L{DeviceManager} lists, approves, revokes and renames devices (the
      layer under C{clientid-admin devices} and the owners' device page);
    - L{ClientIDCheckerFactory} is the C{clientid:} C{twisted.cred}
      plugin.

This package is the policy's public API; its modules (C{_engine},
C{_checker}, ...) are the implementation and may change.

The names load on first use (see L{clientid_twisted._lazyexports}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clientid_twisted._lazyexports import lazyExports

_PUBLIC = {
    "ACCOUNT_ALERT_KINDS": "clientid_twisted.policy._alerts",
    "ALERT_KINDS": "clientid_twisted.policy._alerts",
    "Alert": "clientid_twisted.policy._alerts",
    "LogAlertObserver": "clientid_twisted.policy._alerts",
    "notifyAll": "clientid_twisted.policy._alerts",
    "Authentication": "clientid_twisted.policy._builder",
    "PolicyFactoryContext": "clientid_twisted.policy._builder",
    "StoreService": "clientid_twisted.policy._builder",
    "buildAuthentication": "clientid_twisted.policy._builder",
    "resolveIdentityHasher": "clientid_twisted.policy._builder",
    "ClientIDChecker": "clientid_twisted.policy._checker",
    "attemptFromCredentials": "clientid_twisted.policy._checker",
    "POLICY_TABLES": "clientid_twisted.policy._config",
    "PolicyConfig": "clientid_twisted.policy._config",
    "parsePolicyConfig": "clientid_twisted.policy._config",
    "ClientIDCheckerFactory": "clientid_twisted.policy._credfactory",
    "Attempt": "clientid_twisted.policy._decision",
    "Decision": "clientid_twisted.policy._decision",
    "Verdict": "clientid_twisted.policy._decision",
    "accountName": "clientid_twisted.policy._decision",
    "MAX_NAME_LENGTH": "clientid_twisted._devicename",
    "BadDeviceName": "clientid_twisted._devicename",
    "checkDeviceName": "clientid_twisted._devicename",
    "DevicePolicy": "clientid_twisted.policy._engine",
    "policyFromConfig": "clientid_twisted.policy._engine",
    "DeviceManager": "clientid_twisted.policy._manage",
    "DeviceView": "clientid_twisted.policy._manage",
    "ManagementError": "clientid_twisted.policy._manage",
    "matchDevice": "clientid_twisted.policy._manage",
    "renameDevice": "clientid_twisted.policy._manage",
    "resultOf": "clientid_twisted.policy._manage",
    "LINK_KINDS": "clientid_twisted.policy._notice",
    "asciiHost": "clientid_twisted.policy._notice",
    "messageLines": "clientid_twisted.policy._notice",
    "noticeLines": "clientid_twisted.policy._notice",
    "WebhookAlertObserver": "clientid_twisted.policy._webhook",
}

__all__ = [
    "ACCOUNT_ALERT_KINDS",
    "ALERT_KINDS",
    "Alert",
    "Attempt",
    "Authentication",
    "BadDeviceName",
    "ClientIDChecker",
    "ClientIDCheckerFactory",
    "Decision",
    "DeviceManager",
    "DevicePolicy",
    "DeviceView",
    "LINK_KINDS",
    "LogAlertObserver",
    "MAX_NAME_LENGTH",
    "ManagementError",
    "POLICY_TABLES",
    "PolicyConfig",
    "PolicyFactoryContext",
    "StoreService",
    "Verdict",
    "WebhookAlertObserver",
    "accountName",
    "asciiHost",
    "attemptFromCredentials",
    "buildAuthentication",
    "checkDeviceName",
    "matchDevice",
    "messageLines",
    "noticeLines",
    "notifyAll",
    "parsePolicyConfig",
    "policyFromConfig",
    "renameDevice",
    "resolveIdentityHasher",
    "resultOf",
]

__getattr__, __dir__ = lazyExports(__name__, _PUBLIC)

if TYPE_CHECKING:
    from clientid_twisted._devicename import BadDeviceName, MAX_NAME_LENGTH, checkDeviceName
    from clientid_twisted.policy._alerts import (
        ACCOUNT_ALERT_KINDS,
        ALERT_KINDS,
        Alert,
        LogAlertObserver,
        notifyAll,
    )
    from clientid_twisted.policy._builder import (
        Authentication,
        PolicyFactoryContext,
        StoreService,
        buildAuthentication,
        resolveIdentityHasher,
    )
    from clientid_twisted.policy._checker import ClientIDChecker, attemptFromCredentials
    from clientid_twisted.policy._config import POLICY_TABLES, PolicyConfig, parsePolicyConfig
    from clientid_twisted.policy._credfactory import ClientIDCheckerFactory
    from clientid_twisted.policy._decision import Attempt, Decision, Verdict, accountName
    from clientid_twisted.policy._engine import DevicePolicy, policyFromConfig
    from clientid_twisted.policy._manage import (
        DeviceManager,
        DeviceView,
        ManagementError,
        matchDevice,
        renameDevice,
        resultOf,
    )
    from clientid_twisted.policy._notice import LINK_KINDS, asciiHost, messageLines, noticeLines
    from clientid_twisted.policy._webhook import WebhookAlertObserver
