# -*- test-case-name: tests.test_policy_alerts -*-
"""
Alerts: the events an account owner or the operator should hear of, and
the observer that writes them to the log.

An alert names the device by type and keyed fingerprint only: the token
never leaves the server (the drafts: identities are not to be shared with
third parties), and the fingerprint is what C{clientid-admin devices
approve|revoke --fingerprint} takes.
"""

from __future__ import annotations

from typing import Any

from attrs import frozen
from zope.interface import implementer

from twisted.logger import Logger

from clientid_twisted._authlog import describeClientID, escapeForLog
from clientid_twisted.interfaces import IAlertObserver
from clientid_twisted.store._records import Event

__all__ = ["Alert", "LogAlertObserver", "ALERT_KINDS", "ACCOUNT_ALERT_KINDS", "notifyAll"]

ALERT_KINDS: dict[str, str] = {
    "device-new": "a new device logged in",
    "device-refused": "the right password came from a device that was refused",
    "device-locked": "a device was locked after repeated failed logins",
    "account-closed": (
        "repeated failed logins from unknown devices: only known devices "
        "may log in for a while"
    ),
    "no-clientid-login": "a client that sent no device identity logged in",
    "login": "a device logged in",
    "token-locked": "a device identity was locked after trying too many accounts",
    "address-locked": "an address was locked after failed logins without CLIENTID",
    "under-attack": "under-attack mode switched on: only approved devices may log in",
}
"""Every kind of alert, with the sentence that describes it."""

ACCOUNT_ALERT_KINDS = frozenset(
    {"device-new", "device-refused", "device-locked", "account-closed", "no-clientid-login", "login"}
)
"""The kinds that concern one account's owner (the others: the operator)."""


@frozen
class Alert:
    """
    One alert.

    @ivar account: Whom it concerns, or L{None} for the operator only.
    @ivar time: When, in seconds since the epoch (the store's time).
    @ivar systemLog: Whether the system log may name the device (its type's
        C{system-log} flag); the webhook and notices always carry it.
    """

    kind: str
    time: float
    account: str | None = None
    typeName: str | None = None
    fingerprint: str | None = None
    address: str | None = None
    protocol: str | None = None
    detail: str | None = None
    systemLog: bool = True

    @classmethod
    def fromEvent(cls, event: Event) -> "Alert":
        return cls(
            kind=event.kind,
            time=event.time,
            account=event.account,
            typeName=event.typeName,
            fingerprint=event.fingerprint,
            address=event.address,
            protocol=event.protocol,
            detail=event.detail,
        )

    @property
    def summary(self) -> str:
        """
        One sentence saying what happened.
        """
        return ALERT_KINDS.get(self.kind, self.kind)

    @property
    def forAccount(self) -> bool:
        """
        Whether the account's owner should be told.
        """
        return self.account is not None and self.kind in ACCOUNT_ALERT_KINDS

    def asJSON(self) -> dict[str, Any]:
        """
        The alert as a JSON object (the webhook's body).
        """
        return {
            "kind": self.kind,
            "summary": self.summary,
            "time": self.time,
            "account": self.account,
            "type": self.typeName,
            "fingerprint": self.fingerprint,
            "address": self.address,
            "protocol": self.protocol,
            "detail": self.detail,
        }


@implementer(IAlertObserver)
class LogAlertObserver:
    """
    Writes every alert to the log as a warning, with the alert's fields as
    structured event keys (C{alertKind}, C{account}, ...).
    """

    def __init__(self, log: Logger | None = None) -> None:
        self.log = log if log is not None else Logger()

    def alertRaised(self, alert: Alert) -> None:
        self.log.warn(
            "CLIENTID alert {alertKind} for {account}: {summary} "
            "({clientID} address={address} protocol={protocol}{details})",
            alertKind=alert.kind,
            account=escapeForLog(alert.account) if alert.account else "(server)",
            summary=alert.summary,
            clientIDType=escapeForLog(alert.typeName) if alert.typeName and alert.systemLog else None,
            clientIDFingerprint=alert.fingerprint if alert.systemLog else None,
            clientID=describeClientID(alert.typeName or None, alert.fingerprint, alert.systemLog),
            address=alert.address,
            protocol=alert.protocol,
            detail=escapeForLog(alert.detail) if alert.detail else None,
            details=f": {escapeForLog(alert.detail)}" if alert.detail else "",
        )


def notifyAll(observers: Any, alert: Alert, log: Logger) -> None:
    """
    Hand C{alert} to each observer; one that raises is logged and the
    others still hear of it.
    """
    for observer in observers:
        try:
            observer.alertRaised(alert)
        except Exception:
            log.failure("alert observer {observer!r} failed", observer=observer)
