# -*- test-case-name: tests.test_imap_mailserver -*-
"""
The IMAP protocol that C{twistd clientid-mail} runs: L{ClientIDIMAP4Server}
plus what a mail store needs and Twisted's IMAP4Server leaves out or gets
wrong: C{\\Seen} on a body fetch, clean APPEND and COPY replies for a
missing mailbox, an EXISTS after APPEND into the selected mailbox, the
selected mailbox closed on disconnect, and no Nagle delay.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from clientid_twisted.imap import ClientIDIMAP4Factory, ClientIDIMAP4Server
from clientid_twisted.server.net import setNoDelay

__all__ = ["MailIMAP4Server", "MailIMAP4Factory"]

_log = Logger()


def _setsSeen(query: list[Any]) -> bool:
    """
    Whether a FETCH of these items sets C{\\Seen} (RFC 3501 section 6.4.5):
    C{BODY[...]} without C{.PEEK}, C{RFC822} and C{RFC822.TEXT}.
    """
    for item in query:
        if isinstance(item, imap4._FetchParser.Body) and not item.peek:
            return True
        if isinstance(item, (imap4._FetchParser.RFC822, imap4._FetchParser.RFC822Text)):
            return True
    return False


class MailIMAP4Server(ClientIDIMAP4Server):
    """
    IMAP4rev1 over the server's maildirs, with CLIENTID.
    """

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:
        self._closeMailbox()
        super().connectionLost(reason)

    def _closeMailbox(self) -> None:
        mbox, self.mbox = self.mbox, None
        if mbox is None:
            return
        mbox.removeListener(self)
        closeable = imap4.ICloseableMailbox(mbox, None)
        if closeable is not None:
            defer.maybeDeferred(closeable.close).addErrback(
                lambda f: _log.failure("closing mailbox on disconnect", f)
            )

    def do_FETCH(self, tag: bytes, messages: Any, query: Any, uid: int = 0) -> None:
        if query and self.mbox.isWriteable() and _setsSeen(query):
            d = defer.maybeDeferred(self.mbox.store, messages, ["\\Seen"], 1, uid)
            d.addErrback(lambda f: _log.failure("setting \\Seen on FETCH", f))
        super().do_FETCH(tag, messages, query, uid)

    select_FETCH = (do_FETCH, imap4.IMAP4Server.arg_seqset, imap4.IMAP4Server.arg_fetchatt)

    def _cbAppendGotMailbox(self, mbox: Any, tag: bytes, flags: Any, date: Any, message: Any) -> None:
        if not mbox:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        decodedFlags = [f.decode("ascii") if isinstance(f, bytes) else f for f in flags or ()]
        d = defer.maybeDeferred(mbox.addMessage, message, decodedFlags, date)
        d.addCallbacks(self._appended, self._appendFailed, (tag,), None, (tag,))

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
        _log.failure("APPEND failed", reason)
        self.sendNegativeResponse(tag, b"[SERVERBUG] APPEND failed")

    def _cbCopySelectedMailbox(self, mbox: Any, tag: bytes, messages: Any, mailbox: Any, uid: int) -> None:
        if not mbox:
            self.sendNegativeResponse(tag, b"[TRYCREATE] No such mailbox")
            return
        super()._cbCopySelectedMailbox(mbox, tag, messages, mailbox, uid)


class MailIMAP4Factory(ClientIDIMAP4Factory):
    """
    Builds L{MailIMAP4Server} protocols.
    """

    protocol = MailIMAP4Server
