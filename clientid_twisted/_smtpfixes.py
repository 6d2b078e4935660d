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

from clientid_twisted._linefixes import LineBufferMixin

__all__ = ["ESMTPSeamsMixin", "ESMTPSenderSeamsMixin", "SMTPServerFixesMixin"]

if TYPE_CHECKING:
    # What the mixins are mixed into, for the type checker only: at run
    # time they derive from nothing of Twisted's (they go first).
    _SMTPBase = smtp.SMTP
    _ESMTPBase = smtp.ESMTP
    _ESMTPSenderBase = smtp.ESMTPSender
else:
    _SMTPBase = _ESMTPBase = _ESMTPSenderBase = object


class ESMTPSeamsMixin(LineBufferMixin, _ESMTPBase):
    """
    The private parts of C{ESMTP} the CLIENTID mixin needs, behind public
    names (L{clientid_twisted.smtp.ClientIDESMTPMixin} and the servers
    built on it use these, never Twisted's names).
    """

    _onLogout: Any

    @property
    def logoutHook(self) -> Any:
        """
        What Twisted calls when the session ends (the realm's logout,
        C{_onLogout}).  Gap: a protocol that forgets an AUTH (after
        STARTTLS) or does its own login must run or set it, and Twisted
        documents no way to.
        """
        return self._onLogout

    @logoutHook.setter
    def logoutHook(self, logout: Any) -> None:
        self._onLogout = logout

    def _cbAuthenticated(self, loginInfo: Any) -> None:
        # Twisted's private callback for a successful portal login.
        self.loginSucceeded(loginInfo)

    def loginSucceeded(self, loginInfo: Any) -> None:
        """
        Finish an AUTH the portal accepted: the avatar becomes the
        delivery, C{235} goes out (Twisted's C{_cbAuthenticated}).  Gap:
        there is no public seam between a checker's result and the reply,
        and the policy decides before the reply.
        """
        super()._cbAuthenticated(loginInfo)


class ESMTPSenderSeamsMixin(_ESMTPSenderBase):
    """
    The private parts of C{ESMTPClient} the CLIENTID sender needs.
    """

    _tlsMode: bool

    @property
    def tlsMode(self) -> bool:
        """
        Whether the sender runs, or is about to run, over TLS
        (C{_tlsMode}).  Gap: CLIENTID may only go out over TLS, and Twisted
        says so nowhere public.
        """
        return self._tlsMode


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
