# -*- test-case-name: tests.test_imap_mailserver -*-
"""
Where we work around Twisted's IMAP4 (C{twisted.mail.imap4}) through its
private names: every override of a private C{IMAP4Server} method and every
read of a private Twisted name for IMAP lives here, each saying which
Twisted bug or gap it works around, with the report (and its reproduction)
in docs/twisted-fixes.md.  tests/test_twistedprivate.py fails when one of
these names appears anywhere else, or when a Twisted release drops one.

Why overrides and not a public seam: Twisted's IMAP4Server offers none
between a mailbox lookup and the reply (the C{_cb*} callbacks), its
errbacks are name-mangled (C{__ebFetch}), and the FETCH item classes are
in the private C{_FetchParser}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from clientid_twisted._linefixes import LineBufferMixin
from clientid_twisted._authlog import escapeForLog

__all__ = [
    "IMAP4ClientSeamsMixin",
    "IMAP4ServerFixesMixin",
    "IMAP4ServerSeamsMixin",
    "logFailed",
    "setsSeen",
]

_log = Logger()

_SPOOL_IN_MEMORY = 1024 * 1024
"""APPEND literals larger than this go to a temporary file, not memory
(Twisted keeps up to 10 MiB per session in memory)."""

if TYPE_CHECKING:
    # What the mixins are mixed into, for the type checker only: at run
    # time they derive from nothing of Twisted's (they go first).
    _IMAP4ServerBase = imap4.IMAP4Server
    _IMAP4ClientBase = imap4.IMAP4Client
else:
    _IMAP4ServerBase = _IMAP4ClientBase = object


class IMAP4ServerSeamsMixin(LineBufferMixin, _IMAP4ServerBase):
    """
    The private parts of C{IMAP4Server} the CLIENTID mixin needs, behind
    public names (L{clientid_twisted.imap.ClientIDIMAP4ServerMixin} and the
    servers built on it use these, never Twisted's names).
    """

    _busyReceiving: bool
    _pendingLiteral: Any
    _onLogout: Any
    replayHeldLines: Callable[[], None]

    @property
    def readingData(self) -> bool:
        """
        Whether C{LineReceiver.dataReceived} is still handing out the
        lines of one read (C{_busyReceiving}).  Gap: bug 1 needs to know
        when a new read, one that came through TLS, begins.
        """
        return self._busyReceiving

    @property
    def pendingLiteral(self) -> Any:
        """
        What takes the next raw bytes or line while C{parseState} is
        C{"pending"}: a literal being read, or a L{defer.Deferred} for the
        next line (C{_pendingLiteral}).  Gap: SASL continuation lines and
        the literal guards need it; Twisted has no public way to ask for
        the next line.
        """
        return self._pendingLiteral

    @pendingLiteral.setter
    def pendingLiteral(self, value: Any) -> None:
        self._pendingLiteral = value

    @property
    def logoutHook(self) -> Any:
        """
        What Twisted calls when the session ends (the realm's logout,
        C{_onLogout}).  Gap: a protocol that does its own login must set
        it, and Twisted documents no way to.
        """
        return self._onLogout

    @logoutHook.setter
    def logoutHook(self, logout: Any) -> None:
        self._onLogout = logout

    def _unblock(self) -> None:
        # Twisted calls this to run the lines it queued while a command
        # ran; the servers run them as held logins' lines are run
        # (LoginHoldMixin, refined for bug 6 and the gateway's relay).
        self.replayHeldLines()


class IMAP4ClientSeamsMixin(_IMAP4ClientBase):
    """
    The private parts of C{IMAP4Client} the CLIENTID client needs, behind
    public names.
    """

    _capCache: dict[bytes, Any] | None

    def hasCachedCapabilities(self) -> bool:
        """
        Whether C{getCapabilities()} will answer from its cache
        (C{_capCache}) without asking the server.  Gap: CLIENTID must know
        whether the capabilities were read over TLS.
        """
        return self._capCache is not None

    def _startedTLS(self, result: Any, context: Any) -> Any:
        # Twisted's private callback when STARTTLS succeeded.
        self.tlsStarted()
        return super()._startedTLS(result, context)

    def tlsStarted(self) -> None:
        """
        Called when STARTTLS succeeded, before Twisted forgets and re-reads
        the capabilities.  Gap: Twisted offers no public event for it.
        """


class _SpooledLiteral(imap4.LiteralFile):
    # Twisted's private threshold between memory and a temporary file
    # (gap: no public knob; docs/twisted-fixes.md, bug 6).
    _memoryFileLimit = _SPOOL_IN_MEMORY


def setsSeen(query: list[Any]) -> bool:
    """
    Whether a FETCH of these items sets C{\\Seen} (RFC 3501 section 6.4.5):
    C{BODY[...]} without C{.PEEK}, C{RFC822} and C{RFC822.TEXT}.

    Gap: the parsed FETCH items are instances of Twisted's private
    C{imap4._FetchParser} classes, and nothing public says which they are.
    """
    for item in query:
        if isinstance(item, imap4._FetchParser.Body) and not item.peek:
            return True
        if isinstance(item, (imap4._FetchParser.RFC822, imap4._FetchParser.RFC822Text)):
            return True
    return False


def logFailed(command: str, reason: Failure) -> None:
    """
    One line for a command a client's request made fail: the exception's
    type and text, never a traceback (a client can repeat a command
    thousands of times; a traceback each filled the disk).
    """
    _log.error(
        "{command} failed: {errorType}: {error}",
        command=command,
        errorType=type(reason.value).__name__,
        error=escapeForLog(str(reason.value)[:200]),
    )


class IMAP4ServerFixesMixin(_IMAP4ServerBase):
    """
    Overrides of C{IMAP4Server}'s private callbacks and errbacks, each for
    a bug of docs/twisted-fixes.md (numbers below).  Put it right after
    the class that uses it, before C{IMAP4Server}, in the bases.
    """

    # Attributes of IMAP4Server Twisted types too narrowly.
    transport: Any
    _pendingLiteral: Any

    # -- bug 6: SELECT leaves out UNSEEN, PERMANENTFLAGS and UIDNEXT ----------

    def _cbSelectWork(self, mbox: Any, cmdName: bytes, tag: bytes) -> None:
        """
        Twisted's, with the untagged answers RFC 3501 section 6.3.1 requires
        and Twisted leaves out: C{OK [UNSEEN n]}, C{OK [PERMANENTFLAGS
        (...)]} and C{OK [UIDNEXT n]}.
        """
        if mbox is None or "\\noselect" in [f.lower() for f in mbox.getFlags()]:
            super()._cbSelectWork(mbox, cmdName, tag)
            return
        flags = [flag.encode("ascii") if isinstance(flag, str) else flag for flag in mbox.getFlags()]
        self.sendUntaggedResponse(b"%d EXISTS" % (mbox.getMessageCount(),))
        self.sendUntaggedResponse(b"%d RECENT" % (mbox.getRecentCount(),))
        self.sendUntaggedResponse(b"FLAGS (" + b" ".join(flags) + b")")
        firstUnseen = getattr(mbox, "firstUnseen", lambda: None)()
        if firstUnseen is not None:
            self.sendPositiveResponse(None, b"[UNSEEN %d] First unseen" % (firstUnseen,))
        if mbox.isWriteable():
            # Keywords are stored (the uidlist), and new ones may be made.
            self.sendPositiveResponse(
                None, b"[PERMANENTFLAGS (" + b" ".join(flags + [b"\\*"]) + b")] Flags permitted"
            )
        else:
            self.sendPositiveResponse(None, b"[PERMANENTFLAGS ()] Read-only mailbox")
        self.sendPositiveResponse(None, b"[UIDVALIDITY %d] UIDs valid" % (mbox.getUIDValidity(),))
        self.sendPositiveResponse(None, b"[UIDNEXT %d] Predicted next UID" % (mbox.getUIDNext(),))
        mode = b"READ-WRITE" if mbox.isWriteable() else b"READ-ONLY"
        mbox.addListener(self)
        self.sendPositiveResponse(tag, b"[" + mode + b"] " + cmdName + b" successful")
        self.state = "select"
        self.mbox = mbox

    # -- bug 6: large APPEND literals held in memory ----------------------------

    def _fileLiteral(self, size: int) -> defer.Deferred[Any]:
        # Twisted's, with a literal that spools to disk sooner.
        d: defer.Deferred[Any] = defer.Deferred()
        self.parseState = "pending"
        self._pendingLiteral = _SpooledLiteral(size, d)
        self.sendContinuationRequest(b"Ready for %d octets of data" % (size,))
        self.setRawMode()
        return d

    # -- bug 5: FETCH failures show the exception's text, with a traceback ------

    def _IMAP4Server__ebFetch(self, reason: Failure, tag: bytes) -> None:
        # Twisted's private errback for FETCH: a traceback in the log and
        # the exception's text in a BAD for whatever failed.
        self.setTimeout(self._oldTimeout)
        del self._oldTimeout
        if reason.check(imap4.IllegalIdentifierError, imap4.IllegalQueryError):
            self.sendBadResponse(tag, b"FETCH failed: invalid message set")
            return
        logFailed("FETCH", reason)
        self.sendNegativeResponse(tag, b"[SERVERBUG] FETCH failed")

    def _IMAP4Server__ebSpewMessage(self, reason: Failure) -> None:
        # A message failed half-way through its FETCH response: nothing
        # can be said to the client in step, so the connection ends (as in
        # Twisted), with one log line instead of a traceback.
        logFailed("FETCH response", reason)
        self.transport.loseConnection()

    # -- gap: APPEND/COPY to a missing mailbox get no [TRYCREATE] (RFC 3501
    # -- section 6.3.11); bug 3: STATUS with an unknown item goes unanswered;
    # -- bug 4: SEARCH errors from the client are server errors -------------------

    def _cbAppendGotMailbox(self, mbox: Any, tag: bytes, flags: Any, date: Any, message: Any) -> None:
        if not mbox:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        decodedFlags = [f.decode("ascii") if isinstance(f, bytes) else f for f in flags or ()]
        d = defer.maybeDeferred(mbox.addMessage, message, decodedFlags, date)
        d.addCallbacks(self._appended, self._appendFailed, callbackArgs=(tag,), errbackArgs=(tag,))

    def _appended(self, result: object, tag: bytes) -> None:
        # The selected mailbox announces the new message (EXISTS) itself
        # when it notices it; only it knows this session's count.
        poll = getattr(self.mbox, "poll", None)
        if callable(poll):
            poll()
        self.sendPositiveResponse(tag, b"APPEND completed")

    def _appendFailed(self, reason: Failure, tag: bytes) -> None:
        if reason.check(imap4.MailboxException):
            self.sendNegativeResponse(tag, b"APPEND failed: " + str(reason.value).encode("ascii", "replace"))
            return
        logFailed("APPEND", reason)
        self.sendNegativeResponse(tag, b"[SERVERBUG] APPEND failed")

    def _cbStatusGotMailbox(self, mbox: Any, tag: bytes, mailbox: str, names: list[str]) -> None:
        # Twisted's failure path raises a TypeError of its own (it adds a
        # str to bytes), so an unknown STATUS item left the command
        # unanswered and a traceback in the log.
        if not mbox:
            self.sendNegativeResponse(tag, b"Could not open mailbox")
            return
        d = defer.maybeDeferred(mbox.requestStatus, names)
        d.addCallbacks(
            self._statusReady, self._statusFailed, callbackArgs=(tag, mailbox), errbackArgs=(tag,)
        )

    def _statusReady(self, status: dict[str, int], tag: bytes, mailbox: str) -> None:
        items = " ".join(f"{name} {value}" for name, value in status.items())
        self.sendUntaggedResponse(
            b"STATUS " + mailbox.encode("imap4-utf-7") + b" (" + items.encode("ascii") + b")"
        )
        self.sendPositiveResponse(tag, b"STATUS complete")

    def _statusFailed(self, reason: Failure, tag: bytes) -> None:
        if reason.check(KeyError):
            self.sendBadResponse(tag, b"STATUS failed: unknown status item")
            return
        logFailed("STATUS", reason)
        self.sendNegativeResponse(tag, b"[SERVERBUG] STATUS failed")

    def _IMAP4Server__ebSearch(self, reason: Failure, tag: bytes) -> None:
        # Twisted's private errback for SEARCH (name-mangled, so this is
        # how a subclass reaches it): it logs every failure with a
        # traceback, also a client's unknown search key.
        if reason.check(imap4.IllegalQueryError, imap4.IllegalClientResponse):
            self.sendBadResponse(tag, b"SEARCH failed: invalid search criteria")
            return
        logFailed("SEARCH", reason)
        self.sendNegativeResponse(tag, b"[SERVERBUG] SEARCH failed")

    def _cbCopySelectedMailbox(self, mbox: Any, tag: bytes, messages: Any, mailbox: Any, uid: int) -> None:
        if not mbox:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        super()._cbCopySelectedMailbox(mbox, tag, messages, mailbox, uid)
