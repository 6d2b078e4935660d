# -*- test-case-name: tests.test_delivery -*-
"""
Local delivery for the submission server: authenticated senders may mail
the server's own accounts, each of which has a maildir under
C{DATA_DIR/mail/<address>/}.  Anything else is refused at RCPT (no relay).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Callable

from zope.interface import Interface, implementer

from twisted.cred.portal import IRealm
from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4, smtp
from twisted.mail.interfaces import IMessageDelivery, IMessageSMTP

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


@implementer(IMessageSMTP)
class MaildirMessageWriter:
    """
    One message being received into a maildir: written to C{tmp/}, synced,
    then renamed into C{new/} at the end of DATA, so a reader never sees a
    partial message.  A lost connection removes the partial file.

    @ivar temporaryPath: Where the message is being written.
    @ivar finalPath: Where it appears once complete.
    """

    def __init__(self, maildir: Path, name: str) -> None:
        self.temporaryPath = maildir / "tmp" / name
        self.finalPath = maildir / "new" / name
        fd = os.open(self.temporaryPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")

    def lineReceived(self, line: bytes) -> None:
        """
        Store a line with CRLF line ends.

        The IMAP side serves message files byte for byte (C{BODY[]}), and
        IMAP, like RFC 5322, wants CRLF; so a bare LF inside a line (our
        folded C{Received:} header, or a sloppy client) becomes CRLF too.
        """
        pieces = line.split(b"\n")
        self._file.write(b"\r\n".join(p.rstrip(b"\r") for p in pieces) + b"\r\n")

    def eomReceived(self) -> defer.Deferred[Path]:
        """
        Make the message durable and visible.

        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with its path in C{new/}.
        """
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self.temporaryPath, self.finalPath)
        except OSError:
            self.connectionLost()
            return defer.fail()
        fsyncDirectory(self.finalPath.parent)
        return defer.succeed(self.finalPath)

    def connectionLost(self) -> None:
        """
        Forget the partial message.
        """
        self._file.close()
        try:
            os.unlink(self.temporaryPath)
        except FileNotFoundError:
            pass


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
    ) -> None:
        """
        @param clock: Gives the time for headers and file names; the reactor
            by default.
        @param withProtocol: The C{with} keyword of C{Received:} (RFC 3848:
            C{ESMTPSA} is ESMTP with STARTTLS and AUTH).
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.dataDir = Path(dataDir)
        self.users = users
        self.hostname = hostname
        self.avatarId = avatarId
        self._clock = clock
        self._names = _UniqueNames(clock)
        self._with = withProtocol.encode("ascii")
        try:
            self._hostname = hostname.encode("idna")
        except UnicodeError:
            self._hostname = hostname.encode("ascii", "replace")

    def receivedHeader(
        self, helo: tuple[bytes, bytes], origin: smtp.Address, recipients: list[Any]
    ) -> bytes:
        """
        The RFC 5321 section 4.4 trace header, folded over three lines.
        Only a single recipient is named (C{for}), so Bcc stays hidden.
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
        lines = [b"Received: from " + source, by]
        if len(recipients) == 1:
            lines.append(b"for <%s>; %s" % (bytes(_destination(recipients[0])), date))
        else:
            lines[-1] += b"; " + date
        return b"\n\t".join(lines)

    def validateFrom(
        self, helo: tuple[bytes, bytes], origin: smtp.Address
    ) -> smtp.Address:
        """
        Accept any sender: the session is authenticated.
        """
        return origin

    def validateTo(self, user: smtp.User) -> Callable[[], MaildirMessageWriter]:
        """
        Accept local accounts only.

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
            raise smtp.SMTPBadRcpt(user)
        maildir = maildirPath(self.dataDir, address)

        def startMessage() -> MaildirMessageWriter:
            ensureMaildir(maildir)
            return MaildirMessageWriter(maildir, self._names.generate())

        return startMessage


def _destination(user: Any) -> smtp.Address:
    return user.dest if isinstance(user, smtp.User) else user


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
        self, dataDir: Path, users: UserDatabase, hostname: str, clock: Any = None
    ) -> None:
        self.dataDir = Path(dataDir)
        self.users = users
        self.hostname = hostname
        self._clock = clock
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
        )
        return delivery, lambda: None

    def _mailAccount(self, avatarId: Any, mind: Any) -> tuple[Any, Callable[[], None]]:
        from clientid_twisted.server.mailbox import MaildirAccount

        if isinstance(avatarId, bytes):
            avatarId = avatarId.decode("ascii")
        return MaildirAccount(maildirPath(self.dataDir, avatarId)), lambda: None
