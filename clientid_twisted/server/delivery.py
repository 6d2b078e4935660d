# -*- test-case-name: tests.test_delivery -*-
"""
Local delivery for the submission server: authenticated senders may mail
the server's own accounts, each of which has a maildir under
C{DATA_DIR/mail/<address>/}.  Other recipients are refused at RCPT (no
open relay), unless C{[relay]} names a smarthost: then an authenticated
sender's mail for them goes into the relay queue
(L{clientid_twisted.server.relayqueue}).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from zope.interface import Interface, implementer

from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4, smtp
from twisted.mail.interfaces import IMessageDelivery, IMessageSMTP
from twisted.python.failure import Failure

from clientid_twisted.server.files import fsyncDirectory
from clientid_twisted.server.users import (
    InvalidAddress,
    UserDatabase,
    UserDatabaseError,
    normalizeAddress,
)

__all__ = [
    "MailRealm",
    "SubmissionDelivery",
    "MaildirMessageWriter",
    "maildirPath",
    "ensureMaildir",
    "storageError",
    "removeStaleTemporaryFiles",
    "deliverToInbox",
]


def maildirPath(dataDir: Path, address: str) -> Path:
    """
    The maildir of the account C{address} (any case).

    @raise InvalidAddress: If C{address} is not a valid account name, so
        it can never name a path outside C{dataDir/mail}.
    """
    return Path(dataDir) / "mail" / normalizeAddress(address)


class _UniqueNames:
    """
    Maildir file names: C{<seconds>.M<microseconds>P<pid>Q<n>.<host>}, unique
    across processes and across deliveries in one microsecond (C{n} counts
    per process, not per session).
    """

    _counter = itertools.count(1)

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")

    def generate(self) -> str:
        count = next(self._counter)
        now = self._clock.seconds()
        return "%d.M%06dP%dQ%d.%s" % (
            int(now),
            int((now - int(now)) * 1e6),
            os.getpid(),
            count,
            self._host,
        )


_STORAGE_FULL = frozenset([errno.ENOSPC, errno.EDQUOT])


def storageError(error: OSError) -> smtp.SMTPServerError:
    """
    The temporary reply for a failed write: C{452 4.3.1} when the disk or
    quota is full, C{451 4.3.0} for anything else.  Never 5xx: the client
    keeps the message and tries again (RFC 5321 section 4.2.5).
    """
    if error.errno in _STORAGE_FULL:
        return smtp.SMTPServerError(452, b"4.3.1 Insufficient system storage")
    return smtp.SMTPServerError(451, b"4.3.0 Local error in processing, try again later")


def _openTemporary(path: Path) -> BinaryIO:
    """
    Create C{path} (mode 0600, never an existing file) for writing.  The
    seam tests use to make a write fail as a full disk does.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


class _SpooledMessage:
    """
    One message for all of its recipients: written once to a temporary
    file in the first recipient's C{tmp/}, synced, then linked into every
    recipient's C{new/} (copied where a link is impossible), and removed.

    One file, not one per recipient: a message to a hundred accounts holds
    one descriptor and is written once.
    """

    def __init__(self, temporaryPath: Path) -> None:
        self.temporaryPath = temporaryPath
        self._file: BinaryIO | None = _openTemporary(temporaryPath)
        self._members = 0
        self._done = 0
        self._error: OSError | None = None
        self.failed = False

    def join(self) -> int:
        """
        Count one more recipient; the first one writes the data.

        @return: The recipient's number, from 0.
        """
        self._members += 1
        return self._members - 1

    def write(self, data: bytes) -> None:
        """
        @raise smtp.SMTPServerError: 451/452 when the write fails; the
            partial file is gone by then.
        """
        if self._file is None:
            return
        try:
            self._file.write(data)
        except OSError as e:
            self._error = e
            self.abort()
            raise storageError(e) from None

    def finish(self) -> None:
        """
        Make the data durable; the first recipient's end of data does it.

        @raise OSError: The write failed (for every recipient); the partial
            file is gone.
        """
        if self._error is not None:
            raise self._error
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        except OSError as e:
            self._error = e
            self.abort()
            raise

    @property
    def joinable(self) -> bool:
        """
        Whether another recipient may still share this message: its data
        is not finished, nor abandoned.
        """
        return self._file is not None and not self.failed

    def publish(self, final: Path) -> None:
        """
        Put the finished message at C{final} (a recipient's C{new/}).
        """
        try:
            os.link(self.temporaryPath, final)
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            _copyDurably(self.temporaryPath, final)
        fsyncDirectory(final.parent)

    def release(self) -> None:
        """
        One recipient is done with the file (delivered or failed); the last
        one removes it.
        """
        self._done += 1
        if self._done >= self._members:
            self._unlink()

    def abort(self) -> None:
        """
        Give up on the message: close and remove the partial file.
        """
        self.failed = True
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        self._unlink()

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporaryPath)


def _copyDurably(source: Path, destination: Path) -> None:
    """
    Copy C{source} to C{destination} (which must not exist) through a
    temporary name beside it, synced before it appears.
    """
    temporary = destination.parent.parent / "tmp" / (destination.name + ".copy")
    try:
        with open(source, "rb") as inFile, _openTemporary(temporary) as outFile:
            shutil.copyfileobj(inFile, outFile)
            outFile.flush()
            os.fsync(outFile.fileno())
        os.link(temporary, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


@implementer(IMessageSMTP)
class MaildirMessageWriter:
    """
    One recipient's copy of a message being received into a maildir: the
    data goes once into a L{_SpooledMessage} shared by all recipients of
    the transaction, and appears in C{new/} at the end of DATA, complete
    and synced, so a reader never sees a partial message.  A lost
    connection removes the partial file.

    @ivar temporaryPath: Where the message is being written.
    @ivar finalPath: Where it appears once complete.
    """

    def __init__(
        self, maildir: Path, name: str, spool: _SpooledMessage | None = None
    ) -> None:
        if spool is None:
            spool = _SpooledMessage(maildir / "tmp" / name)
        self._spool = spool
        self._writer = spool.join() == 0
        self._released = False
        self.temporaryPath = spool.temporaryPath
        self.finalPath = maildir / "new" / name

    def lineReceived(self, line: bytes) -> None:
        """
        Store a line with CRLF line ends (the first recipient's copy
        writes; the others see the same lines).

        The IMAP side serves message files byte for byte (C{BODY[]}), and
        IMAP, like RFC 5322, wants CRLF; so a bare LF inside a line (our
        folded C{Received:} header, or a sloppy client) becomes CRLF too.

        @raise smtp.SMTPServerError: 452 when the disk is full, 451 for
            another failed write.
        """
        if self._writer:
            pieces = line.split(b"\n")
            self._spool.write(b"\r\n".join(p.rstrip(b"\r") for p in pieces) + b"\r\n")

    def eomReceived(self) -> defer.Deferred[Path]:
        """
        Make the message durable and visible.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with
            its path in C{new/}, or failing with the L{OSError}.
        """
        try:
            self._spool.finish()
            self._spool.publish(self.finalPath)
        except OSError:
            # A failed link into this maildir spoils no other recipient's
            # copy; a failed write (in finish) has spoilt them all.
            failure = Failure()
            self._release()
            return defer.fail(failure)
        self._release()
        return defer.succeed(self.finalPath)

    def connectionLost(self) -> None:
        """
        Forget the partial message.
        """
        self._spool.abort()
        self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._spool.release()


def ensureMaildir(maildir: Path) -> None:
    """
    Make C{maildir} and its C{cur/ new/ tmp/}, whatever part of them exists.

    Twisted's C{initializeMaildir} creates the subdirectories only when it
    created the top one, so two writers racing for a new account's first
    message (a delivery and a policy notice, say) could leave one of them
    facing a maildir without C{tmp/}.
    """
    maildir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(mode=0o700, exist_ok=True)


_DOMAIN = re.compile(rb"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?")
_COMMENT_UNSAFE = re.compile(rb"[^\x21-\x27\x2a-\x5b\x5d-\x7e]")


def _addressLiteral(ip: bytes) -> bytes:
    ip = _COMMENT_UNSAFE.sub(b"?", ip)
    return b"[IPv6:%s]" % (ip,) if b":" in ip else b"[%s]" % (ip,)


@implementer(IMessageDelivery)
class SubmissionDelivery:
    """
    What an authenticated submission session may do: send to local
    accounts.

    The client's HELO name and address go into the C{Received:} header, so
    they are checked first: a HELO argument with a bare LF (Twisted splits
    lines at CRLF only) must not forge header lines into the stored message.

    @ivar avatarId: The authenticated account, or L{None}.
    """

    log = Logger()

    def __init__(
        self,
        dataDir: Path,
        users: UserDatabase,
        hostname: str,
        avatarId: str | None = None,
        clock: Any = None,
        withProtocol: str = "ESMTPSA",
        relayQueue: Any = None,
        senders: Any = None,
    ) -> None:
        """
        @param relayQueue: The L{RelayQueue
            <clientid_twisted.server.relayqueue.RelayQueue>} for recipients
            that are not local, or L{None} to refuse them.
        @param clock: Gives the time for headers and file names; the reactor
            by default.
        @param senders: Says which envelope senders a user owns
            (C{owns(login, address)}, an
            L{AliasDatabase <clientid_twisted.server.users.AliasDatabase>});
            L{None} accepts any sender.
        @param withProtocol: The C{with} keyword of C{Received:} (RFC 3848:
            C{ESMTPSA} is ESMTP with STARTTLS and AUTH).
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.dataDir = Path(dataDir)
        self.users = users
        self.hostname = hostname
        self.avatarId = avatarId
        self.senders = senders
        self._clock = clock
        self._names = _UniqueNames(clock)
        self._with = withProtocol.encode("ascii")
        self._transaction: list[str] = []
        self._spool: _SpooledMessage | None = None
        self.relayQueue = relayQueue
        try:
            self._hostname = hostname.encode("idna")
        except UnicodeError:
            self._hostname = hostname.encode("ascii", "replace")

    def receivedHeader(
        self, helo: tuple[bytes, bytes], origin: smtp.Address, recipients: list[Any]
    ) -> bytes:
        """
        The RFC 5321 section 4.4 trace header, folded over several lines,
        with the authenticated sender.  A recipient is named (C{for}) only
        when the message has one: all recipients share one stored copy,
        and naming one in it would show a Bcc to the others.
        """
        name, ip = helo
        literal = _addressLiteral(ip or b"unknown")
        if name and _DOMAIN.fullmatch(name):
            source = b"%s (%s)" % (name, literal)
        else:
            source = b"%s (%s helo=%s)" % (
                literal,
                literal,
                _COMMENT_UNSAFE.sub(b"?", name or b"")[:255],
            )
        by = b"by %s with %s" % (self._hostname, self._with)
        date = smtp.rfc822date(time.localtime(self._clock.seconds()))
        lines = [b"Received: from " + source]
        if self.avatarId:
            # Who submitted it (Postfix's smtpd_sasl_authenticated_header):
            # the users are this server's own, so it names no stranger.
            lines.append(
                b"(Authenticated sender: %s)"
                % (_COMMENT_UNSAFE.sub(b"?", self.avatarId.encode("ascii", "replace")),)
            )
        lines.append(by)
        if len(recipients) == 1 and len(self._transaction) <= 1:
            lines.append(b"for <%s>; %s" % (bytes(_destination(recipients[0])), date))
        else:
            lines[-1] += b"; " + date
        return b"\n\t".join(lines)

    def validateFrom(
        self, helo: tuple[bytes, bytes], origin: smtp.Address
    ) -> smtp.Address:
        """
        Accept the user's own addresses (its login and its aliases) and the
        null sender; with no C{senders} to check against, any.  A new
        transaction starts here.

        @raise smtp.SMTPServerError: C{553 5.7.1} for an address the user
            does not own; C{451} if the aliases cannot be read.
        """
        self._transaction = []
        self._spool = None
        address = bytes(origin)
        if self.senders is None or self.avatarId is None or not address:
            return origin
        try:
            owned = self.senders.owns(self.avatarId, address.decode("ascii"))
        except UnicodeDecodeError:
            owned = False
        except UserDatabaseError as e:
            self.log.error("sender not checked: {error}", error=str(e))
            raise smtp.SMTPServerError(451, "4.3.0 Local error, try again later")
        if not owned:
            raise smtp.SMTPServerError(553, "5.7.1 Sender address rejected: not owned by user")
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], Any]:
        """
        Accept local accounts, and with a relay queue, an authenticated
        sender's recipients outside the local domains.

        @raise smtp.SMTPBadRcpt: For anything else (550: not a relay).
        @raise smtp.SMTPServerError: 451 if the user database is unreadable.
        """
        try:
            address = normalizeAddress(bytes(user.dest).decode("ascii"))
        except (UnicodeDecodeError, InvalidAddress):
            raise smtp.SMTPBadRcpt(user)
        try:
            known = self.users.exists(address)
        except UserDatabaseError as e:
            self.log.error("recipient not checked: {error}", error=str(e))
            raise smtp.SMTPServerError(451, "4.3.0 Local error, try again later")
        if not known:
            return self._relay(user, address)
        maildir = maildirPath(self.dataDir, address)
        self._transaction.append(address)

        def startMessage() -> MaildirMessageWriter:
            try:
                ensureMaildir(maildir)
                return self._startCopy(maildir)
            except OSError as e:
                self.log.error(
                    "cannot store a message for {recipient}: {errorType}: {error}",
                    recipient=address,
                    errorType=type(e).__name__,
                    error=e.strerror or str(e),
                )
                raise storageError(e) from None

        return startMessage

    def _startCopy(self, maildir: Path) -> MaildirMessageWriter:
        """
        A recipient's copy: the first of a transaction opens the one
        temporary file, the others share it.
        """
        name = self._names.generate()
        if self._spool is None or not self._spool.joinable:
            self._spool = _SpooledMessage(maildir / "tmp" / name)
        return MaildirMessageWriter(maildir, name, self._spool)

    def _relay(self, user: smtp.User, address: str) -> Callable[[], Any]:
        """
        Queue for the smarthost: only with a relay queue, only for an
        authenticated session, never for an unknown name in a domain of our
        own accounts (a typo there would otherwise leave the server).
        """
        queue = self.relayQueue
        if queue is None or self.avatarId is None:
            raise smtp.SMTPBadRcpt(user)
        domain = address.rpartition("@")[2]
        try:
            localDomains = {a.rpartition("@")[2] for a in self.users.listUsers()}
        except UserDatabaseError as e:
            self.log.error("recipient not checked: {error}", error=str(e))
            raise smtp.SMTPServerError(451, "4.3.0 Local error, try again later")
        if domain in localDomains:
            raise smtp.SMTPBadRcpt(user)
        # The recipient as given: a remote local part may be case-sensitive.
        recipient = bytes(user.dest).decode("ascii")
        sender = bytes(user.orig).decode("ascii", "replace")
        account = self.avatarId
        self._transaction.append(address)

        def startMessage() -> Any:
            return queue.newMessage(sender, recipient, account)

        return startMessage


def _destination(user: Any) -> smtp.Address:
    return user.dest if isinstance(user, smtp.User) else user


def deliverToInbox(
    dataDir: Path,
    users: UserDatabase,
    hostname: str,
    account: str,
    lines: Iterable[bytes],
    clock: Any = None,
) -> Path | None:
    """
    Write a message the server itself makes (a notice, a bounce) into the
    INBOX of the local account C{account}, durably; blocking.

    @param lines: The message, line by line, without line ends.
    @return: The message's path, or L{None} if there is no such account
        (no maildir is ever made for a name that is not an account).
    @raise OSError: If the maildir cannot be written.
    """
    try:
        start = SubmissionDelivery(dataDir, users, hostname, clock=clock).validateTo(
            smtp.User(account, None, None, None)
        )
    except smtp.SMTPBadRcpt:
        return None
    writer = start()
    try:
        for line in lines:
            writer.lineReceived(line)
    except BaseException:
        writer.connectionLost()
        raise
    done: list[Any] = []
    writer.eomReceived().addBoth(done.append)  # fires at once
    if isinstance(done[0], Failure):
        done[0].raiseException()
    return Path(done[0])


@implementer(IRealm)
class MailRealm:
    """
    The server's realm: one avatar per protocol interface.

    C{avatarFactories} maps each interface this realm serves to a callable
    C{(avatarId, mind) -> (avatar, logout)}: SMTP gets a
    L{SubmissionDelivery}, IMAP a L{MaildirAccount} over the same maildir.

    @ivar avatarFactories: Interface to avatar factory.
    """

    def __init__(
        self,
        dataDir: Path,
        users: UserDatabase,
        hostname: str,
        clock: Any = None,
        relayQueue: Any = None,
        senders: Any = None,
    ) -> None:
        """
        @param relayQueue: Passed to each L{SubmissionDelivery}: where mail
            for other domains goes, or L{None} (no relaying).
        @param senders: Passed to each L{SubmissionDelivery}: who owns which
            sender address, or L{None} to accept any.
        """
        self.dataDir = Path(dataDir)
        self.users = users
        self.hostname = hostname
        self.senders = senders
        self._clock = clock
        self.relayQueue = relayQueue
        self.avatarFactories: dict[
            type[Interface], Callable[[Any, Any], tuple[Any, Callable[[], None]]]
        ] = {
            IMessageDelivery: self._messageDelivery,
            imap4.IAccount: self._mailAccount,
        }

    def requestAvatar(
        self, avatarId: Any, mind: Any, *interfaces: type[Interface]
    ) -> tuple[type[Interface], object, Callable[[], None]]:
        """
        The avatar for the first of C{interfaces} this realm serves.

        @raise NotImplementedError: If it serves none of them.
        """
        for interface in interfaces:
            factory = self.avatarFactories.get(interface)
            if factory is not None:
                avatar, logout = factory(avatarId, mind)
                return interface, avatar, logout
        raise NotImplementedError(
            "no avatar for interfaces {}".format(
                ", ".join(getattr(i, "__name__", repr(i)) for i in interfaces)
            )
        )

    def _messageDelivery(
        self, avatarId: Any, mind: Any
    ) -> tuple[SubmissionDelivery, Callable[[], None]]:
        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("ascii")
        delivery = SubmissionDelivery(
            self.dataDir,
            self.users,
            self.hostname,
            avatarId=avatarId if isinstance(avatarId, str) else None,
            clock=self._clock,
            relayQueue=self.relayQueue,
            senders=self.senders,
        )
        return delivery, lambda: None

    def _mailAccount(self, avatarId: Any, mind: Any) -> tuple[Any, Callable[[], None]]:
        from clientid_twisted.server.mailbox import MaildirAccount

        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("ascii")
        return MaildirAccount(maildirPath(self.dataDir, avatarId)), lambda: None


STALE_TEMPORARY_SECONDS = 36 * 3600
"""Files in a maildir's C{tmp/} untouched this long are left over from a
crash (the Maildir rule: 36 hours, more than any delivery takes)."""


def _maildirs(dataDir: Path) -> Iterator[Path]:
    """
    Every account maildir under C{dataDir/mail} and its Maildir++ folders.
    """
    mail = Path(dataDir) / "mail"
    try:
        accounts = list(mail.iterdir())
    except OSError:
        return
    for account in accounts:
        if not account.is_dir():
            continue
        yield account
        with contextlib.suppress(OSError):
            for folder in account.iterdir():
                if folder.name.startswith(".") and (folder / "tmp").is_dir():
                    yield folder


def removeStaleTemporaryFiles(
    dataDir: Path, now: float, maxAge: float = STALE_TEMPORARY_SECONDS
) -> int:
    """
    Remove files left in the maildirs' C{tmp/} by a crash or a power cut
    (a partial message nobody will finish); run at start.

    @return: How many were removed.
    """
    removed = 0
    for maildir in _maildirs(dataDir):
        tmp = maildir / "tmp"
        try:
            entries = list(os.scandir(tmp))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and (
                    now - entry.stat(follow_symlinks=False).st_mtime > maxAge
                ):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue
    return removed
