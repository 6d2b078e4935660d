# -*- test-case-name: tests.test_policy_engine -*-
"""
The names the policy gives to what it keeps in a store.

Stores treat these as opaque strings; the policy and the admin command
share them from here, so an operator's C{tokens unlock} clears exactly what
the policy set.  Accounts and addresses come from the network: they are only
ever used as opaque parts of a key, never parsed back.
"""

from __future__ import annotations

__all__ = [
    "tokenRevoked",
    "tokenLocked",
    "deviceFailures",
    "tokenAccounts",
    "accountClosed",
    "unknownFailures",
    "addressLocked",
    "addressFailures",
    "alerted",
    "UNDER_ATTACK",
    "ATTACK_FAILURES",
    "accountScope",
    "tokenScope",
    "addressScope",
    "tokenKeys",
]

UNDER_ATTACK = "under-attack"
ATTACK_FAILURES = "attack-failures"


def tokenRevoked(digest: str) -> str:
    """An operator's revocation of a token on every account."""
    return "token-revoked:" + digest


def tokenLocked(digest: str) -> str:
    """A token locked by its own failures or by trying too many accounts."""
    return "token-locked:" + digest


def deviceFailures(digest: str) -> str:
    return "device-failures:" + digest


def tokenAccounts(digest: str) -> str:
    return "token-accounts:" + digest


def accountClosed(account: str) -> str:
    """An account admitting only its known devices for a while."""
    return "account-closed:" + account


def unknownFailures(account: str) -> str:
    return "unknown-failures:" + account


def addressLocked(address: str) -> str:
    return "address-locked:" + address


def addressFailures(address: str) -> str:
    return "address-failures:" + address


def alerted(kind: str, *about: str) -> str:
    """The marker that keeps one alert from repeating too often."""
    return "alerted:" + kind + ":" + "\x00".join(about)


def accountScope(account: str) -> str:
    return "account:" + account


def tokenScope(digest: str) -> str:
    return "token:" + digest


def addressScope(address: str) -> str:
    return "address:" + address


def tokenKeys(digest: str) -> tuple[str, ...]:
    """
    Everything C{tokens unlock} clears: revocation, lock, and the counts
    that lead to a lock.
    """
    return (
        tokenRevoked(digest),
        tokenLocked(digest),
        deviceFailures(digest),
        tokenAccounts(digest),
    )


def accountKeys(account: str) -> tuple[str, ...]:
    """
    The account's own locks and counts, which C{user remove} clears so a
    new account of the same name starts clean.
    """
    return (accountClosed(account), unknownFailures(account))
