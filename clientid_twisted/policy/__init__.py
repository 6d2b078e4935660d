# -*- test-case-name: tests.test_policy_engine -*-
"""
The device policy engine: decides, per login, whether the device a client
identified itself as may use the password it presented.

    - L{ClientIDChecker} wraps any C{twisted.cred} checker with a policy;
    - L{DevicePolicy} holds the built-in rules, configured from
      C{clientid.toml} by L{policyFromConfig};
    - L{buildAuthentication} puts it all together for the runnable server;
    - alerts go to L{IAlertObserver}s: the log, the account's INBOX, a
      webhook.
"""

from clientid_twisted.policy.alerts import Alert, LogAlertObserver
from clientid_twisted.policy.checker import ClientIDChecker, attemptFromCredentials
from clientid_twisted.policy.config import PolicyConfig, parsePolicyConfig
from clientid_twisted.policy.decision import Attempt, Decision, Verdict
from clientid_twisted.policy.engine import DevicePolicy, policyFromConfig
from clientid_twisted.policy.mailnotice import MailboxAlertObserver
from clientid_twisted.policy.setup import Authentication, StoreService, buildAuthentication
from clientid_twisted.policy.webhook import WebhookAlertObserver

__all__ = [
    "Alert",
    "Attempt",
    "Authentication",
    "ClientIDChecker",
    "Decision",
    "DevicePolicy",
    "LogAlertObserver",
    "MailboxAlertObserver",
    "PolicyConfig",
    "StoreService",
    "Verdict",
    "WebhookAlertObserver",
    "attemptFromCredentials",
    "buildAuthentication",
    "parsePolicyConfig",
    "policyFromConfig",
]
