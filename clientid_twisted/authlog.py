# -*- test-case-name: tests.test_smtp_server,tests.test_imap_server -*-
"""
How both protocols log a login that did not succeed.

The wire says nothing about why; the log says what kind of failure it was
(C{authEvent}: C{failed}, C{tempfail} or C{error}), with the identity's type
and fingerprint, never the token.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted.errors import TemporaryAuthenticationFailure

__all__ = ["logLoginFailure"]


def logLoginFailure(log: Logger, reason: Failure, **fields: Any) -> bool:
    """
    Log a login that failed.

    @param fields: The event's fields: C{command}, C{protocol}, C{peer},
        C{username}, C{clientIDType}, C{clientIDFingerprint}.
    @return: L{True} for a refusal (wrong password, unknown user, device
        policy: answer with the wrong-password reply), L{False} for anything
        else (answer with a temporary failure).
    """
    if reason.check(UnauthorizedLogin):
        log.info(
            "{command} failed for {username} from {peer} "
            "(CLIENTID type={clientIDType} fingerprint={clientIDFingerprint})",
            authEvent="failed",
            **fields,
        )
        return True
    if reason.check(TemporaryAuthenticationFailure):
        log.warn(
            "{command} could not be decided for {username} from {peer}: {why}",
            authEvent="tempfail",
            why=str(reason.value),
            **fields,
        )
    else:
        log.failure(
            "{command} raised for {username} from {peer}",
            reason,
            authEvent="error",
            **fields,
        )
    return False
