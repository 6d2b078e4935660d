# -*- test-case-name: tests.test_policy_engine -*-
"""
What the checker asks the policy and what the policy answers.
"""

from __future__ import annotations

import enum
from typing import Any

from attrs import frozen

from clientid_twisted._identity import ClientIdentity

__all__ = ["Verdict", "Attempt", "Decision", "accountName"]


class Verdict(enum.Enum):
    """
    A policy's answer before the password is checked.
    """

    ACCEPT = "accept"
    """The password decides."""
    REJECT = "reject"
    """Refuse whatever the password; the client sees a wrong password."""
    TEMPFAIL = "tempfail"
    """Cannot decide now (454 4.7.0, NO [UNAVAILABLE])."""


def accountName(username: object) -> str | None:
    """
    The key a login name is kept under: the name folded to lower case, or
    L{None} if it is empty or not UTF-8.
    """
    if isinstance(username, bytes):
        try:
            username = username.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(username, str) or not username:
        return None
    return username.lower()


@frozen
class Attempt:
    """
    One login attempt, as the policy sees it.

    @ivar account: The login name folded to lower case (L{accountName}),
        or L{None} if it cannot name an account.
    @ivar identity: The CLIENTID presented on the connection, if any.
    @ivar address: The client's IP address (text), if known.
    """

    account: str | None
    identity: ClientIdentity | None = None
    address: str | None = None
    protocolName: str = "unknown"
    secure: bool = False


@frozen
class Decision:
    """
    A policy's answer to L{Attempt}, handed back to it with the outcome.

    @ivar reason: Why, for the log; never sent to the client.
    @ivar context: What the policy that made the decision needs to record
        its outcome; opaque to everyone else.
    """

    attempt: Attempt
    verdict: Verdict
    reason: str = ""
    context: Any = None
