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
      application adds (the server: the account's INBOX).

The names load on first use (see L{clientid_twisted._lazyexports}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clientid_twisted._lazyexports import lazyExports

_PUBLIC = {
    "Alert": "clientid_twisted.policy._alerts",
    "LogAlertObserver": "clientid_twisted.policy._alerts",
    "ClientIDChecker": "clientid_twisted.policy._checker",
    "attemptFromCredentials": "clientid_twisted.policy._checker",
    "PolicyConfig": "clientid_twisted.policy._config",
    "parsePolicyConfig": "clientid_twisted.policy._config",
    "Attempt": "clientid_twisted.policy._decision",
    "Decision": "clientid_twisted.policy._decision",
    "Verdict": "clientid_twisted.policy._decision",
    "DevicePolicy": "clientid_twisted.policy._engine",
    "policyFromConfig": "clientid_twisted.policy._engine",
    "Authentication": "clientid_twisted.policy._builder",
    "StoreService": "clientid_twisted.policy._builder",
    "buildAuthentication": "clientid_twisted.policy._builder",
    "WebhookAlertObserver": "clientid_twisted.policy._webhook",
}

__all__ = [
    "Alert",
    "Attempt",
    "Authentication",
    "ClientIDChecker",
    "Decision",
    "DevicePolicy",
    "LogAlertObserver",
    "PolicyConfig",
    "StoreService",
    "Verdict",
    "WebhookAlertObserver",
    "attemptFromCredentials",
    "buildAuthentication",
    "parsePolicyConfig",
    "policyFromConfig",
]

__getattr__, __dir__ = lazyExports(__name__, _PUBLIC)

if TYPE_CHECKING:
    from clientid_twisted.policy._alerts import Alert, LogAlertObserver
    from clientid_twisted.policy._builder import Authentication, StoreService, buildAuthentication
    from clientid_twisted.policy._checker import ClientIDChecker, attemptFromCredentials
    from clientid_twisted.policy._config import PolicyConfig, parsePolicyConfig
    from clientid_twisted.policy._decision import Attempt, Decision, Verdict
    from clientid_twisted.policy._engine import DevicePolicy, policyFromConfig
    from clientid_twisted.policy._webhook import WebhookAlertObserver
