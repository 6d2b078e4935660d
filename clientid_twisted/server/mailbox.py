# -*- test-case-name: tests.test_mailbox -*-
"""
IMAP4 mailboxes over Maildir, for C{twisted.mail.imap4.IMAP4Server}.

Layout (shared with SMTP delivery, L{clientid_twisted.server.delivery}):
each account's maildir, C{DATA_DIR/mail/<address>/}, is its INBOX, and
other folders are Maildir++ subdirectories of it: IMAP C{Work/2024} is
C{.Work.2024/}.  On disk a name component is IMAP modified UTF-7 (as Courier
and Dovecot write it) with C{.} also encoded, as C{&AC4-}, since it
separates levels there.  Delivery writes into C{tmp/} and renames into
C{new/}; we never touch C{tmp/} files we did not make.

Per folder we keep C{clientid-uidlist} (JSON: UIDVALIDITY, UIDNEXT, the
UID of each message, keyed by its file name before C{:2,}, and custom
keywords, which Maildir file names cannot hold), replaced atomically and
durably (temporary file, fsync, rename, fsync of the directory: a power
cut must not force a UIDVALIDITY reset) and rebuilt with a new UIDVALIDITY if it is unreadable.  System flags live in
the file names (C{D F R S T}); C{\\Recent} belongs to the first
read-write session that moves a message from C{new/} to C{cur/}.  The
account root also holds C{subscriptions} (one name a line) and
C{clientid-uidvalidity} (the last UIDVALIDITY handed out, so a deleted and
re-created folder never reuses one).

Each C{select} gives a new L{MaildirMailbox}: one session's view, with its
own sequence numbers.  Changes made by other sessions and by delivery reach
it through L{MaildirMailbox.poll}, which the protocol calls before each
command.  All I/O is synchronous: local disk, small operations (a directory
listing, a rename, a small JSON file), skipped entirely while the
directories' modification times are unchanged.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import datetime
import email.utils
import io
import itertools
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from email.generator import BytesGenerator
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, cast

from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.mail.interfaces import (
    IAccountIMAP,
    ICloseableMailboxIMAP,
    IMailboxIMAP,
    IMailboxIMAPInfo,
    IMailboxIMAPListener,
    IMessageIMAP,
    IMessageIMAPCopier,
    IMessageIMAPFile,
    IMessageIMAPPart,
    INamespacePresenter,
    ISearchableIMAPMailbox,
)

from clientid_twisted.server.files import fsyncDirectory, replaceDurably

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MaildirAccount",
    "MaildirMailbox",
    "MaildirMailboxInfo",
    "MaildirMessage",
    "IMailboxIMAPExpungeListener",
    "InvalidMailboxName",
    "DELIMITER",
    "UIDLIST",
    "SUBSCRIPTIONS",
]

_log = Logger()

DELIMITER = "/"
"""The IMAP hierarchy delimiter; C{.} on disk."""

UIDLIST = "clientid-uidlist"
"""The per-folder state file (UIDs, UIDVALIDITY, keywords)."""

SUBSCRIPTIONS = "subscriptions"
"""The account's subscribed folder names, one a line, UTF-8."""

_UIDVALIDITY = "clientid-uidvalidity"
_DELETED_PREFIX = "clientid-deleted."
_INFO = ":2,"
_SETTLE_NS = 2_000_000_000
# A directory changed this recently may change again within one tick of its
# modification time (coarse on many filesystems): look at it anyway.

_FLAG_LETTERS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
_LETTER_FLAGS = {letter: flag for flag, letter in _FLAG_LETTERS.items()}
_SYSTEM_FLAGS = {flag.lower(): flag for flag in _FLAG_LETTERS}
_FLAG_ORDER = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_RECENT = "\\Recent"

# RFC 3501 flag-keyword: an atom (no atom-specials: ( ) { SP CTL % * " \ ]).
_KEYWORD = re.compile(r"[\x21\x23\x24\x26\x27\x2b-\x5b\x5e-\x7a\x7c-\x7e]+")
# Refused in folder names: controls, "\" (unsafe on some disks, and IMAP's
# quoting character), the LIST wildcards, and lone surrogates.
_BAD_NAME_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f\\*%\ud800-\udfff]")
_MAX_DIRECTORY_NAME = 255

_MONTHS = {
    name: number
    for number, name in enumerate(
        "jan feb mar apr may jun jul aug sep oct nov dec".split(), 1
    )
}
_IMAP_DATE_TIME = re.compile(
    r"\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)


class InvalidMailboxName(imap4.MailboxException):
    """
    A folder name we will not put on disk; the text says why (it becomes the
    text of the client's NO).
    """


class IMailboxIMAPExpungeListener(IMailboxIMAPListener):
    """
    A mailbox listener that can also be told of messages another session
    expunged.

    Twisted's L{IMailboxIMAPListener} has no such event, so a mailbox whose
    listeners do not all provide this keeps such messages in its numbering
    (C{FETCH} and C{STORE} skip them) until the session's own C{EXPUNGE},
    whose reply then includes them.
    """

    def expunged(sequenceNumbers):  # type: ignore[no-untyped-def]
        """
        Messages left the mailbox.

        @param sequenceNumbers: One C{* n EXPUNGE} response each, in order
            (each number counts the ones before it as gone already).
        """


# -- folder names --------------------------------------------------------------


def _nameComponents(name: str | bytes) -> list[str]:
    """
    Check an IMAP folder name and split it into levels; C{[]} is INBOX.

    @raise InvalidMailboxName: With the reason.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("imap4-utf-7")
        except Exception:
            raise InvalidMailboxName(
                "Mailbox name is not valid modified UTF-7"
            ) from None
    if not name:
        raise InvalidMailboxName("Mailbox name is empty")
    if name.upper() == "INBOX":
        return []
    if name.startswith(DELIMITER) or name.endswith(DELIMITER):
        raise InvalidMailboxName(
            f"Mailbox name may not begin or end with {DELIMITER!r}"
        )
    parts = name.split(DELIMITER)
    for part in parts:
        if not part:
            raise InvalidMailboxName("Mailbox name has an empty hierarchy level")
        if part in (".", ".."):
            raise InvalidMailboxName(f"Mailbox name may not have a {part!r} level")
        bad = _BAD_NAME_CHARACTER.search(part)
        if bad is not None:
            raise InvalidMailboxName(
                "Mailbox name may not contain U+%04X" % (ord(bad.group()),)
            )
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    if len(_directoryName(parts).encode("ascii")) > _MAX_DIRECTORY_NAME:
        raise InvalidMailboxName("Mailbox name is too long")
    return parts


def _joinName(parts: list[str]) -> str:
    return DELIMITER.join(parts) if parts else "INBOX"


def _encodeComponent(part: str) -> str:
    """
    Modified UTF-7 (RFC 3501 section 5.1.3), except that C{.} is encoded too.
    """
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            encoded = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            del run[:]

    for character in part:
        if character == "&":
            flush()
            out.append("&-")
        elif " " <= character <= "~" and character != ".":
            flush()
            out.append(character)
        else:
            run.append(character)
    flush()
    return "".join(out)


def _directoryName(parts: list[str]) -> str:
    """
    The Maildir++ directory (under the account root) of a folder; C{""} for
    INBOX.
    """
    if not parts:
        return ""
    return "." + ".".join(_encodeComponent(part) for part in parts)


def _nameFromDirectory(directory: str) -> list[str] | None:
    """
    The levels of the folder in C{directory}, or L{None} if it is not one of
    ours: not a dot name, or not how we would have written its name.
    """
    if not directory.startswith(".") or directory in (".", ".."):
        return None
    try:
        decoded = [
            part.encode("ascii").decode("imap4-utf-7")
            for part in directory[1:].split(".")
        ]
        parts = _nameComponents(DELIMITER.join(decoded))
    except Exception:
        return None
    if not parts or _directoryName(parts) != directory:
        return None
    return parts


# -- small file helpers ---------------------------------------------------------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """
    Hold an exclusive C{flock} on C{path} (made if missing), so that two
    processes never both assign UIDs; a no-op where there is no C{flock} or
    the directory has gone (there is nothing left to protect).
    """
    fd = None
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            fd = None
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _isMaildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _makeMaildir(path: Path, folder: bool) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    if folder:
        # The Maildir++ marker (Courier's convention; delivery agents look
        # for it).
        (path / "maildirfolder").touch(mode=0o600, exist_ok=True)


_names = itertools.count(1)
_host = socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def _uniqueName() -> str:
    """
    A new maildir base name: C{<s>.M<us>P<pid>Q<n>R<random>.<host>}.
    """
    now = time.time()
    return "%d.M%06dP%dQ%dR%s.%s" % (
        int(now),
        int((now - int(now)) * 1e6),
        os.getpid(),
        next(_names),
        secrets.token_hex(4),
        _host,
    )


def _arrivalOrder(key: str) -> tuple[int, str]:
    """
    Sort new messages by the delivery time their name starts with.
    """
    digits = re.match(r"\d+", key)
    return (int(digits.group()) if digits else 0, key)


def _parseInfo(filename: str) -> tuple[frozenset[str], str]:
    """
    System flags from a maildir name's C{:2,} info, and the letters we do
    not know (kept as they are whenever we rename).
    """
    _, separator, info = filename.partition(":")
    if not separator or not info.startswith("2,"):
        return frozenset(), ""
    flags = set()
    extra = []
    for letter in info[2:]:
        flag = _LETTER_FLAGS.get(letter)
        if flag is None:
            extra.append(letter)
        else:
            flags.add(flag)
    return frozenset(flags), "".join(extra)


def _filename(key: str, flags: Iterable[str], extra: str = "") -> str:
    letters = sorted(set("".join(_FLAG_LETTERS[f] for f in flags) + extra))
    return key + _INFO + "".join(letters)


def _parseFlags(flags: Iterable[str | bytes]) -> tuple[set[str], list[str]]:
    """
    Split IMAP flags into system flags we store and keywords.

    C{\\Recent} and unknown C{\\} flags cannot be set and are ignored, as
    are keywords that are not IMAP atoms; keywords are case-insensitive.
    """
    system: set[str] = set()
    keywords: list[str] = []
    seen: set[str] = set()
    for flag in flags:
        if isinstance(flag, bytes):
            flag = flag.decode("ascii", "replace")
        if flag.startswith("\\"):
            canonical = _SYSTEM_FLAGS.get(flag.lower())
            if canonical is not None:
                system.add(canonical)
        elif _KEYWORD.fullmatch(flag) and flag.lower() not in seen:
            seen.add(flag.lower())
            keywords.append(flag)
    return system, keywords


def _parseDate(date: str | bytes) -> float:
    """
    An APPEND date-time (C{17-Jul-1996 02:44:25 -0700}) or an RFC 5322 date
    (what L{MaildirMessage.getInternalDate} gives) as a timestamp.

    @raise imap4.MailboxException: If it is neither.
    """
    if isinstance(date, bytes):
        date = date.decode("ascii", "replace")
    match = _IMAP_DATE_TIME.fullmatch(date.strip())
    if match is not None:
        day, month, year, hour, minute, second, sign, zoneHours, zoneMinutes = (
            match.groups()
        )
        number = _MONTHS.get(month.lower())
        if number is not None:
            try:
                stamp = calendar.timegm(
                    (int(year), number, int(day), int(hour), int(minute), int(second))
                )
            except ValueError:
                pass
            else:
                offset = int(zoneHours) * 3600 + int(zoneMinutes) * 60
                return float(stamp - offset if sign == "+" else stamp + offset)
    parsed = email.utils.parsedate_tz(date)
    if parsed is not None:
        return float(email.utils.mktime_tz(parsed))
    raise imap4.MailboxException(f"Unreadable date-time: {date!r}")


# -- the per-folder state --------------------------------------------------------


class _FolderState:
    """
    What C{clientid-uidlist} holds.

    @ivar dirty: Not yet written (new, or rebuilt).
    """

    def __init__(self, uidValidity: int, uidNext: int = 1) -> None:
        self.uidValidity = uidValidity
        self.uidNext = uidNext
        self.uids: dict[str, int] = {}
        self.keywords: dict[str, list[str]] = {}
        self.dirty = False

    def assign(self, key: str) -> int:
        uid = self.uids.get(key)
        if uid is None:
            uid = self.uids[key] = self.uidNext
            self.uidNext += 1
        return uid

    def forget(self, key: str) -> None:
        self.uids.pop(key, None)
        self.keywords.pop(key, None)

    def toBytes(self) -> bytes:
        return json.dumps(
            {
                "version": 1,
                "uidvalidity": self.uidValidity,
                "uidnext": self.uidNext,
                "uids": self.uids,
                "keywords": self.keywords,
            },
            separators=(",", ":"),
        ).encode("ascii")

    @classmethod
    def fromBytes(cls, data: bytes) -> "_FolderState":
        """
        @raise ValueError: If C{data} is not a state we wrote.
        """
        raw = json.loads(data)

        def positive(value: Any) -> int:
            if type(value) is not int or not 0 < value < 2**32:
                raise ValueError(f"not a 32-bit UID: {value!r}")
            return value

        if not isinstance(raw, dict) or raw.get("version") != 1:
            raise ValueError("unknown format")
        state = cls(positive(raw["uidvalidity"]), positive(raw["uidnext"]))
        uids, keywords = raw.get("uids"), raw.get("keywords", {})
        if not isinstance(uids, dict) or not isinstance(keywords, dict):
            raise ValueError("uids and keywords must be objects")
        for key, uid in uids.items():
            state.uids[key] = positive(uid)
        if len(set(state.uids.values())) != len(state.uids):
            raise ValueError("two messages share a UID")
        if state.uids and max(state.uids.values()) >= state.uidNext:
            raise ValueError("a UID is not below UIDNEXT")
        for key, words in keywords.items():
            if key in state.uids and isinstance(words, list):
                state.keywords[key] = [
                    w for w in words if isinstance(w, str) and _KEYWORD.fullmatch(w)
                ]
        return state


class _Folder:
    """
    One maildir on disk: listing, locating and adding message files, and its
    state file.  No session state: that is L{MaildirMailbox}.
    """

    def __init__(
        self, path: Path, name: str, newUIDValidity: Callable[[], int]
    ) -> None:
        self.path = path
        self.name = name
        self.statePath = path / UIDLIST
        self._lockPath = path / (UIDLIST + ".lock")
        self._newUIDValidity = newUIDValidity
        # What stamp() looks at, as strings: it runs before every command
        # of a selected session, and joining paths costs more than stat.
        self._stamped = (str(path / "new"), str(path / "cur"), str(self.statePath))

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return _locked(self._lockPath)

    def stamp(self) -> tuple[int, int, tuple[int, int, int] | None] | None:
        """
        What changes whenever the folder's contents or state do; L{None} when
        that cannot be trusted (unreadable, or too fresh).
        """
        newPath, curPath, statePath = self._stamped
        try:
            new = os.stat(newPath).st_mtime_ns
            cur = os.stat(curPath).st_mtime_ns
            try:
                st = os.stat(statePath)
                state: tuple[int, int, int] | None = (
                    st.st_mtime_ns,
                    st.st_size,
                    st.st_ino,
                )
            except FileNotFoundError:
                state = None
        except OSError:
            return None
        newest = max(new, cur, state[0] if state else 0)
        if time.time_ns() - newest < _SETTLE_NS:
            return None
        return (new, cur, state)

    def listing(self) -> dict[str, tuple[str, str]]:
        """
        Every message: key (name before C{:}) to (C{"new"} or C{"cur"}, file
        name).  C{new/} is read first, so a message moving to C{cur/}
        meanwhile is seen at least once.
        """
        found: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            try:
                names = os.listdir(self.path / sub)
            except FileNotFoundError:
                continue
            except OSError as e:
                _log.error(
                    "Cannot list {path}: {error}",
                    path=str(self.path / sub),
                    error=str(e),
                    mailboxEvent="listFailed",
                )
                continue
            for filename in names:
                if filename.startswith("."):
                    continue
                key = filename.split(":", 1)[0]
                if key:
                    found[key] = (sub, filename)
        return found

    def locate(self, key: str) -> tuple[str, str] | None:
        """
        Where message C{key} is now (its flags, so its name, may have changed).
        """
        return self.listing().get(key)

    def readState(self) -> _FolderState:
        """
        The state file, or a new state (with a new UIDVALIDITY, since old
        UIDs cannot be trusted) if it is missing or unreadable; an
        unreadable one is kept beside as C{clientid-uidlist.corrupt}.
        """
        try:
            return _FolderState.fromBytes(self.statePath.read_bytes())
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            _log.error(
                "Mailbox state {path} is unreadable ({error}); renumbering "
                "its messages under a new UIDVALIDITY",
                path=str(self.statePath),
                error=str(e),
                mailboxEvent="stateRebuilt",
            )
            with contextlib.suppress(OSError):
                os.replace(self.statePath, self.path / (UIDLIST + ".corrupt"))
        state = _FolderState(self._newUIDValidity())
        state.dirty = True
        return state

    def writeState(self, state: _FolderState) -> None:
        try:
            replaceDurably(self.statePath, state.toBytes())
        except OSError as e:
            _log.error(
                "Cannot write mailbox state {path}: {error}",
                path=str(self.statePath),
                error=str(e),
                mailboxEvent="stateNotWritten",
            )
            return
        state.dirty = False

    def sync(self) -> tuple[dict[str, tuple[str, str]], _FolderState]:
        """
        List the folder and bring the state up to date with it: UIDs for new
        messages (in arrival order), none for messages gone.
        """
        with self.locked():
            listing = self.listing()
            state = self.readState()
            vanished = [key for key in state.uids if key not in listing]
            if vanished:
                # A rename racing the listing can hide a file once; look
                # again before forgetting a UID for good.
                listing.update(self.listing())
                vanished = [key for key in state.uids if key not in listing]
            fresh = sorted(
                (key for key in listing if key not in state.uids), key=_arrivalOrder
            )
            for key in vanished:
                state.forget(key)
            for key in fresh:
                state.assign(key)
            if vanished or fresh or state.dirty:
                self.writeState(state)
            return listing, state

    def updateKeywords(self, changes: dict[str, list[str]]) -> None:
        with self.locked():
            state = self.readState()
            for key, words in changes.items():
                if key not in state.uids:
                    continue
                if words:
                    state.keywords[key] = list(words)
                else:
                    state.keywords.pop(key, None)
            self.writeState(state)

    def deliver(
        self,
        fill: Callable[[Path], None],
        flags: Iterable[str],
        keywords: list[str],
        mtime: float | None,
    ) -> int:
        """
        Add a message: C{fill} writes it into a new file in C{tmp/}, which is
        then renamed into C{cur/} with its flags, and numbered.

        @return: Its UID.
        """
        key = _uniqueName()
        (self.path / "tmp").mkdir(mode=0o700, exist_ok=True)
        temporary = self.path / "tmp" / key
        try:
            fill(temporary)
            if mtime is not None:
                os.utime(temporary, (mtime, mtime))
            with self.locked():
                os.rename(temporary, self.path / "cur" / _filename(key, flags))
                state = self.readState()
                uid = state.assign(key)
                if keywords:
                    state.keywords[key] = list(keywords)
                self.writeState(state)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        fsyncDirectory(self.path / "cur")
        return uid


# -- messages -------------------------------------------------------------------


class _Entry:
    """
    One message as a session sees it.

    @ivar vanished: Gone from disk, but still numbered in this session.
    """

    __slots__ = (
        "key",
        "uid",
        "subdir",
        "filename",
        "flags",
        "extra",
        "keywords",
        "recent",
        "vanished",
    )

    def __init__(
        self,
        key: str,
        uid: int,
        subdir: str,
        filename: str,
        keywords: Iterable[str],
        recent: bool,
    ) -> None:
        self.key = key
        self.uid = uid
        self.subdir = subdir
        self.filename = filename
        self.flags, self.extra = _parseInfo(filename)
        self.keywords = tuple(keywords)
        self.recent = recent
        self.vanished = False

    def flagList(self) -> list[str]:
        flags = [flag for flag in _FLAG_ORDER if flag in self.flags]
        flags.extend(self.keywords)
        if self.recent:
            flags.append(_RECENT)
        return flags


class _SelfClosingFile:
    """
    A read-only file that closes itself at its end or when dropped:
    Twisted's C{FileProducer} reads what L{IMessageIMAPFile.open} gives to
    the end and never closes it.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    def read(self, size: int | None = -1) -> bytes:
        if self._f.closed:
            return b""
        data = self._f.read(-1 if size is None else size)
        if not data:
            self._f.close()
        return data

    def readline(self, size: int | None = -1) -> bytes:
        if self._f.closed:
            return b""
        line = self._f.readline(-1 if size is None else size)
        if not line:
            self._f.close()
        return line

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "_SelfClosingFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()


def _asciiHeaderValue(value: str) -> str:
    """
    A header value Twisted can send (it encodes them as ASCII): raw 8-bit
    text (RFC 6532) becomes an RFC 2047 encoded word.
    """
    raw = value.encode("ascii", "surrogateescape")
    if raw.isascii():
        return value
    text = raw.decode("utf-8", "replace")
    nonASCII = [i for i, c in enumerate(text) if ord(c) > 0x7E]
    start, end = nonASCII[0], nonASCII[-1] + 1
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    while start < end and text[start] in "\"'(<[":
        start += 1
    while end > start and text[end - 1] in "\"')>],;:":
        end -= 1
    segment = " ".join(text[start:end].split())
    encoded = Header(segment, "utf-8").encode()
    result = text[:start].rstrip('"') + encoded + text[end:].lstrip('"')
    return result.encode("ascii", "replace").decode("ascii")


def _headerItems(message: Message) -> list[tuple[str, str]]:
    items = []
    for name, value in message.raw_items():
        if not name.isascii():
            continue
        items.append((name.lower(), _asciiHeaderValue(str(value))))
    return items


def _selectHeaders(
    items: list[tuple[str, str]], negate: bool, names: tuple[Any, ...]
) -> dict[str, str]:
    """
    L{IMessageIMAPPart.getHeaders}: lower-case names (Twisted's search and
    envelope code look them up so), the first of repeated fields.
    """
    wanted = {
        (n.decode("ascii", "replace") if isinstance(n, bytes) else str(n)).lower()
        for n in names
    }
    headers: dict[str, str] = {}
    for name, value in items:
        if (name in wanted) != negate and name not in headers:
            headers[name] = value
    return headers


def _lineSeparator(data: bytes) -> str:
    return "\r\n" if b"\r\n" in data else "\n"


@implementer(IMessageIMAPPart)
class _MessagePart:
    """
    A MIME part of a message, parsed by the C{email} package.
    """

    def __init__(self, message: Message, linesep: str) -> None:
        self._message = message
        self._linesep = linesep
        self._items: list[tuple[str, str]] | None = None
        self._body: bytes | None = None

    def getHeaders(self, negate: bool, *names: Any) -> dict[str, str]:
        if self._items is None:
            self._items = _headerItems(self._message)
        return _selectHeaders(self._items, negate, names)

    def _bodyBytes(self) -> bytes:
        if self._body is None:
            if self._message.is_multipart():
                out = io.BytesIO()
                BytesGenerator(
                    out,
                    mangle_from_=False,
                    policy=compat32.clone(linesep=self._linesep),
                ).flatten(self._message)
                rendered = out.getvalue()
                separator = (self._linesep * 2).encode("ascii")
                head, found, body = rendered.partition(separator)
                self._body = body if found else b""
            else:
                payload = self._message.get_payload()
                if isinstance(payload, str):
                    self._body = payload.encode("ascii", "surrogateescape")
                else:
                    self._body = bytes(cast(bytes, payload or b""))
        return self._body

    def getBodyFile(self) -> BinaryIO:
        return io.BytesIO(self._bodyBytes())

    def getSize(self) -> int:
        return len(self._bodyBytes())

    def isMultipart(self) -> bool:
        return self._message.get_content_maintype() == "multipart"

    def getSubPart(self, part: int) -> "_MessagePart":
        return _subPart(self._message, part, self._linesep)


def _subPart(message: Message, part: int, linesep: str) -> _MessagePart:
    """
    Part C{part} (from 0) of a multipart, or the message in a
    C{message/rfc822} part (C{part} 0).
    """
    if not message.is_multipart():
        raise TypeError("not a multipart message")
    payload = message.get_payload()
    if message.get_content_maintype() != "multipart" and part != 0:
        raise IndexError(part)
    return _MessagePart(cast("list[Message]", payload)[part], linesep)


class _HeaderBlock:
    def __init__(
        self,
        items: list[tuple[str, str]],
        message: Message,
        bodyOffset: int,
        linesep: str,
    ) -> None:
        self.items = items
        self.message = message
        self.bodyOffset = bodyOffset
        self.linesep = linesep


_EMPTY_HEADER = _HeaderBlock([], Message(), 0, "\r\n")


@implementer(IMessageIMAP, IMessageIMAPFile)
class MaildirMessage:
    """
    A message file, read lazily.

    L{open} (Twisted's choice for C{BODY[]} and C{RFC822}) and the top-level
    L{getBodyFile} give the file's bytes exactly; headers and MIME parts come
    from the C{email} package.  A file that vanished (expunged by another
    session) reads as empty rather than failing the whole FETCH.
    """

    def __init__(self, folder: _Folder, entry: _Entry) -> None:
        self._folder = folder
        self._entry = entry
        self._header: _HeaderBlock | None = None
        self._parsed: Message | None = None
        self._stat: os.stat_result | None = None

    def __repr__(self) -> str:
        return f"<MaildirMessage UID {self._entry.uid} in {self._folder.name!r}>"

    def _currentPath(self) -> Path:
        entry = self._entry
        return self._folder.path / entry.subdir / entry.filename

    def _relocate(self) -> bool:
        where = self._folder.locate(self._entry.key)
        if where is None:
            return False
        self._entry.subdir, self._entry.filename = where
        return True

    def _withFile(self, action: Callable[[Path], Any]) -> Any:
        """
        C{action(path)}, looking for the file again if it moved (a flag
        change renames it); L{None} if it is gone.
        """
        for attempt in (1, 2):
            try:
                return action(self._currentPath())
            except FileNotFoundError:
                if attempt == 2 or not self._relocate():
                    break
            except OSError as e:
                _log.error(
                    "Cannot read message {uid} in {mailbox}: {error}",
                    uid=self._entry.uid,
                    mailbox=self._folder.name,
                    error=str(e),
                    mailboxEvent="readFailed",
                )
                return None
        _log.info(
            "Message {uid} in {mailbox} vanished before it could be read",
            uid=self._entry.uid,
            mailbox=self._folder.name,
            mailboxEvent="vanished",
        )
        return None

    def _openFile(self) -> BinaryIO | None:
        return self._withFile(lambda path: open(path, "rb"))  # type: ignore[no-any-return]

    def _statFile(self) -> os.stat_result | None:
        if self._stat is None:
            self._stat = self._withFile(os.stat)
        return self._stat

    def _headerBlock(self) -> _HeaderBlock:
        if self._header is None:
            f = self._openFile()
            if f is None:
                return _EMPTY_HEADER
            with f:
                lines = []
                for line in f:
                    if line in (b"\r\n", b"\n"):
                        break
                    lines.append(line)
                offset = f.tell()
            raw = b"".join(lines)
            message = BytesParser(policy=compat32).parsebytes(
                raw + b"\n", headersonly=True
            )
            self._header = _HeaderBlock(
                _headerItems(message), message, offset, _lineSeparator(raw)
            )
        return self._header

    def _fullMessage(self) -> Message:
        if self._parsed is None:
            f = self._openFile()
            data = b""
            if f is not None:
                with f:
                    data = f.read()
            self._parsed = BytesParser(policy=compat32).parsebytes(data)
        return self._parsed

    # IMessageIMAPFile

    def open(self) -> BinaryIO:
        """
        The whole file, exactly.
        """
        f = self._openFile()
        if f is None:
            return io.BytesIO(b"")
        return _SelfClosingFile(f)  # type: ignore[return-value]

    # IMessageIMAPPart

    def getHeaders(self, negate: bool, *names: Any) -> dict[str, str]:
        return _selectHeaders(self._headerBlock().items, negate, names)

    def getBodyFile(self) -> BinaryIO:
        """
        The file's bytes after the blank line ending the header.
        """
        offset = self._headerBlock().bodyOffset
        f = self._openFile()
        if f is None:
            return io.BytesIO(b"")
        f.seek(offset)
        return _SelfClosingFile(f)  # type: ignore[return-value]

    def getSize(self) -> int:
        st = self._statFile()
        return st.st_size if st is not None else 0

    def isMultipart(self) -> bool:
        return self._headerBlock().message.get_content_maintype() == "multipart"

    def getSubPart(self, part: int) -> _MessagePart:
        return _subPart(self._fullMessage(), part, self._headerBlock().linesep)

    # IMessageIMAP

    def getUID(self) -> int:
        return self._entry.uid

    def getFlags(self) -> list[str]:
        return self._entry.flagList()

    def getInternalDate(self) -> str:
        """
        The file's modification time (set from APPEND's date-time), as an
        RFC 5322 date.  A L{str}, not the L{bytes} the interface mentions:
        Twisted's own C{SINCE} and C{ON} search hand it to
        L{email.utils.parsedate} as it is.
        """
        return email.utils.formatdate(self._internalTime(), usegmt=True)

    def _internalTime(self) -> float:
        st = self._statFile()
        return st.st_mtime if st is not None else time.time()


# -- search ---------------------------------------------------------------------

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True),
    "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True),
    "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False),
    "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {
    "BCC": "bcc",
    "CC": "cc",
    "FROM": "from",
    "SUBJECT": "subject",
    "TO": "to",
}
_SEARCH_DATE = re.compile(r"\s?(\d{1,2})-([A-Za-z]{3})-(\d{4})")


def _word(term: Any) -> str:
    return term.decode("utf-8", "replace") if isinstance(term, bytes) else str(term)


def _searchDate(term: Any) -> datetime.date:
    match = _SEARCH_DATE.fullmatch(_word(term))
    month = _MONTHS.get(match.group(2).lower()) if match else None
    try:
        if match is None or month is None:
            raise ValueError(term)
        return datetime.date(int(match.group(3)), month, int(match.group(1)))
    except ValueError:
        raise imap4.IllegalQueryError(f"Bad search date {_word(term)!r}") from None


def _decodedHeader(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def _fileContains(f: BinaryIO, needle: bytes) -> bool:
    """
    Whether C{needle} (lower case) is in C{f}, ignoring ASCII case; read in
    chunks, so attachments are not held in memory.
    """
    with contextlib.closing(f):
        tail = b""
        while True:
            chunk = f.read(65536)
            if not chunk:
                return False
            window = tail + chunk.lower()
            if needle in window:
                return True
            tail = window[-(len(needle) - 1) :] if len(needle) > 1 else b""


MAX_SEARCH_DEPTH = 64
"""Deepest nesting of SEARCH criteria (C{NOT}, C{OR}, parentheses) taken;
deeper gets BAD.  Real clients nest a few levels."""


class _Search:
    """
    One SEARCH: Twisted's parsed query (words as L{bytes}, parenthesized
    groups as lists) tested against each message in turn.
    """

    def __init__(self, lastSequence: int, lastUID: int) -> None:
        self._last = {False: lastSequence, True: lastUID}
        self._sets: dict[tuple[bytes, bool], imap4.MessageSet] = {}

    def _set(self, term: Any, uid: bool) -> imap4.MessageSet:
        raw = term if isinstance(term, bytes) else str(term).encode("ascii", "replace")
        key = (raw, uid)
        if key not in self._sets:
            try:
                self._sets[key] = imap4.parseIdList(raw, self._last[uid])
            except imap4.IllegalIdentifierError as e:
                raise imap4.IllegalQueryError(f"Bad message set {_word(term)!r}") from e
        return self._sets[key]

    def matches(
        self,
        query: list[Any],
        sequence: int,
        entry: _Entry,
        message: MaildirMessage,
        depth: int = 0,
    ) -> bool:
        """
        @raise imap4.IllegalQueryError: Also for criteria nested (C{NOT},
            C{OR}, parentheses) deeper than L{MAX_SEARCH_DEPTH}: each level
            is a Python call, and a thousand of them end in a
            C{RecursionError}.
        """
        if depth > MAX_SEARCH_DEPTH:
            raise imap4.IllegalQueryError("Search criteria nested too deeply")
        terms = list(query)
        while terms:
            if not self._one(terms, sequence, entry, message, depth):
                return False
        return True

    def _one(
        self,
        terms: list[Any],
        sequence: int,
        entry: _Entry,
        message: MaildirMessage,
        depth: int,
    ) -> bool:
        if depth > MAX_SEARCH_DEPTH:
            raise imap4.IllegalQueryError("Search criteria nested too deeply")
        term = terms.pop(0)
        if isinstance(term, list):
            return self.matches(term, sequence, entry, message, depth + 1)
        key = _word(term).upper()

        def argument() -> Any:
            if not terms:
                raise imap4.IllegalQueryError(f"{key} needs an argument")
            return terms.pop(0)

        if key[:1].isdigit() or key[:1] == "*":
            return sequence in self._set(term, False)
        if key == "ALL":
            return True
        if key in _FLAG_KEYS:
            flag, present = _FLAG_KEYS[key]
            return (flag in entry.flags) == present
        if key == "RECENT":
            return entry.recent
        if key == "OLD":
            return not entry.recent
        if key == "NEW":
            return entry.recent and "\\Seen" not in entry.flags
        if key in ("KEYWORD", "UNKEYWORD"):
            word = _word(argument()).lower()
            return any(w.lower() == word for w in entry.keywords) == (key == "KEYWORD")
        if key in _HEADER_KEYS or key == "HEADER":
            name = _HEADER_KEYS.get(key) or _word(argument()).lower()
            needle = _word(argument()).casefold()
            value = message.getHeaders(False, name).get(name)
            return value is not None and needle in _decodedHeader(value).casefold()
        if key in ("BODY", "TEXT"):
            pattern = _word(argument()).encode("utf-8").lower()
            source = message.getBodyFile() if key == "BODY" else message.open()
            return _fileContains(source, pattern)
        if key in ("LARGER", "SMALLER"):
            try:
                size = int(_word(argument()))
            except ValueError:
                raise imap4.IllegalQueryError(f"{key} needs a number") from None
            return (
                message.getSize() > size
                if key == "LARGER"
                else message.getSize() < size
            )
        if key in ("BEFORE", "ON", "SINCE"):
            when = _searchDate(argument())
            day = datetime.datetime.fromtimestamp(
                message._internalTime(), datetime.timezone.utc
            ).date()
            return _compareDays(key, day, when)
        if key in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            when = _searchDate(argument())
            parsed = email.utils.parsedate_tz(
                message.getHeaders(False, "date").get("date", "")
            )
            try:
                sent = datetime.date(*parsed[:3]) if parsed else None
            except ValueError:
                sent = None
            return sent is not None and _compareDays(key[4:], sent, when)
        if key == "UID":
            return entry.uid in self._set(argument(), True)
        if key == "NOT":
            return not self._one(terms, sequence, entry, message, depth + 1)
        if key == "OR":
            first = self._one(terms, sequence, entry, message, depth + 1)
            second = self._one(terms, sequence, entry, message, depth + 1)
            return first or second
        raise imap4.IllegalQueryError(f"Unknown search key {key}")


def _compareDays(key: str, day: datetime.date, when: datetime.date) -> bool:
    if key == "BEFORE":
        return day < when
    if key == "ON":
        return day == when
    return day >= when


# -- mailboxes -------------------------------------------------------------------


@implementer(IMailboxIMAPInfo)
class MaildirMailboxInfo:
    """
    What LIST says of a folder, without opening it: its name attributes
    (C{\\HasChildren}, C{\\Noselect}, ...) as the flags Twisted prints.
    """

    def __init__(self, attributes: Iterable[str]) -> None:
        self.attributes = list(attributes)

    def getFlags(self) -> list[str]:
        return list(self.attributes)

    def getHierarchicalDelimiter(self) -> str:
        return DELIMITER


def _setLast(messages: imap4.MessageSet, last: int) -> None:
    try:
        messages.last = last
    except ValueError:
        pass  # set already


@implementer(
    IMailboxIMAP, ISearchableIMAPMailbox, IMessageIMAPCopier, ICloseableMailboxIMAP
)
class MaildirMailbox:
    """
    One session's view of a maildir folder (a new one per C{select}).

    Sequence numbers are this view's; UIDs are the folder's.  A read-write
    view takes the mail in C{new/} (moves it to C{cur/}; it is C{\\Recent}
    in this view only) once it has a listener, that is once a session
    selected it; until then (APPEND, COPY, STATUS) mail in C{new/} counts as
    recent but stays there.  APPEND and COPY write straight into C{cur/},
    so what they add is not recent.

    Search is done here rather than left to Twisted's server, whose
    fallback compares the query's L{bytes} with header L{str}s (so C{FROM},
    C{SUBJECT} ... fail) and opens every message even for flag searches.

    @ivar name: The folder's IMAP name.
    @ivar path: Its directory.
    @ivar rw: Whether this view may change the folder.
    """

    def __init__(self, folder: _Folder, rw: bool = True) -> None:
        self._folder = folder
        self.name = folder.name
        self.path = folder.path
        self.rw = bool(rw)
        self._listeners: list[Any] = []
        self._entries: list[_Entry] = []
        self._stamp: Any = None
        self._uidValidity = 0
        self._uidNext = 1
        self._claimed = False
        self._closed = False
        self._destroyed = False
        self._refresh(folder.stamp())

    def __repr__(self) -> str:
        return f"<MaildirMailbox {self.name!r} {'rw' if self.rw else 'ro'}>"

    # -- keeping up with the disk --

    def _refresh(
        self, stamp: Any
    ) -> tuple[list[_Entry], list[_Entry], list[_Entry]]:
        """
        Read the folder again if it changed.

        @param stamp: The folder's L{_Folder.stamp}, just read: when it is
            the one recorded at the last read (and old enough to be
            trusted), nothing is listed.
        @return: Entries that vanished, entries whose flags changed, new
            entries (already appended to the view).
        """
        if stamp is not None and stamp == self._stamp:
            return [], [], []
        listing, state = self._folder.sync()
        self._stamp = stamp
        if self._uidValidity and state.uidValidity != self._uidValidity:
            _log.error(
                "UIDVALIDITY of {mailbox} changed under a session ({old} -> "
                "{new}): its messages are renumbered",
                mailbox=self.name,
                old=self._uidValidity,
                new=state.uidValidity,
                mailboxEvent="uidValidityChanged",
            )
        self._uidValidity = state.uidValidity
        self._uidNext = state.uidNext

        vanished: list[_Entry] = []
        changed: list[_Entry] = []
        known: set[str] = set()
        for entry in self._entries:
            if entry.vanished:
                continue
            where = listing.get(entry.key)
            if where is None or state.uids.get(entry.key) != entry.uid:
                entry.vanished = True
                vanished.append(entry)
                continue
            known.add(entry.key)
            flags, extra = _parseInfo(where[1])
            keywords = tuple(state.keywords.get(entry.key, ()))
            entry.subdir, entry.filename, entry.extra = where[0], where[1], extra
            if flags != entry.flags or keywords != entry.keywords:
                entry.flags, entry.keywords = flags, keywords
                changed.append(entry)

        added = [
            _Entry(
                key,
                state.uids[key],
                sub,
                filename,
                state.keywords.get(key, ()),
                sub == "new",
            )
            for key, (sub, filename) in listing.items()
            if key not in known
        ]
        added.sort(key=lambda entry: entry.uid)
        self._entries.extend(added)
        if self._claimed:
            self._claim(added)
        return vanished, changed, added

    def _claim(self, entries: Iterable[_Entry]) -> None:
        """
        Move messages from C{new/} to C{cur/}: they are recent here only.
        """
        for entry in entries:
            if entry.subdir != "new" or entry.vanished:
                continue
            filename = (
                entry.filename if ":" in entry.filename else entry.filename + _INFO
            )
            try:
                os.rename(
                    self.path / "new" / entry.filename, self.path / "cur" / filename
                )
            except FileNotFoundError:
                continue  # another session took it; poll will see where
            except OSError as e:
                _log.error(
                    "Cannot move {filename} to cur/ in {mailbox}: {error}",
                    filename=entry.filename,
                    mailbox=self.name,
                    error=str(e),
                    mailboxEvent="claimFailed",
                )
                continue
            entry.subdir, entry.filename = "cur", filename

    def _canAnnounceExpunges(self) -> bool:
        return all(IMailboxIMAPExpungeListener.providedBy(l) for l in self._listeners)

    def _dropVanished(self) -> list[int]:
        """
        Forget vanished entries.

        @return: Their C{* n EXPUNGE} numbers, in order.
        """
        numbers: list[int] = []
        kept = []
        for sequence, entry in enumerate(self._entries, 1):
            if entry.vanished:
                numbers.append(sequence - len(numbers))
            else:
                kept.append(entry)
        self._entries = kept
        return numbers

    def poll(self) -> None:
        """
        Catch up with other sessions and deliveries, and tell the listeners:
        C{expunged} (to L{IMailboxIMAPExpungeListener}s), then
        C{flagsChanged}, then C{newMessages}.  Cheap when nothing changed
        (a few C{stat}s); the protocol calls it before each command.
        """
        if self._closed or self._destroyed:
            return
        stamp = self._folder.stamp()
        if stamp is not None and stamp == self._stamp:
            # Nothing changed on disk: no listing, no counting.
            return
        exists, recent = self.getMessageCount(), self.getRecentCount()
        vanished, changed, added = self._refresh(stamp)
        if vanished and self._canAnnounceExpunges():
            numbers = self._dropVanished()
            for listener in list(self._listeners):
                listener.expunged(numbers)
            exists -= len(numbers)
        if changed:
            sequenceOf = {id(entry): n for n, entry in enumerate(self._entries, 1)}
            flags = {
                sequenceOf[id(entry)]: entry.flagList()
                for entry in changed
                if id(entry) in sequenceOf and not entry.vanished
            }
            if flags:
                for listener in list(self._listeners):
                    listener.flagsChanged(flags)
        newExists, newRecent = self.getMessageCount(), self.getRecentCount()
        if newExists != exists or newRecent != recent:
            for listener in list(self._listeners):
                listener.newMessages(
                    newExists if newExists != exists else None,
                    newRecent if newRecent != recent else None,
                )

    # -- IMailboxIMAPInfo / IMailboxIMAP --

    def getFlags(self) -> list[str]:
        """
        The flags messages here may have: the system flags and the keywords
        in use.
        """
        flags = list(_FLAG_ORDER)
        keywords: dict[str, str] = {}
        for entry in self._entries:
            for word in entry.keywords:
                keywords.setdefault(word.lower(), word)
        flags.extend(sorted(keywords.values()))
        if self._destroyed:
            flags.append("\\Noselect")
        return flags

    def getHierarchicalDelimiter(self) -> str:
        return DELIMITER

    def getUIDValidity(self) -> int:
        return self._uidValidity

    def getUIDNext(self) -> int:
        return self._uidNext

    def getUID(self, message: int) -> int:
        if not 0 < message <= len(self._entries):
            raise imap4.MailboxException(f"No message {message}")
        return self._entries[message - 1].uid

    def getMessageCount(self) -> int:
        return len(self._entries)

    def getRecentCount(self) -> int:
        return sum(1 for entry in self._entries if entry.recent)

    def firstUnseen(self) -> int | None:
        """
        The sequence number of the first message without C{\\Seen}, or
        L{None} (SELECT's C{OK [UNSEEN n]}).
        """
        for sequence, entry in enumerate(self._entries, 1):
            if not entry.vanished and "\\Seen" not in entry.flags:
                return sequence
        return None

    def getUnseenCount(self) -> int:
        return sum(
            1
            for entry in self._entries
            if not entry.vanished and "\\Seen" not in entry.flags
        )

    def isWriteable(self) -> bool:
        return self.rw

    def destroy(self) -> None:
        """
        The folder is being deleted: nothing to release, but it is
        C{\\Noselect} from now on.
        """
        self._destroyed = True

    def requestStatus(self, names: Iterable[str]) -> dict[str, int]:
        return imap4.statusRequestHelper(self, names)  # type: ignore[no-any-return]

    def addListener(self, listener: Any) -> None:
        """
        Add a listener; the first one, on a read-write view, makes this the
        session's selected mailbox, which takes the mail in C{new/}.
        """
        self._listeners.append(listener)
        if self.rw and not self._claimed:
            self._claimed = True
            self._claim(self._entries)

    def removeListener(self, listener: Any) -> None:
        self._listeners.remove(listener)

    def addMessage(
        self,
        message: Any,
        flags: Iterable[str | bytes] = (),
        date: str | bytes | None = None,
    ) -> defer.Deferred[int]:
        """
        APPEND: write C{message} (a file, or bytes) to C{tmp/} and rename it
        into C{cur/} with C{flags}; C{date} sets its internal date.

        @return: A L{defer.Deferred} firing with the new UID, or failing with
            L{imap4.ReadOnlyMailbox} or L{imap4.MailboxException}.
        """
        if not self.rw:
            return defer.fail(imap4.ReadOnlyMailbox())
        try:
            system, keywords = _parseFlags(flags)
            mtime = _parseDate(date) if date else None

            def fill(temporary: Path) -> None:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    if isinstance(message, (bytes, bytearray, memoryview)):
                        out.write(message)
                    else:
                        shutil.copyfileobj(message, out)
                    out.flush()
                    os.fsync(out.fileno())

            uid = self._folder.deliver(fill, system, keywords, mtime)
        except Exception:
            return defer.fail()
        self.poll()
        return defer.succeed(uid)

    def copy(self, messageObject: Any) -> int:
        """
        COPY a message here, with its flags and internal date (a hard link
        when it can be: maildir files never change).

        @return: The UID of the copy.
        """
        if not self.rw:
            raise imap4.ReadOnlyMailbox()
        if not isinstance(messageObject, MaildirMessage):
            return self._copyOther(messageObject)
        entry = messageObject._entry
        system, keywords = set(entry.flags), list(entry.keywords)

        def fill(temporary: Path) -> None:
            def link(source: Path) -> bool:
                try:
                    os.link(source, temporary)
                except FileNotFoundError:
                    raise
                except OSError:
                    shutil.copy2(source, temporary)
                return True

            if messageObject._withFile(link) is None:
                raise imap4.MailboxException(
                    f"Message {entry.uid} vanished before it could be copied"
                )

        uid = self._folder.deliver(fill, system, keywords, None)
        self._uidNext = max(self._uidNext, uid + 1)
        return uid

    def _copyOther(self, messageObject: Any) -> int:
        source = IMessageIMAPFile(messageObject, None)
        if source is None:
            raise imap4.MailboxException("Cannot copy a message that is not a file")
        system, keywords = _parseFlags(messageObject.getFlags())
        mtime = _parseDate(messageObject.getInternalDate())

        def fill(temporary: Path) -> None:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                with contextlib.closing(source.open()) as data:
                    shutil.copyfileobj(data, out)
                out.flush()
                os.fsync(out.fileno())

        uid = self._folder.deliver(fill, system, keywords, mtime)
        self._uidNext = max(self._uidNext, uid + 1)
        return uid

    def expunge(self) -> list[int]:
        """
        Delete the messages flagged C{\\Deleted} (as the folder has them now).

        @return: Their C{* n EXPUNGE} numbers, in order, including messages
            another session expunged that this one could not announce yet.
        @raise imap4.ReadOnlyMailbox: On an EXAMINEd view.
        """
        if not self.rw:
            raise imap4.ReadOnlyMailbox()
        self.poll()
        for entry in self._entries:
            if entry.vanished or "\\Deleted" not in entry.flags:
                continue
            try:
                os.unlink(self.path / entry.subdir / entry.filename)
            except FileNotFoundError:
                where = self._folder.locate(entry.key)
                if where is not None:
                    flags, _ = _parseInfo(where[1])
                    if "\\Deleted" not in flags:
                        continue  # undeleted meanwhile: keep it
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path / where[0] / where[1])
            except OSError as e:
                _log.error(
                    "Cannot expunge {filename} in {mailbox}: {error}",
                    filename=entry.filename,
                    mailbox=self.name,
                    error=str(e),
                    mailboxEvent="expungeFailed",
                )
                continue
            entry.vanished = True
        return self._dropVanished()

    def _matching(
        self, messages: imap4.MessageSet, uid: bool
    ) -> Iterator[tuple[int, _Entry]]:
        if self._entries:
            _setLast(messages, self._entries[-1].uid if uid else len(self._entries))
        else:
            _setLast(messages, max(self._uidNext - 1, 1) if uid else 1)
        for sequence, entry in enumerate(self._entries, 1):
            if not entry.vanished and (entry.uid if uid else sequence) in messages:
                yield sequence, entry

    def search(self, query: list[Any], uid: bool) -> list[int]:
        """
        The messages matching C{query} (RFC 3501 search keys as Twisted
        parses them).  Text keys ignore case; BODY and TEXT look at the
        bytes as stored (no transfer decoding); dates are UTC days.

        @return: Sequence numbers, even for UID SEARCH: Twisted's server
            turns them into UIDs itself.
        @raise imap4.IllegalQueryError: For an unknown key or a bad argument.
        """
        matcher = _Search(
            len(self._entries), self._entries[-1].uid if self._entries else 0
        )
        return [
            sequence
            for sequence, entry in enumerate(self._entries, 1)
            if not entry.vanished
            and matcher.matches(
                query, sequence, entry, MaildirMessage(self._folder, entry)
            )
        ]

    def fetch(
        self, messages: imap4.MessageSet, uid: bool
    ) -> list[tuple[int, MaildirMessage]]:
        """
        The messages in C{messages} (sequence numbers, or UIDs), in order.
        """
        return [
            (sequence, MaildirMessage(self._folder, entry))
            for sequence, entry in self._matching(messages, uid)
        ]

    def store(
        self,
        messages: imap4.MessageSet,
        flags: Iterable[str | bytes],
        mode: int,
        uid: bool,
    ) -> dict[int, list[str]]:
        """
        Add (C{mode} 1), remove (-1) or replace (0) flags.  System flags are
        renamed into the file names, keywords kept in the folder state.

        @return: Sequence number to the message's flags now.
        @raise imap4.ReadOnlyMailbox: On an EXAMINEd view.
        """
        if not self.rw:
            raise imap4.ReadOnlyMailbox()
        system, keywords = _parseFlags(flags)
        lowered = {word.lower() for word in keywords}
        result: dict[int, list[str]] = {}
        keywordChanges: dict[str, list[str]] = {}
        for sequence, entry in self._matching(messages, uid):
            if mode > 0:
                newFlags = entry.flags | system
                have = {word.lower() for word in entry.keywords}
                newKeywords = tuple(entry.keywords) + tuple(
                    w for w in keywords if w.lower() not in have
                )
            elif mode < 0:
                newFlags = entry.flags - system
                newKeywords = tuple(
                    w for w in entry.keywords if w.lower() not in lowered
                )
            else:
                newFlags = frozenset(system)
                newKeywords = tuple(keywords)
            if newFlags != entry.flags and not self._rename(entry, frozenset(newFlags)):
                continue
            if newKeywords != entry.keywords:
                entry.keywords = newKeywords
                keywordChanges[entry.key] = list(newKeywords)
            result[sequence] = entry.flagList()
        if keywordChanges:
            self._folder.updateKeywords(keywordChanges)
        return result

    def _rename(self, entry: _Entry, flags: frozenset[str]) -> bool:
        """
        Give a message file the name that says C{flags}; False if it is gone.
        """
        target = _filename(entry.key, flags, entry.extra)
        for attempt in (1, 2):
            try:
                os.rename(
                    self.path / entry.subdir / entry.filename,
                    self.path / "cur" / target,
                )
            except FileNotFoundError:
                where = self._folder.locate(entry.key) if attempt == 1 else None
                if where is None:
                    return False
                entry.subdir, entry.filename = where
                continue
            entry.subdir, entry.filename, entry.flags = "cur", target, flags
            return True
        return False

    def close(self) -> None:
        """
        The session is done with this view: later polls do nothing.
        """
        self._closed = True


# -- the account -----------------------------------------------------------------


@implementer(IAccountIMAP, INamespacePresenter)
class MaildirAccount:
    """
    An account's folders: its maildir (INBOX) and the Maildir++ folders in
    it.  Names are checked (L{InvalidMailboxName}); INBOX is
    case-insensitive, other names are not.

    @ivar root: The account's maildir, made if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        _makeMaildir(self.root, folder=False)

    def __repr__(self) -> str:
        return f"<MaildirAccount {str(self.root)!r}>"

    # -- helpers --

    def _path(self, parts: list[str]) -> Path:
        return self.root / _directoryName(parts) if parts else self.root

    def _folders(self) -> dict[tuple[str, ...], Path]:
        """
        Every folder on disk, INBOX included, by its levels.
        """
        folders: dict[tuple[str, ...], Path] = {(): self.root}
        try:
            names = os.listdir(self.root)
        except OSError as e:
            _log.error(
                "Cannot list {path}: {error}",
                path=str(self.root),
                error=str(e),
                mailboxEvent="listFailed",
            )
            return folders
        for directory in names:
            parts = _nameFromDirectory(directory)
            if parts is not None and _isMaildir(self.root / directory):
                folders[tuple(parts)] = self.root / directory
        return folders

    def _newUIDValidity(self) -> int:
        """
        A UIDVALIDITY never used in this account: the time, or one more than
        the last.
        """
        counter = self.root / _UIDVALIDITY
        with _locked(self.root / (_UIDVALIDITY + ".lock")):
            try:
                last = int(counter.read_text().strip())
            except (OSError, ValueError):
                last = 0
            value = min(max(int(time.time()), last + 1), 2**32 - 1)
            try:
                replaceDurably(counter, b"%d\n" % (value,))
            except OSError as e:
                _log.error(
                    "Cannot write {path}: {error}",
                    path=str(counter),
                    error=str(e),
                    mailboxEvent="stateNotWritten",
                )
        return value

    def _readSubscriptions(self) -> list[str]:
        try:
            text = (self.root / SUBSCRIPTIONS).read_text("utf-8")
        except FileNotFoundError:
            return ["INBOX"]
        except (OSError, UnicodeDecodeError) as e:
            _log.error(
                "Cannot read subscriptions in {path}: {error}",
                path=str(self.root),
                error=str(e),
                mailboxEvent="subscriptionsUnreadable",
            )
            return ["INBOX"]
        return [line for line in text.splitlines() if line]

    def _writeSubscriptions(self, names: list[str]) -> None:
        replaceDurably(
            self.root / SUBSCRIPTIONS, "".join(n + "\n" for n in names).encode("utf-8")
        )

    # -- IAccountIMAP --

    def addMailbox(self, name: str, mbox: Any = None) -> bool:
        """
        Make an empty folder (and any missing parents).

        @raise imap4.MailboxException: If C{mbox} is given: only empty
            maildir folders can be added.
        """
        if mbox is not None:
            raise imap4.MailboxException("Only new, empty maildir folders can be added")
        return self.create(name)

    def create(self, pathspec: str) -> bool:
        """
        Make a folder and any missing parents.  One trailing C{/} is allowed
        and dropped (RFC 3501 section 6.3.3).

        @raise imap4.MailboxCollision: If it exists.
        @raise InvalidMailboxName: If the name is refused.
        """
        if isinstance(pathspec, bytes):
            pathspec = pathspec.decode("imap4-utf-7")
        if pathspec.endswith(DELIMITER) and not pathspec.endswith(DELIMITER * 2):
            pathspec = pathspec[:-1]
        parts = _nameComponents(pathspec)
        path = self._path(parts)
        if not parts or _isMaildir(path):
            raise imap4.MailboxCollision(_joinName(parts))
        for depth in range(1, len(parts)):
            parent = parts[:depth]
            if parent != ["INBOX"]:
                _makeMaildir(self._path(parent), folder=True)
        _makeMaildir(path, folder=True)
        return True

    def select(self, name: str, rw: bool = True) -> MaildirMailbox | None:
        """
        A new view of the folder C{name}, or L{None} if there is no such
        folder (or no such name could exist).
        """
        try:
            parts = _nameComponents(name)
        except InvalidMailboxName:
            return None
        path = self._path(parts)
        if not _isMaildir(path):
            return None
        return MaildirMailbox(_Folder(path, _joinName(parts), self._newUIDValidity), rw)

    def delete(self, name: str) -> bool:
        """
        Delete a folder and its messages.  INBOX cannot be deleted, nor a
        folder with subfolders (delete those first).
        """
        parts = _nameComponents(name)
        if not parts:
            raise imap4.MailboxException("INBOX cannot be deleted")
        folders = self._folders()
        if tuple(parts) not in folders:
            raise imap4.NoSuchMailbox(_joinName(parts))
        if any(
            len(other) > len(parts) and list(other[: len(parts)]) == parts
            for other in folders
        ):
            raise imap4.MailboxException(
                f"{_joinName(parts)} has subfolders: delete or move them first"
            )
        # Out of sight at once, then removed.
        graveyard = self.root / (_DELETED_PREFIX + secrets.token_hex(8))
        os.rename(folders[tuple(parts)], graveyard)

        def failed(function: Any, path: str, error: Any) -> None:
            if isinstance(error, tuple):
                error = error[1]
            _log.error(
                "Cannot remove {path} of a deleted folder: {error}",
                path=path,
                error=str(error),
                mailboxEvent="deleteIncomplete",
            )

        if sys.version_info >= (3, 12):
            shutil.rmtree(graveyard, onexc=failed)
        else:
            shutil.rmtree(graveyard, onerror=failed)
        return True

    def rename(self, oldname: str, newname: str) -> bool:
        """
        Rename a folder and its subfolders, making missing parents of the
        new name; subscriptions follow.
        """
        old, new = _nameComponents(oldname), _nameComponents(newname)
        if not old:
            raise imap4.MailboxException("INBOX cannot be renamed")
        if not new:
            raise imap4.MailboxCollision("INBOX")
        if new[: len(old)] == old:
            raise imap4.MailboxException("A folder cannot be moved into itself")
        folders = self._folders()
        if tuple(old) not in folders:
            raise imap4.NoSuchMailbox(_joinName(old))
        moves = [
            (parts, tuple(new) + parts[len(old) :])
            for parts in folders
            if parts[: len(old)] == tuple(old)
        ]
        for _, target in moves:
            if target in folders or self._path(list(target)).exists():
                raise imap4.MailboxCollision(_joinName(list(target)))
            _nameComponents(_joinName(list(target)))  # still a valid name?
        for depth in range(1, len(new)):
            parent = new[:depth]
            if parent != ["INBOX"] and tuple(parent) not in folders:
                _makeMaildir(self._path(parent), folder=True)
        for source, target in moves:
            os.rename(folders[source], self._path(list(target)))
        renamed = {_joinName(list(s)): _joinName(list(t)) for s, t in moves}
        subscriptions = self._readSubscriptions()
        if any(n in renamed for n in subscriptions):
            self._writeSubscriptions([renamed.get(n, n) for n in subscriptions])
        return True

    def isSubscribed(self, name: str) -> bool:
        try:
            normalized = _joinName(_nameComponents(name))
        except InvalidMailboxName:
            return False
        return normalized in self._readSubscriptions()

    def subscribe(self, name: str) -> bool:
        normalized = _joinName(_nameComponents(name))
        subscriptions = self._readSubscriptions()
        if normalized not in subscriptions:
            self._writeSubscriptions(subscriptions + [normalized])
        return True

    def unsubscribe(self, name: str) -> bool:
        normalized = _joinName(_nameComponents(name))
        subscriptions = self._readSubscriptions()
        if normalized not in subscriptions:
            raise imap4.MailboxException(f"Not subscribed to {normalized}")
        self._writeSubscriptions([n for n in subscriptions if n != normalized])
        return True

    def listMailboxes(
        self, ref: str, wildcard: str
    ) -> list[tuple[str, MaildirMailboxInfo]]:
        """
        Folders whose names match C{ref + wildcard} (C{*} anything, C{%}
        anything within one level); parents that exist only as a prefix are
        listed C{\\Noselect}.  An empty C{wildcard} asks for the delimiter.
        """
        if isinstance(ref, bytes):
            ref = ref.decode("imap4-utf-7")
        if isinstance(wildcard, bytes):
            wildcard = wildcard.decode("imap4-utf-7")
        if not wildcard:
            return [("", MaildirMailboxInfo(["\\Noselect"]))]
        pattern = ref + wildcard
        if pattern[:5].upper() == "INBOX" and pattern[5:6] in ("", DELIMITER, "*", "%"):
            pattern = "INBOX" + pattern[5:]
        matcher = re.compile(imap4.wildcardToRegexp(pattern, DELIMITER).pattern)

        real = set(self._folders())
        every = set(real)
        for parts in real:
            for depth in range(1, len(parts)):
                if parts[:depth] != ("INBOX",):
                    every.add(parts[:depth])
        result = []
        for parts in sorted(every, key=lambda p: (p != (), p)):
            name = _joinName(list(parts))
            if not matcher.fullmatch(name):
                continue
            prefix = parts or ("INBOX",)  # INBOX's children are INBOX/...
            hasChildren = any(
                len(o) > len(prefix) and o[: len(prefix)] == prefix for o in every
            )
            attributes = ["\\HasChildren" if hasChildren else "\\HasNoChildren"]
            if parts not in real:
                attributes.insert(0, "\\Noselect")
            result.append((name, MaildirMailboxInfo(attributes)))
        return result

    # -- INamespacePresenter --

    def getPersonalNamespaces(self) -> list[list[bytes]]:
        return [[b"", DELIMITER.encode("ascii")]]

    def getSharedNamespaces(self) -> None:
        return None

    def getUserNamespaces(self) -> None:
        return None
