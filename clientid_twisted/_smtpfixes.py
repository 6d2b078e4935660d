# -*- test-case-name: tests.test_submission -*-
"""
Where we work around Twisted's SMTP (C{twisted.mail.smtp}) through its
private names: every override of a private C{SMTP}/C{ESMTP} method lives
here, each saying which Twisted bug or gap it works around, with the
report (and its reproduction) in docs/twisted-fixes.md.
tests/test_twistedprivate.py fails when one of these names appears
anywhere else, or when a Twisted release drops one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.mail import smtp
from twisted.python.failure import Failure

__all__ = ["SMTPServerFixesMixin"]

if TYPE_CHECKING:
    _SMTPBase = smtp.SMTP
else:
    _SMTPBase = object


class SMTPServerFixesMixin(_SMTPBase):
    """
    Overrides of C{SMTP}'s private methods.  Put it right after the class
    that uses it, before C{SMTP}, in the bases.
    """

    # -- bug 7: a failed store at the final dot is a permanent 550 -------------

    def _messageHandled(self, resultList: list[tuple[bool, Any]]) -> None:
        """
        The reply at the end of DATA.  Twisted's private callback answers
        any failed C{IMessage.eomReceived} with C{550} and a traceback; this
        answers success as Twisted does and hands the failures to
        L{messageNotStored}, the public hook that picks the reply.
        """
        failures = [result for success, result in resultList if not success]
        if not failures:
            self.sendCode(250, b"Delivery in progress")
            return
        self.messageNotStored(failures)

    def messageNotStored(self, failures: list[Failure]) -> None:
        """
        Log and answer a message some copy of which could not be stored
        (a temporary 4xx, RFC 5321 section 4.2.5).  The protocol that
        uses this mixin defines it.
        """
        raise NotImplementedError(f"{type(self).__name__} must answer a failed store")
