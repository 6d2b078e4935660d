# -*- test-case-name: tests.test_relay_queue -*-
"""
The on-disk queue of mail waiting for the smarthost, C{DATA_DIR/queue/}.

It is L{twisted.mail.relaymanager.Queue}: the same directory layout (per
message C{ID-D} holds the data, C{ID-H} the envelope, C{ID-C} the data while
it arrives), the same waiting/relaying bookkeeping, one recipient per
message.  It extends Twisted's queue where that queue cannot keep the
promise a C{250} reply makes:

 - Durability: Twisted writes and renames without C{fsync}, so a message
   acknowledged just before a power cut or C{kill -9} can be lost.  Here
   the data and the envelope are synced, then renamed into place, and the
   directory is synced, all before L{QueuedMessage.eomReceived} returns
   (and so before the server answers C{250}).
 - Retry state: Twisted's envelope is a pickled C{[from, to]} and retries
   live in memory (a fixed 30 seconds).  Here the envelope is JSON (no
   pickle from disk; C{clientid-admin queue list} reads it) and carries when
   the message was queued, how often it was tried, when it is due next and
   the last error, so backoff and expiry survive a restart.
 - Removal by the operator: a message whose files are gone (C{clientid-admin
   queue remove}) is forgotten at the next directory scan.

Files written here are the server's own; the directory is mode 0700.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from attrs import evolve, frozen
from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import relaymanager
from twisted.mail.interfaces import IMessageSMTP

from clientid_twisted.server.delivery import storageError
from clientid_twisted.server.files import fsyncDirectory

__all__ = ["QueueEntry", "RelayQueue", "QueuedMessage", "FLUSH_MARKER", "isMessageID"]

FLUSH_MARKER = "flush"
"""A file of this name in the queue directory asks the running server to
try every waiting message now (C{clientid-admin queue flush})."""

STALE_SECONDS = 3600.0
"""Partial files (C{-C}, C{-T}) and envelopes without data older than this
are left over from a process that died mid-message; they are swept at
start-up.  No message takes an hour to arrive (the DATA deadline is far
shorter), so a file this old is nobody's."""

_ID = re.compile(r"[0-9a-f]{8,40}")


def isMessageID(text: str) -> bool:
    """
    Whether C{text} can be a queue ID (hex digits only, so an ID given on a
    command line can never name a path outside the queue).
    """
    return _ID.fullmatch(text) is not None


@frozen
class QueueEntry:
    """
    One queued message: one sender, one recipient.

    @ivar account: The authenticated account that submitted it; its INBOX
        gets the bounce.
    @ivar queued: When it was accepted (POSIX seconds).
    @ivar nextAttempt: When it is due to be tried (again).
    @ivar lastError: Why the last attempt failed, or L{None}.
    """

    id: str
    sender: str
    recipient: str
    account: str | None
    queued: float
    attempts: int = 0
    nextAttempt: float = 0.0
    lastError: str | None = None

    def toJSON(self) -> bytes:
        return json.dumps(
            {
                "from": self.sender,
                "to": self.recipient,
                "account": self.account,
                "queued": self.queued,
                "attempts": self.attempts,
                "next_attempt": self.nextAttempt,
                "last_error": self.lastError,
            },
            sort_keys=True,
        ).encode("utf-8")

    @classmethod
    def fromJSON(cls, messageID: str, data: bytes) -> QueueEntry:
        """
        @raise ValueError: If C{data} is not an envelope.
        """
        value = json.loads(data)
        if not isinstance(value, dict):
            raise ValueError("not an envelope")
        try:
            return cls(
                id=messageID,
                sender=str(value["from"]),
                recipient=str(value["to"]),
                account=value.get("account"),
                queued=float(value["queued"]),
                attempts=int(value.get("attempts", 0)),
                nextAttempt=float(value.get("next_attempt", 0.0)),
                lastError=value.get("last_error"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"not an envelope: {e}") from None


def _writeDurably(path: Path, data: bytes) -> None:
    """
    Replace C{path} with C{data}: written to a temporary C{-T} name,
    synced, renamed (the directory is synced by the caller).
    """
    temporary = path.with_name(path.name[:-2] + "-T")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)


@implementer(IMessageSMTP)
class QueuedMessage:
    """
    One message arriving for the smarthost.  Lines go to C{ID-C}; at the
    end of DATA the data is synced, the envelope written and synced, the
    data renamed to C{ID-D} and the directory synced, and only then does
    L{eomReceived} fire (so the C{250} follows a durable queue entry).

    Lines are stored with LF ends, as L{twisted.mail.relay} expects (its
    sender turns them into CRLF on the wire).
    """

    def __init__(self, queue: RelayQueue, entry: QueueEntry) -> None:
        self.queue = queue
        self.entry = entry
        base = Path(queue.getPath(entry.id))
        self.temporaryPath = base.with_name(entry.id + "-C")
        self.finalPath = base.with_name(entry.id + "-D")
        self.envelopePath = base.with_name(entry.id + "-H")
        try:
            fd = os.open(self.temporaryPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise storageError(e) from None
        self._file = os.fdopen(fd, "wb")

    def lineReceived(self, line: bytes) -> None:
        """
        Store a line.

        @raise twisted.mail.smtp.SMTPServerError: C{452} when the disk is
            full, C{451} for another failed write (the partial file is
            removed): temporary, as for a local delivery.
        """
        # A folded header (our Received:) arrives as one line with LF in it.
        pieces = line.split(b"\n")
        try:
            self._file.write(b"\n".join(p.rstrip(b"\r") for p in pieces) + b"\n")
        except OSError as e:
            self.connectionLost()
            raise storageError(e) from None

    def eomReceived(self) -> defer.Deferred[str]:
        """
        Make the message durable, then announce it to the queue.

        @return: A Deferred firing with the queue ID, or failing (the
            server answers 4xx) when the disk refuses.
        """
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            _writeDurably(self.envelopePath, self.entry.toJSON())
            os.rename(self.temporaryPath, self.finalPath)
            fsyncDirectory(self.finalPath.parent)
        except OSError:
            self.connectionLost()
            return defer.fail()
        self.queue.messageQueued(self.entry)
        return defer.succeed(self.entry.id)

    def connectionLost(self) -> None:
        """
        Forget the partial message.
        """
        try:
            self._file.close()
        except OSError:
            pass
        for path in (self.temporaryPath, self.envelopePath):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class RelayQueue(relaymanager.Queue):
    """
    Twisted's relay queue, made durable and given per-message retry state
    (see the module docstring).

    @ivar entries: Envelope by queue ID, for every message with data.
    @ivar onQueued: Called with each new L{QueueEntry} once it is durable
        (the relay service starts sending it).
    """

    noisy = False
    log = Logger()

    def __init__(self, directory: Path, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.entries: dict[str, QueueEntry] = {}
        self.onQueued: Callable[[QueueEntry], None] = lambda entry: None
        self._unreadable: set[str] = set()
        Path(directory).mkdir(mode=0o700, parents=True, exist_ok=True)
        relaymanager.Queue.__init__(self, str(directory))

    @property
    def path(self) -> Path:
        return Path(self.directory)

    # -- the directory --------------------------------------------------------

    def readDirectory(self) -> None:
        """
        Pick up messages that appeared (queued before a restart) and forget
        those whose files are gone (removed by the operator).
        """
        present = set(self._dataIDs())
        for gone in set(self.entries) - present:
            self.entries.pop(gone, None)
            self.waiting.pop(gone, None)
        for messageID in present:
            self.addMessage(messageID)

    def _dataIDs(self) -> Iterator[str]:
        for name in os.listdir(self.directory):
            if name.endswith("-D") and isMessageID(name[:-2]):
                yield name[:-2]

    def addMessage(self, message: str) -> None:
        if message not in self.entries:
            entry = self.readEntry(message)
            if entry is None:
                return
            self.entries[message] = entry
        relaymanager.Queue.addMessage(self, message)

    def readEntry(self, messageID: str) -> QueueEntry | None:
        """
        The envelope of C{messageID} from disk, or L{None} if it is missing
        or unreadable (logged once).
        """
        path = Path(self.getPath(messageID) + "-H")
        try:
            return QueueEntry.fromJSON(messageID, path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            if messageID not in self._unreadable:
                self._unreadable.add(messageID)
                self.log.error(
                    "relay queue: envelope {path} unreadable, message left in place: {error}",
                    path=str(path),
                    error=str(e),
                )
            return None

    def getEnvelope(self, message: str) -> list[str]:
        """
        C{[from, to]}, as Twisted's queue answers.
        """
        entry = self.entries[message]
        return [entry.sender, entry.recipient]

    def dataPath(self, messageID: str) -> Path:
        return Path(self.getPath(messageID) + "-D")

    def sweep(self, olderThan: float = STALE_SECONDS) -> int:
        """
        Remove what a process that died mid-message left behind: partial
        data and envelopes, and envelopes without data, older than
        C{olderThan} seconds.

        @return: How many files were removed.
        """
        now = time.time()
        removed = 0
        names = set(os.listdir(self.directory))
        for name in names:
            stale = name.endswith(("-C", "-T")) or (
                name.endswith("-H") and name[:-2] + "-D" not in names
            )
            if not stale or not isMessageID(name[:-2]):
                continue
            path = self.path / name
            try:
                if now - path.stat().st_mtime > olderThan:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    # -- new messages ---------------------------------------------------------

    def newMessage(self, sender: str, recipient: str, account: str | None) -> QueuedMessage:
        """
        Start receiving a message for one recipient.
        """
        now = self.clock.seconds()
        messageID = "%08x%s" % (int(now), secrets.token_hex(6))
        entry = QueueEntry(
            id=messageID,
            sender=sender,
            recipient=recipient,
            account=account,
            queued=now,
            nextAttempt=now,
        )
        return QueuedMessage(self, entry)

    def messageQueued(self, entry: QueueEntry) -> None:
        self.entries[entry.id] = entry
        relaymanager.Queue.addMessage(self, entry.id)
        self.onQueued(entry)

    # -- attempts -------------------------------------------------------------

    def due(self, now: float) -> list[QueueEntry]:
        """
        Waiting messages whose next attempt is at or before C{now}, the
        longest-waiting first.
        """
        entries = [self.entries[m] for m in self.waiting if m in self.entries]
        return sorted(
            (e for e in entries if e.nextAttempt <= now), key=lambda e: (e.nextAttempt, e.queued)
        )

    def makeAllDue(self, now: float) -> int:
        """
        Make every waiting message due now (a flush).

        @return: How many there are.
        """
        for messageID in list(self.waiting):
            entry = self.entries.get(messageID)
            if entry is not None:
                self.entries[messageID] = evolve(entry, nextAttempt=min(entry.nextAttempt, now))
        return len(self.waiting)

    def retryLater(self, messageID: str, error: str, nextAttempt: float) -> QueueEntry | None:
        """
        Record a failed attempt durably and put the message back to wait
        until C{nextAttempt}.

        @return: The updated entry, or L{None} if the message was removed
            meanwhile.
        """
        entry = self.entries.get(messageID)
        self.relayed.pop(messageID, None)
        if entry is None or not self.dataPath(messageID).exists():
            self.entries.pop(messageID, None)
            return None
        entry = evolve(entry, attempts=entry.attempts + 1, nextAttempt=nextAttempt, lastError=error)
        self.entries[messageID] = entry
        try:
            _writeDurably(Path(self.getPath(messageID) + "-H"), entry.toJSON())
            fsyncDirectory(self.path)
        except OSError as e:
            # The attempt count on disk lags; the message is still queued.
            self.log.error(
                "relay queue: could not update {messageID}: {error}",
                messageID=messageID,
                error=str(e),
            )
        self.waiting[messageID] = 1
        return entry

    def done(self, message: str) -> None:
        """
        Remove a message that was delivered or bounced.
        """
        message = os.path.basename(message)
        self.remove(message)
        self.relayed.pop(message, None)

    def remove(self, messageID: str) -> bool:
        """
        Delete a message's files (data first: without it the envelope is
        never read again).

        @return: Whether there was such a message.
        """
        found = False
        for suffix in ("-D", "-H"):
            try:
                os.unlink(self.getPath(messageID) + suffix)
                found = True
            except FileNotFoundError:
                pass
        if found:
            fsyncDirectory(self.path)
        self.entries.pop(messageID, None)
        self.waiting.pop(messageID, None)
        return found

    # -- flush ----------------------------------------------------------------

    def requestFlush(self) -> None:
        """
        Ask the running server to try every message now (used by
        C{clientid-admin queue flush}).
        """
        marker = self.path / FLUSH_MARKER
        marker.write_bytes(b"")

    def takeFlushRequest(self) -> bool:
        """
        Whether a flush was requested since the last call; the request is
        consumed.
        """
        try:
            os.unlink(self.path / FLUSH_MARKER)
        except FileNotFoundError:
            return False
        return True
