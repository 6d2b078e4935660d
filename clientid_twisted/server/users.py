# -*- test-case-name: tests.test_users -*-
"""
The accounts of the runnable server: a small JSON file of addresses and
scrypt password hashes, and the C{twisted.cred} checker that reads it.

The file (C{DATA_DIR/users.json}) maps lower-cased addresses to hashes like
C{scrypt$16384$8$1$<salt>$<hash>} (standard base64).  It is replaced
atomically on every change and re-read whenever its C{stat} changes, so
C{clientid-admin user add} takes effect on a running server without a
restart.  Passwords are never stored, only their scrypt hashes; device
tokens live elsewhere (the drafts: not beside credentials).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted.cred import TemporaryAuthenticationFailure
from clientid_twisted.server.files import replaceDurably

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "UserDatabase",
    "ScryptChecker",
    "UserDatabaseError",
    "InvalidAddress",
    "UserExists",
    "UnknownUser",
    "normalizeAddress",
    "hashPassword",
    "verifyPassword",
    "usersPath",
    "USERS_FILE",
    "AliasDatabase",
    "aliasesFromConfig",
    "ALIASES_FILE",
]

USERS_FILE = "users.json"
"""The name of the user database inside the data directory."""

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_LENGTH = 16
HASH_LENGTH = 32

_MAX_LOCAL = 64
_MAX_ADDRESS = 254
# RFC 5322 dot-atom for the local part, minus "/" (it names a directory).
_ATEXT = r"[A-Za-z0-9!#$%&'*+=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@({_LABEL}(?:\.{_LABEL})*)")


class UserDatabaseError(ValueError):
    """
    The user database file cannot be read or is not what we wrote.  It is
    left as it is for the operator to repair or restore.
    """


class InvalidAddress(ValueError):
    """
    Not an address we accept as an account name.
    """


class UserExists(ValueError):
    """
    The account to add is already there.
    """


class UnknownUser(KeyError):
    """
    The account named does not exist.
    """

    def __str__(self) -> str:
        # KeyError's own str() shows the repr of its argument.
        return str(self.args[0]) if self.args else "unknown user"


def normalizeAddress(address: str) -> str:
    """
    Check an account address and fold it to lower case.

    Accepted: C{local@domain}, ASCII, a dot-atom local part without C{/}
    (the address names the account's maildir) and a host name domain.

    @raise InvalidAddress: Otherwise, saying what is expected.
    """
    if (
        not isinstance(address, str)
        or _ADDRESS.fullmatch(address) is None
        or len(address) > _MAX_ADDRESS
        or len(address.partition("@")[0]) > _MAX_LOCAL
    ):
        raise InvalidAddress(
            f"invalid address {address!r}: expected local@domain in ASCII, "
            "without spaces, quotes or '/'"
        )
    return address.lower()


def usersPath(dataDir: Path) -> Path:
    """
    Where the user database of the data directory C{dataDir} lives.
    """
    return Path(dataDir) / USERS_FILE


def _passwordBytes(password: str | bytes) -> bytes:
    """
    Passwords are compared as UTF-8 in Unicode normalization form C (as
    RFC 8265's OpaqueString does), so the same password typed on two
    keyboards matches.  Bytes that are not UTF-8 are used as they are.
    """
    if isinstance(password, bytes):
        try:
            text = password.decode("utf-8")
        except UnicodeDecodeError:
            return password
    else:
        text = password
    return unicodedata.normalize("NFC", text).encode("utf-8")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # One function to patch in tests that check which thread runs the KDF.
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * n * r + 2**20
    )


def _formatHash(n: int, r: int, p: int, salt: bytes, digest: bytes) -> str:
    return "scrypt${}${}${}${}${}".format(
        n,
        r,
        p,
        base64.b64encode(salt).decode("ascii"),
        base64.b64encode(digest).decode("ascii"),
    )


def hashPassword(password: str | bytes) -> str:
    """
    Hash a password for storage with scrypt (n=2**14, r=8, p=1), a fresh
    16-byte salt and a 32-byte result.

    @return: The self-describing C{scrypt$n$r$p$salt$hash} string.
    """
    salt = os.urandom(SALT_LENGTH)
    digest = _scrypt(
        _passwordBytes(password), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_LENGTH
    )
    return _formatHash(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, digest)


def verifyPassword(passwordHash: str, password: str | bytes) -> bool:
    """
    Whether C{password} matches C{passwordHash}, in constant time.

    Slow on purpose (one scrypt): call it off the reactor thread.  A hash
    that is not ours, or has absurd parameters, matches nothing.
    """
    try:
        scheme, n, r, p, salt, digest = passwordHash.split("$")
        if scheme != "scrypt":
            return False
        n_, r_, p_ = int(n), int(r), int(p)
        if not (2 <= n_ <= 2**20 and 1 <= r_ <= 32 and 1 <= p_ <= 16) or (
            128 * n_ * r_ > 2**30
        ):
            return False
        saltBytes = base64.b64decode(salt, validate=True)
        expected = base64.b64decode(digest, validate=True)
    except (AttributeError, ValueError, binascii.Error):
        return False
    if not expected:
        return False
    try:
        actual = _scrypt(_passwordBytes(password), saltBytes, n_, r_, p_, len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


# Unknown accounts are checked against this, so that a login for one costs
# the same scrypt as a login for a real account: timing does not tell which
# addresses exist.  Random bytes, not the hash of any password.
_DUMMY_HASH = _formatHash(
    SCRYPT_N, SCRYPT_R, SCRYPT_P, os.urandom(SALT_LENGTH), os.urandom(HASH_LENGTH)
)


class _AddressMapFile:
    """
    A JSON object of lower-cased addresses to strings in a file, kept in
    step with other processes that change it.

    Every lookup costs one C{stat}; the file is parsed again only when its
    inode, size or times changed.  Changes hold an advisory lock (POSIX)
    across read-modify-write, so two C{clientid-admin} runs do not lose each
    other's update, and replace the file atomically and durably (mode
    0600), so readers never see half a file.  Use an instance from one
    thread.

    @ivar path: The JSON file.
    """

    log = Logger()
    _what = "user database"
    _values = "password hashes"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._users: dict[str, str] = {}
        self._stamp: tuple[int, ...] | None = None

    # Reading

    def _load(self) -> dict[str, str]:
        """
        The current map, re-read if the file changed.

        @raise UserDatabaseError: If the file is unreadable or corrupt.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._users, self._stamp = {}, None
            return self._users
        except OSError as e:
            raise UserDatabaseError(f"cannot read {self._what} {self.path}: {e}")
        stamp = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if stamp != self._stamp:
            self._users = self._parse()
            self._stamp = stamp
        return self._users

    def _parse(self) -> dict[str, str]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as e:
            raise UserDatabaseError(f"cannot read {self._what} {self.path}: {e}")
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserDatabaseError(
                f"{self._what} {self.path} is corrupt (line {e.lineno}, column "
                f"{e.colno}: {e.msg}); it was left untouched: repair or restore it"
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise UserDatabaseError(
                f"{self._what} {self.path} is corrupt: expected a JSON object "
                f"mapping addresses to {self._values}; it was left untouched"
            )
        return {k.lower(): v for k, v in data.items()}

    # Writing

    @contextmanager
    def _changing(self) -> Iterator[dict[str, str]]:
        """
        Lock, load a copy to change, and write it back if the block succeeds.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lockPath = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lockPath, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            users = dict(self._load())
            yield users
            self._write(users)
        finally:
            os.close(fd)  # also releases the lock

    def _write(self, users: dict[str, str]) -> None:
        text = json.dumps(users, indent=2, sort_keys=True) + "\n"
        replaceDurably(self.path, text.encode("utf-8"))
        # Our own write is not news to us.
        self._stamp = None
        self._load()


class UserDatabase(_AddressMapFile):
    """
    The account file: addresses to scrypt hashes (see L{_AddressMapFile}
    for how it is read and written).
    """

    def listUsers(self) -> list[str]:
        """
        All account addresses, sorted.
        """
        return sorted(self._load())

    def exists(self, address: str) -> bool:
        """
        Whether C{address} (any case) is an account.  Invalid addresses are
        not.
        """
        return self.passwordHash(address) is not None

    def passwordHash(self, address: str) -> str | None:
        """
        The stored hash of C{address} (any case), or L{None} if there is no
        such account or the address is invalid.
        """
        try:
            key = normalizeAddress(address)
        except InvalidAddress:
            return None
        return self._load().get(key)

    def addUser(self, address: str, password: str | bytes) -> None:
        """
        Add an account.

        @raise InvalidAddress: If C{address} is not acceptable.
        @raise UserExists: If the account is already there.
        @raise ValueError: If the password is empty.
        """
        key = normalizeAddress(address)
        _checkPassword(password)
        passwordHash = hashPassword(password)
        with self._changing() as users:
            if key in users:
                raise UserExists(f"user {key} already exists")
            users[key] = passwordHash

    def setPassword(self, address: str, password: str | bytes) -> None:
        """
        Replace the password of an existing account.

        @raise UnknownUser: If there is no such account.
        @raise ValueError: If the password is empty.
        """
        key = self._existingKey(address)
        _checkPassword(password)
        passwordHash = hashPassword(password)
        with self._changing() as users:
            if key not in users:
                raise UnknownUser(f"no such user: {key}")
            users[key] = passwordHash

    def removeUser(self, address: str) -> None:
        """
        Remove an account (its mail stays on disk).

        @raise UnknownUser: If there is no such account.
        """
        key = self._existingKey(address)
        with self._changing() as users:
            if key not in users:
                raise UnknownUser(f"no such user: {key}")
            del users[key]

    def _existingKey(self, address: str) -> str:
        try:
            return normalizeAddress(address)
        except InvalidAddress:
            raise UnknownUser(f"no such user: {address!r}") from None


class AliasDatabase(_AddressMapFile):
    """
    The sender addresses users may use besides their own: alias to owner,
    from C{DATA_DIR/aliases.json} (C{clientid-admin user alias}) and the
    C{[users] aliases} table of the configuration (read-only here).
    """

    _what = "alias database"
    _values = "owner addresses"

    def __init__(self, path: Path, configured: dict[str, str] | None = None) -> None:
        super().__init__(path)
        self.configured = dict(configured or {})

    def owner(self, alias: str) -> str | None:
        """
        Who may send as C{alias} besides an account of that name, or
        L{None}.
        """
        try:
            key = normalizeAddress(alias)
        except InvalidAddress:
            return None
        return self._load().get(key) or self.configured.get(key)

    def owns(self, login: str, address: str) -> bool:
        """
        Whether the user C{login} may use C{address} as its envelope
        sender: its own address or one of its aliases (any case).
        """
        try:
            login, key = normalizeAddress(login), normalizeAddress(address)
        except InvalidAddress:
            return False
        return key == login or self.owner(key) == login

    def listAliases(self, owner: str | None = None) -> list[tuple[str, str]]:
        """
        C{(alias, owner)} pairs, sorted, all or of one owner; the file's
        and the configuration's together.
        """
        every = {**self.configured, **self._load()}
        wanted = normalizeAddress(owner) if owner is not None else None
        return sorted(
            (alias, who) for alias, who in every.items() if wanted in (None, who)
        )

    def addAlias(self, alias: str, owner: str) -> None:
        """
        @raise InvalidAddress: If either address is not acceptable.
        @raise UserExists: If C{alias} already has an owner.
        """
        key, who = normalizeAddress(alias), normalizeAddress(owner)
        with self._changing() as aliases:
            current = aliases.get(key) or self.configured.get(key)
            if current is not None:
                raise UserExists(f"alias {key} already belongs to {current}")
            aliases[key] = who

    def removeAlias(self, alias: str) -> None:
        """
        @raise UnknownUser: If C{alias} is not in the file (the
            configuration's aliases are removed by editing it).
        """
        key = normalizeAddress(alias)
        with self._changing() as aliases:
            if key not in aliases:
                raise UnknownUser(f"no such alias: {key}")
            del aliases[key]

    def forgetOwner(self, owner: str) -> None:
        """
        Remove every alias of C{owner} from the file (its account is gone).
        """
        who = normalizeAddress(owner)
        with self._changing() as aliases:
            for alias in [a for a, o in aliases.items() if o == who]:
                del aliases[alias]


def aliasesFromConfig(table: dict[str, Any], source: object = None) -> dict[str, str]:
    """
    The C{aliases} of a C{[users]} table: C{{"alias@domain" =
    "owner@domain"}}.

    @raise ConfigError: For an unknown key, or an alias or owner that is
        not an address.
    """
    from clientid_twisted.server.config import ConfigError

    where = f"{source}: " if source is not None else ""
    unknown = set(table) - {"aliases"}
    if unknown:
        raise ConfigError(f"{where}[users] {sorted(unknown)[0]}: unknown key (known keys: aliases)")
    aliases = table.get("aliases", {})
    if not isinstance(aliases, dict):
        raise ConfigError(f"{where}[users] aliases: expected a table of alias = owner")
    result = {}
    for alias, owner in aliases.items():
        try:
            if not isinstance(owner, str):
                raise InvalidAddress(f"owner {owner!r} is not a string")
            result[normalizeAddress(alias)] = normalizeAddress(owner)
        except InvalidAddress as e:
            raise ConfigError(f"{where}[users] aliases {alias!r}: {e}") from None
    return result


ALIASES_FILE = "aliases.json"
"""The name of the alias database inside the data directory."""


def _checkPassword(password: str | bytes) -> None:
    if not isinstance(password, (str, bytes)) or not password:
        raise ValueError("the password must not be empty")


@implementer(ICredentialsChecker)
class ScryptChecker:
    """
    Checks user names and passwords against a L{UserDatabase}.

    scrypt is slow on purpose, so it runs in a thread pool: one login never
    stalls the other sessions.  An unknown account, a user name that is not
    UTF-8 or not an address, and a wrong password all fail the same way
    (L{UnauthorizedLogin}) after the same amount of work.  An unreadable
    user database is a temporary failure
    (L{TemporaryAuthenticationFailure}): the operator must fix it, the
    client should not think its password is wrong.

    The password is read from C{credentials.password} (Twisted's
    L{UsernamePassword <twisted.cred.credentials.UsernamePassword>} and its SMTP/IMAP subclasses, and any wrapper that
    forwards attributes, like
    L{clientid_twisted.cred.ClientIdentifiedCredentials}).  Credentials
    without one are refused: C{checkPassword} cannot stand in for it, since
    it must be given the plaintext password and only its hash is stored, so
    challenge-response mechanisms (CRAM-MD5) cannot work with this checker.

    @ivar users: The account database.
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(
        self, users: UserDatabase, reactor: Any = None, threadpool: Any = None
    ) -> None:
        """
        @param reactor: Delivers results back to the reactor thread; the
            global reactor by default.
        @param threadpool: Runs scrypt; the reactor's thread pool by default.
        """
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.users = users
        self._reactor = reactor
        self._threadpool = threadpool

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes | tuple[()]]:
        """
        @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the lower-cased address as bytes,
            or failing with L{UnauthorizedLogin} (or
            L{TemporaryAuthenticationFailure}).
        """
        password = getattr(credentials, "password", None)
        if not isinstance(password, (bytes, str)):
            self.log.warn(
                "refusing credentials without a password attribute: {kind}",
                kind=type(credentials).__name__,
            )
            return defer.fail(UnauthorizedLogin())
        address = _address(getattr(credentials, "username", None))
        try:
            stored = self.users.passwordHash(address) if address else None
        except UserDatabaseError as e:
            self.log.error("login refused for now: {error}", error=str(e))
            return defer.fail(TemporaryAuthenticationFailure(str(e)))
        passwordHash = stored if stored is not None else _DUMMY_HASH
        threadpool = self._threadpool
        if threadpool is None:
            threadpool = self._reactor.getThreadPool()
        d = deferToThreadPool(
            self._reactor, threadpool, verifyPassword, passwordHash, password
        )

        def verdict(matched: bool) -> bytes | Failure:
            if matched and stored is not None and address is not None:
                return address.encode("ascii")
            return Failure(UnauthorizedLogin())

        return d.addCallback(verdict)


def _address(username: object) -> str | None:
    """
    The account a user name names, or L{None} if it cannot name one.
    """
    if isinstance(username, bytes):
        try:
            username = username.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(username, str):
        return None
    try:
        return normalizeAddress(username)
    except InvalidAddress:
        return None
