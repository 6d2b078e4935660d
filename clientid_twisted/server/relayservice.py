# -*- test-case-name: tests.test_relay_service -*-
"""
The service that empties the relay queue into the smarthost: retries with
backoff, gives up after C{[relay] max_queue_days}, and bounces into the
sender's INBOX.

Twisted's L{SmartHostSMTPRelayingManager
<twisted.mail.relaymanager.SmartHostSMTPRelayingManager>} is not used for
this: it looks up MX records instead of using one configured smarthost
(with STARTTLS and AUTH), backs off a fixed 30 seconds with no per-message
schedule or expiry, queues its bounces to be relayed like any other mail,
and its Python 3 code path is broken (C{dict.iteritems}, a lazy C{map}
used for its side effects).  What it does, keep a few connections busy with
waiting messages from L{Queue <twisted.mail.relaymanager.Queue>} and put
them back on failure, is the loop below, with the queue's own bookkeeping
(C{setRelaying}, C{setWaiting}, C{done}).

Queued messages are picked up when the service starts (including those left
by a server that was killed), when a new one is queued, and every
L{POLL_SECONDS} (which is also how C{clientid-admin queue flush} and
C{queue remove} reach a running server: through the queue directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted._authlog import escapeForLog
from clientid_twisted.server.delivery import deliverToInbox
from clientid_twisted.server.dsn import DeliveryFailure, bounceLines, originalHeaders
from clientid_twisted.server.relayqueue import QueueEntry, RelayQueue
from clientid_twisted.server.relaysender import Refused, describeFailure
from clientid_twisted.server.users import UserDatabase

__all__ = ["RelayService", "InboxBouncer", "retryDelay", "POLL_SECONDS"]

RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
POLL_SECONDS = 5.0
CONCURRENCY = 2
"""Messages sent at once (one connection each), as few as Twisted's
smarthost manager uses by default: a submission server's outgoing mail is
light, and a smarthost may limit connections per client."""


def retryDelay(failedAttempts: int) -> float:
    """
    Seconds to wait after the C{failedAttempts}-th failed attempt: 1, 2,
    4, 8, 16 and 32 minutes, then every hour until the message expires.
    """
    exponent = min(max(failedAttempts, 1) - 1, 16)
    return min(RETRY_FIRST_SECONDS * 2**exponent, RETRY_MAX_SECONDS)


class InboxBouncer:
    """
    Returns a failed message to the account that submitted it: an RFC 3464
    report written into that account's INBOX.
    """

    log = Logger()

    def __init__(
        self, dataDir: Path, users: UserDatabase, hostname: str, queue: RelayQueue, clock: Any
    ) -> None:
        self.dataDir = Path(dataDir)
        self.users = users
        self.hostname = hostname
        self.queue = queue
        self.clock = clock

    def __call__(self, entry: QueueEntry, failure: DeliveryFailure) -> Path | None:
        """
        Write the bounce; blocking, like local delivery.

        @return: Its path, or L{None} when nobody gets one (a null sender,
            RFC 3461 section 6.2, or an account removed since).
        @raise OSError: If the INBOX cannot be written (the message stays
            queued and is bounced at the next attempt).
        """
        if not entry.sender or entry.account is None:
            return None
        lines = bounceLines(
            entry,
            failure,
            self.hostname,
            self.clock.seconds(),
            originalHeaders(self.queue.dataPath(entry.id)),
        )
        return deliverToInbox(
            self.dataDir, self.users, self.hostname, entry.account, lines, clock=self.clock
        )


class RelayService(service.Service):
    """
    Sends queued messages to the smarthost.

    @ivar queue: The queue.
    @ivar sending: Attempt in progress by queue ID.
    """

    name = "relay"
    log = Logger()

    def __init__(
        self,
        queue: RelayQueue,
        send: Callable[[QueueEntry, Path], defer.Deferred[None]],
        bounce: Callable[[QueueEntry, DeliveryFailure], Path | None],
        maxQueueSeconds: float,
        smarthost: str,
        clock: Any = None,
        pollSeconds: float = POLL_SECONDS,
        concurrency: int = CONCURRENCY,
    ) -> None:
        """
        @param send: One attempt (L{SmarthostClient.send
            <clientid_twisted.server.relaysender.SmarthostClient.send>}):
            fires on success, fails with L{Refused} for a permanent refusal.
        @param bounce: Returns a message to its sender (L{InboxBouncer}).
        @param smarthost: The smarthost's name, for bounces and the log.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.queue = queue
        self.send = send
        self.bounce = bounce
        self.maxQueueSeconds = maxQueueSeconds
        self.smarthost = smarthost
        self.clock = clock
        self.pollSeconds = pollSeconds
        self.concurrency = concurrency
        self.sending: dict[str, defer.Deferred[None]] = {}
        self._loop: task.LoopingCall | None = None
        self._kick: Any = None

    def startService(self) -> None:
        service.Service.startService(self)
        swept = self.queue.sweep()
        self.queue.readDirectory()
        self.log.info(
            "relay queue {path}: {count} message(s) waiting, smarthost {smarthost}"
            "{swept}",
            path=str(self.queue.path),
            count=len(self.queue.entries),
            smarthost=self.smarthost,
            swept=f" ({swept} partial file(s) of a stopped server removed)" if swept else "",
        )
        self.queue.onQueued = self._queued
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.pollSeconds, now=True).addErrback(
            lambda f: self.log.failure("relay queue loop stopped", f)
        )

    def stopService(self) -> defer.Deferred[None] | None:
        service.Service.stopService(self)
        self.queue.onQueued = lambda entry: None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._kick is not None and self._kick.active():
            self._kick.cancel()
        # Unfinished attempts stay queued and are tried again at start-up.
        for attempt in list(self.sending.values()):
            attempt.cancel()
        return None

    def queueLength(self) -> int:
        """
        Messages in the queue (waiting or being sent).
        """
        return len(self.queue.entries)

    # -- the loop -------------------------------------------------------------

    def _queued(self, entry: QueueEntry) -> None:
        # Called inside DATA's end: start sending soon, not in the middle
        # of the reply.
        if self.running and (self._kick is None or not self._kick.active()):
            self._kick = self.clock.callLater(0, self.check)

    def check(self) -> None:
        """
        Take a flush request, rescan the queue, start due attempts.
        """
        now = self.clock.seconds()
        flush = self.queue.takeFlushRequest()
        self.queue.readDirectory()
        if flush:
            count = self.queue.makeAllDue(now)
            self.log.info("relay queue flush requested: {count} message(s) due now", count=count)
        for entry in self.queue.due(now):
            if len(self.sending) >= self.concurrency:
                break
            self._start(entry)

    def _start(self, entry: QueueEntry) -> None:
        self.queue.setRelaying(entry.id)
        attempt = defer.maybeDeferred(self.send, entry, self.queue.dataPath(entry.id))
        self.sending[entry.id] = attempt
        attempt.addCallbacks(
            self._sent, self._failed, callbackArgs=(entry,), errbackArgs=(entry,)
        )
        attempt.addErrback(
            lambda f: self.log.failure("relay queue: {id} not handled", f, id=entry.id)
        )

        def finished(result: object) -> None:
            self.sending.pop(entry.id, None)
            if self.running:
                # A slot is free: the next due message need not wait for
                # the poll.
                self._queued(entry)

        attempt.addBoth(finished)

    def _sent(self, result: object, entry: QueueEntry) -> None:
        self.queue.done(entry.id)
        self.log.info(
            "relayed {id} for {account} to <{recipient}> via {smarthost}",
            id=entry.id,
            account=escapeForLog(entry.account),
            recipient=escapeForLog(entry.recipient),
            smarthost=self.smarthost,
        )

    def _failed(self, reason: Failure, entry: QueueEntry) -> None:
        if reason.check(defer.CancelledError) and not self.running:
            # Stopping: not an attempt; the message waits for the next start.
            self.queue.relayed.pop(entry.id, None)
            if entry.id in self.queue.entries:
                self.queue.waiting[entry.id] = 1
            return
        now = self.clock.seconds()
        error = describeFailure(reason)
        if isinstance(reason.value, Refused):
            self._giveUp(
                entry,
                DeliveryFailure(reason.value.status, error, remoteMTA=self.smarthost),
                error,
            )
            return
        if now - entry.queued >= self.maxQueueSeconds:
            self._giveUp(entry, DeliveryFailure("4.4.7", error, expired=True), error)
            return
        updated = self.queue.retryLater(entry.id, error, now + retryDelay(entry.attempts + 1))
        if updated is not None:
            self.log.warn(
                "relay of {id} to <{recipient}> failed ({error}); attempt {attempts}, "
                "next in {delay:.0f} s",
                id=entry.id,
                recipient=escapeForLog(entry.recipient),
                error=error,
                attempts=updated.attempts,
                delay=updated.nextAttempt - now,
            )

    def _giveUp(self, entry: QueueEntry, failure: DeliveryFailure, error: str) -> None:
        try:
            bounced = self.bounce(entry, failure)
        except OSError as e:
            self.log.error(
                "relay of {id} failed for good ({error}) but the bounce could not be "
                "written: {why}; kept in the queue",
                id=entry.id,
                error=error,
                why=str(e),
            )
            self.queue.retryLater(entry.id, error, self.clock.seconds() + RETRY_FIRST_SECONDS)
            return
        self.queue.done(entry.id)
        self.log.warn(
            "relay of {id} to <{recipient}> failed for good ({error}); {outcome}",
            id=entry.id,
            recipient=escapeForLog(entry.recipient),
            error=error,
            outcome=f"bounced to {escapeForLog(entry.account)}" if bounced else "no bounce (null sender or no account)",
        )
