# -*- test-case-name: tests.test_admin -*-
"""
C{clientid-admin}: manage the runnable server's data directory::

    clientid-admin [--data-dir DIR | --store URL] init
    clientid-admin [--data-dir DIR] user add ADDRESS --password-stdin
    clientid-admin [--data-dir DIR] user passwd ADDRESS --password-stdin
    clientid-admin [--data-dir DIR] user remove ADDRESS [--keep-mail]
    clientid-admin [--data-dir DIR] user list
    clientid-admin [--data-dir DIR] user alias add ALIAS OWNER
    clientid-admin [--data-dir DIR] user alias remove ALIAS
    clientid-admin [--data-dir DIR] user alias list [OWNER]

    clientid-admin [--data-dir DIR | --store URL] devices list ADDRESS [--json]
    clientid-admin [...] devices approve ADDRESS (TYPE TOKEN | --fingerprint FP)
    clientid-admin [...] devices revoke ADDRESS (TYPE TOKEN | --fingerprint FP)
    clientid-admin [...] devices rename ADDRESS FINGERPRINT NAME
    clientid-admin [...] tokens revoke TYPE TOKEN [--for SECONDS]
    clientid-admin [...] tokens unlock TYPE TOKEN
    clientid-admin [...] events [--account ADDRESS] [--limit N] [--json]

    clientid-admin [--data-dir DIR] queue list [--json]
    clientid-admin [--data-dir DIR] queue flush
    clientid-admin [--data-dir DIR] queue remove ID

Changes take effect on a running server at its next login: it re-reads the
files and the store.  Each command group is registered by one function in
L{COMMANDS}.  The device, token and event commands need only the CLIENTID
store (C{--store URL}); with a data directory they also check that the
account exists, unless the configuration names a gateway backend
(C{[gateway] imap_backend} / C{smtp_backend}), whose accounts live there.

Every command but C{init} needs an existing data directory (or store): only
the server's first start or C{init} makes one, so a command run from the
wrong directory says where it looked (exit 2) instead of writing elsewhere.

Exit status: 0 success, 1 the data directory or store is unusable (a
corrupt or unreadable file), 2 a usage error (bad arguments, a missing data
directory or store, an invalid configuration, invalid address, unknown or
existing user, empty password, unknown device, a device name the device
page would refuse).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from clientid_twisted import __version__
from clientid_twisted._authlog import escapeForLog
from clientid_twisted.policy import DeviceManager, DeviceView, MAX_NAME_LENGTH, accountName, resultOf
from clientid_twisted.cred import ClientIdentity
from clientid_twisted.server.config import checkConfig, configPath, getTable, loadConfig
from clientid_twisted._keyfile import KEY_FILE
from clientid_twisted.store import StoreError, StoreMissing, openStore, storeScheme
from clientid_twisted.server.users import (
    ALIASES_FILE,
    AliasDatabase,
    InvalidAddress,
    UnknownUser,
    UserDatabase,
    UserDatabaseError,
    UserExists,
    aliasesFromConfig,
    normalizeAddress,
    usersPath,
)

__all__ = ["main", "COMMANDS", "UsageError", "DEFAULT_DATA_DIR"]

DEFAULT_DATA_DIR = "./clientid-data"

EXIT_OK = 0
EXIT_DATA = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """
    The command cannot be done as asked; the message says why.  Exit 2.
    """


class _Context:
    """
    What a command runs with: parsed arguments and the three streams.
    """

    def __init__(
        self,
        arguments: argparse.Namespace,
        stdin: TextIO,
        stdout: TextIO,
        stderr: TextIO,
    ) -> None:
        self.arguments = arguments
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._cleanups: list[Callable[[], Any]] = []

    def closeLater(self, cleanup: Callable[[], Any]) -> None:
        """
        Call C{cleanup} when the command is done, whatever happened.
        """
        self._cleanups.append(cleanup)

    def close(self) -> None:
        while self._cleanups:
            self._cleanups.pop()()

    @property
    def dataDir(self) -> Path:
        return Path(self.arguments.data_dir or DEFAULT_DATA_DIR)

    def existingDataDir(self) -> Path:
        """
        The data directory, which must exist: only the server's first start
        or C{clientid-admin init} makes one, so a command run from the wrong
        directory says where it looked instead of writing elsewhere.

        @raise UsageError: If it does not exist.
        """
        dataDir = self.dataDir
        if not dataDir.is_dir():
            raise UsageError(
                f"no data directory at {dataDir.absolute()}: give --data-dir DIR "
                "(the server's first start, or 'clientid-admin init', makes one)"
            )
        return dataDir

    def config(self) -> tuple[Path | None, dict[str, Any]]:
        """
        The configuration file and its checked contents: C{--config}, else
        the data directory's C{clientid.toml} (if the command uses the data
        directory and it has one).  Checked by the validator the server
        runs, so both refuse the same files.
        """
        arguments = self.arguments
        configFile: Path | None
        if getattr(arguments, "config", None):
            configFile = Path(arguments.config)
            config = loadConfig(configFile, required=True)
        elif _usesDataDir(self):
            configFile = configPath(self.existingDataDir())
            config = loadConfig(configFile)
        else:
            configFile, config = None, {}
        checkConfig(config, configFile, self.existingDataDir() if _usesDataDir(self) else None)
        return configFile, config

    def users(self) -> UserDatabase:
        self.config()
        return UserDatabase(usersPath(self.existingDataDir()))

    def aliases(self) -> AliasDatabase:
        """
        The alias file, with the configuration's aliases (which it cannot
        change) beside.
        """
        configFile, config = self.config()
        table = getTable(config, "users", configFile)
        return AliasDatabase(self.dataDir / ALIASES_FILE, aliasesFromConfig(table, configFile))

    def say(self, message: str) -> None:
        print(message, file=self.stdout)

    def readPassword(self) -> str:
        """
        One line from stdin with C{--password-stdin}; otherwise a prompt,
        twice, when stdin is a terminal.
        """
        if self.arguments.password_stdin:
            password = self.stdin.readline()
            if password.endswith("\n"):
                password = password[:-1]
            if password.endswith("\r"):
                password = password[:-1]
        elif self.stdin.isatty():
            password = getpass.getpass("Password: ", stream=self.stderr)
            if password != getpass.getpass("Again: ", stream=self.stderr):
                raise UsageError("the passwords do not match")
        else:
            raise UsageError("give the password on stdin with --password-stdin")
        if not password:
            raise UsageError("the password must not be empty")
        return password


# user


def _userAdd(context: _Context) -> None:
    address = normalizeAddress(context.arguments.address)
    users = context.users()
    if users.exists(address):
        # Before asking for a password for nothing.
        raise UserExists(f"user {address} already exists")
    users.addUser(address, context.readPassword())
    context.say(f"added user {address}")


def _userPasswd(context: _Context) -> None:
    address = context.arguments.address
    users = context.users()
    if not users.exists(address):
        raise UnknownUser(f"no such user: {address}")
    users.setPassword(address, context.readPassword())
    context.say(f"changed the password of {address.lower()}")


REMOVED_MAIL_DIR = "mail-removed"
"""Where C{user remove --keep-mail} moves a removed account's maildir."""


def _userRemove(context: _Context) -> None:
    """
    Remove the account, its mailbox (or, with C{--keep-mail}, move it aside
    under C{DATA_DIR/mail-removed/}) and what the store keeps for it, so
    that a new account of the same name sees none of it.
    """
    from clientid_twisted.server.delivery import maildirPath

    address = context.arguments.address
    users = context.users()
    if not users.exists(address):
        raise UnknownUser(f"no such user: {address.lower()}")
    # The store first: one that cannot be opened (Redis down) stops the
    # command before anything is removed.  None made yet, or a memory:
    # store: nothing kept here to forget.
    try:
        manager: DeviceManager | None = _manager(context)
    except UsageError as e:
        manager, devices = None, f"no devices forgotten: {e}"
    users.removeUser(address)
    account = normalizeAddress(address)
    maildir = maildirPath(context.dataDir, account)
    if not maildir.exists():
        mail = "it had no mailbox"
    elif context.arguments.keep_mail:
        aside = context.dataDir / REMOVED_MAIL_DIR
        aside.mkdir(mode=0o700, exist_ok=True)
        target = aside / f"{account}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
        maildir.rename(target)
        mail = f"its mail moved to {target}"
    else:
        shutil.rmtree(maildir)
        mail = "its mail deleted"
    context.aliases().forgetOwner(account)
    if manager is not None:
        manager.forgetAccount(account)
        devices = "its devices and counters forgotten"
    context.say(f"removed user {account}: {mail}, its aliases and {devices}")


def _userList(context: _Context) -> None:
    for address in context.users().listUsers():
        context.say(address)


def _aliasAdd(context: _Context) -> None:
    alias = normalizeAddress(context.arguments.alias)
    owner = normalizeAddress(context.arguments.owner)
    users = context.users()
    if not users.exists(owner):
        raise UnknownUser(f"no such user: {owner}")
    if users.exists(alias):
        # An account's address is its own: no one else may send as it.
        raise UserExists(f"{alias} is an account, not an alias")
    context.aliases().addAlias(alias, owner)
    context.say(f"{owner} may now send as {alias}")


def _aliasRemove(context: _Context) -> None:
    alias = context.arguments.alias
    context.aliases().removeAlias(alias)
    context.say(f"removed alias {alias.lower()}")


def _aliasList(context: _Context) -> None:
    for alias, owner in context.aliases().listAliases(context.arguments.owner):
        context.say(f"{alias} {owner}")


def _addUserCommands(commands: Any) -> None:
    user = commands.add_parser("user", help="manage accounts")
    actions = user.add_subparsers(dest="action", metavar="ACTION", required=True)

    def withPassword(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("address", metavar="ADDRESS")
        parser.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin",
        )

    add = actions.add_parser("add", help="add an account")
    withPassword(add)
    add.set_defaults(run=_userAdd)

    passwd = actions.add_parser("passwd", help="change an account's password")
    withPassword(passwd)
    passwd.set_defaults(run=_userPasswd)

    remove = actions.add_parser(
        "remove", help="remove an account, its mail and its devices"
    )
    remove.add_argument("address", metavar="ADDRESS")
    remove.add_argument(
        "--keep-mail",
        action="store_true",
        help="move the mailbox to DATA_DIR/mail-removed/ instead of deleting it",
    )
    _storeOptions(remove)
    remove.set_defaults(run=_userRemove)

    listing = actions.add_parser("list", help="list the accounts")
    listing.set_defaults(run=_userList)

    alias = actions.add_parser(
        "alias", help="sender addresses a user may use besides its own"
    )
    aliasActions = alias.add_subparsers(dest="aliasAction", metavar="ACTION", required=True)
    aliasAdd = aliasActions.add_parser("add", help="let OWNER send as ALIAS")
    aliasAdd.add_argument("alias", metavar="ALIAS")
    aliasAdd.add_argument("owner", metavar="OWNER")
    aliasAdd.set_defaults(run=_aliasAdd)
    aliasRemove = aliasActions.add_parser("remove", help="remove an alias")
    aliasRemove.add_argument("alias", metavar="ALIAS")
    aliasRemove.set_defaults(run=_aliasRemove)
    aliasList = aliasActions.add_parser("list", help="list aliases: ALIAS OWNER a line")
    aliasList.add_argument("owner", metavar="OWNER", nargs="?")
    aliasList.set_defaults(run=_aliasList)


# devices, tokens, events: the CLIENTID store


class _WallClock:
    """
    The admin command's time (the store's, in blocking mode).
    """

    def seconds(self) -> float:
        return time.time()


def _usesDataDir(context: _Context) -> bool:
    """
    Whether the command reads the data directory: named with --data-dir,
    or the default when no --store is given.
    """
    arguments = context.arguments
    return arguments.data_dir is not None or not arguments.store


def _manager(context: _Context, create: bool = False) -> DeviceManager:
    """
    Open the store the arguments name, blocking, with the key its devices
    are hashed with.

    @param create: Whether a missing store may be made (only C{init}).
    """
    from clientid_twisted.policy import parsePolicyConfig, resolveIdentityHasher

    arguments = context.arguments
    dataDir = context.existingDataDir() if _usesDataDir(context) else None
    configFile, config = context.config()
    settings = parsePolicyConfig(config, configFile)
    url = arguments.store or settings.store.url
    if storeScheme(url) == "memory":
        raise UsageError(
            "a memory: store lives inside one server process: "
            "clientid-admin cannot reach it"
        )
    # The store must exist (a typo must not make a new, empty one): only
    # the server's first start or 'clientid-admin init' makes it.
    try:
        store = openStore(url, dataDir, clock=_WallClock(), blocking=True, create=create)
    except StoreMissing as e:
        raise UsageError(f"{e} (the server's first start, or 'clientid-admin init', makes it)") from None
    context.closeLater(store.close)
    # The servers' rule (one owner of the key): configured key, else the
    # store's, else the data directory's clientid.key for a local store.
    keyFile = dataDir / KEY_FILE if dataDir is not None else None
    hasher = resultOf(resolveIdentityHasher(store, url, settings, dataDir, keyFile))
    return DeviceManager(store, hasher)


def _account(context: _Context, address: str) -> str:
    """
    The store's name for an account; with a data directory, only an
    existing one.
    """
    if _usesDataDir(context) and not _accountsOnBackend(context):
        users = context.users()
        key = normalizeAddress(address)
        if not users.exists(key):
            raise UnknownUser(f"no such user: {key} (in {users.path})")
        return key
    account = accountName(address)
    if account is None:
        raise UsageError(f"invalid address {address!r}")
    return account


def _accountsOnBackend(context: _Context) -> bool:
    """
    Whether the configuration names a gateway backend: its accounts live
    there, not in C{users.json}.
    """
    from clientid_twisted.gateway.config import parseGatewayConfig

    configFile, config = context.config()
    return parseGatewayConfig(config, configFile).enabled


def _identity(arguments: argparse.Namespace) -> ClientIdentity:
    return ClientIdentity(arguments.type, arguments.token)


def _deviceIdentity(arguments: argparse.Namespace) -> tuple[ClientIdentity | None, str | None]:
    """
    The device named by TYPE TOKEN or by --fingerprint, not both.
    """
    byToken = arguments.type is not None or arguments.token is not None
    if byToken and arguments.fingerprint:
        raise UsageError("give TYPE TOKEN or --fingerprint FP, not both")
    if arguments.fingerprint:
        return None, arguments.fingerprint
    if arguments.type is None or arguments.token is None:
        raise UsageError("name the device: TYPE TOKEN, or --fingerprint FP from 'devices list'")
    return _identity(arguments), None


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if math.isinf(seconds):
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(seconds))


def _isoTime(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if math.isinf(seconds):
        return "forever"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _table(context: _Context, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        context.say("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


def _state(view: DeviceView) -> str:
    state = view.record.state
    if view.revokedUntil is not None:
        state += "+token-revoked"
    if view.lockedUntil is not None:
        state += "+locked"
    return state


def _devicesList(context: _Context) -> None:
    account = _account(context, context.arguments.address)
    views = _manager(context).listDevices(account)
    if context.arguments.json:
        context.say(
            json.dumps(
                [
                    {
                        "account": view.record.account,
                        "type": view.record.typeName,
                        "fingerprint": view.record.fingerprint,
                        "state": view.record.state,
                        "locked_until": _isoTime(view.lockedUntil),
                        "token_revoked_until": _isoTime(view.revokedUntil),
                        "first_seen": _isoTime(view.record.firstSeen),
                        "last_seen": _isoTime(view.record.lastSeen),
                        "last_address": view.record.lastAddress,
                        "last_protocol": view.record.lastProtocol,
                        "logins": view.record.logins,
                        "failures": view.record.failures,
                        "name": view.record.name,
                    }
                    for view in views
                ],
                indent=2,
            )
        )
        return
    if not views:
        context.say(f"no devices known for {account}")
        return
    _table(
        context,
        [
            "TYPE", "FINGERPRINT", "STATE", "FIRST SEEN", "LAST SEEN", "LAST ADDRESS", "LOGINS",
            "FAILURES", "NAME",
        ],
        [
            [
                view.record.typeName,
                view.record.fingerprint,
                _state(view),
                _time(view.record.firstSeen),
                _time(view.record.lastSeen),
                view.record.lastAddress or "-",
                str(view.record.logins),
                str(view.record.failures),
                # Last: the owner's name may hold spaces.
                view.record.name or "-",
            ]
            for view in views
        ],
    )


def _devicesApprove(context: _Context) -> None:
    account = _account(context, context.arguments.address)
    identity, fingerprint = _deviceIdentity(context.arguments)
    record = _manager(context).approve(account, identity, fingerprint)
    context.say(f"approved {record.typeName} device {record.fingerprint} for {account}")


def _devicesRevoke(context: _Context) -> None:
    account = _account(context, context.arguments.address)
    identity, fingerprint = _deviceIdentity(context.arguments)
    record = _manager(context).revoke(account, identity, fingerprint)
    context.say(f"revoked {record.typeName} device {record.fingerprint} for {account}")


def _devicesRename(context: _Context) -> None:
    """
    Name a device as the owner's device page does, with the same checks:
    the name printed back has no control or format character (those are
    refused, and a refused name is not echoed), and the account, which
    C{--store} alone does not check, is escaped.
    """
    arguments = context.arguments
    account = _account(context, arguments.address)
    record = _manager(context).rename(account, arguments.fingerprint, arguments.name)
    device = f"{record.typeName} device {record.fingerprint} of {escapeForLog(account)}"
    if record.name is None:
        context.say(f"removed the name of {device}")
    else:
        context.say(f'renamed {device} to "{record.name}"')


def _tokensRevoke(context: _Context) -> None:
    seconds = context.arguments.for_seconds
    if seconds is not None and not seconds > 0:
        raise UsageError(f"--for must be a positive number of seconds, not {seconds}")
    identity = _identity(context.arguments)
    manager = _manager(context)
    until = manager.revokeToken(identity, seconds)
    ending = "until unlocked" if math.isinf(until) else f"until {_time(until)}"
    context.say(
        f"revoked {identity.type} token {manager.hasher.fingerprint(identity)} "
        f"on every account, {ending}"
    )


def _tokensUnlock(context: _Context) -> None:
    identity = _identity(context.arguments)
    manager = _manager(context)
    manager.unlockToken(identity)
    context.say(f"unlocked {identity.type} token {manager.hasher.fingerprint(identity)}")


def _events(context: _Context) -> None:
    arguments = context.arguments
    if arguments.limit < 1:
        raise UsageError(f"--limit must be at least 1, not {arguments.limit}")
    account = _account(context, arguments.account) if arguments.account else None
    events = _manager(context).events(account, arguments.limit)
    if arguments.json:
        context.say(
            json.dumps(
                [
                    {
                        "time": _isoTime(e.time),
                        "event": e.kind,
                        "account": e.account,
                        "type": e.typeName,
                        "fingerprint": e.fingerprint,
                        "address": e.address,
                        "protocol": e.protocol,
                        "detail": e.detail,
                    }
                    for e in events
                ],
                indent=2,
            )
        )
        return
    if not events:
        context.say("no events")
        return
    _table(
        context,
        ["TIME", "EVENT", "ACCOUNT", "TYPE", "FINGERPRINT", "ADDRESS", "DETAIL"],
        [
            [
                _time(e.time),
                e.kind,
                e.account or "-",
                e.typeName or "-",
                e.fingerprint or "-",
                e.address or "-",
                e.detail or "",
            ]
            for e in events
        ],
    )


def _storeOptions(parser: argparse.ArgumentParser) -> None:
    """
    Where the store is, accepted after the command too.
    """
    parser.add_argument("--data-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="the server's data directory (users, config, default store)")
    parser.add_argument("--store", metavar="URL", default=argparse.SUPPRESS,
                        help="the CLIENTID store, e.g. sqlite:///var/lib/clientid/clientid.sqlite3")
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="the TOML configuration (for [store] settings)")


def _addDeviceCommands(commands: Any) -> None:
    devices = commands.add_parser(
        "devices", help="list, approve, revoke and rename an account's devices"
    )
    actions = devices.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="an account's devices")
    listing.add_argument("address", metavar="ADDRESS")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    _storeOptions(listing)
    listing.set_defaults(run=_devicesList)

    for name, run, what in [
        ("approve", _devicesApprove, "let a device log in to an account"),
        ("revoke", _devicesRevoke, "refuse a device on an account"),
    ]:
        action = actions.add_parser(name, help=what)
        action.add_argument("address", metavar="ADDRESS")
        action.add_argument("type", metavar="TYPE", nargs="?", help="the CLIENTID type")
        action.add_argument("token", metavar="TOKEN", nargs="?", help="the CLIENTID token")
        action.add_argument(
            "--fingerprint", metavar="FP", help="the device's fingerprint, from 'devices list'"
        )
        _storeOptions(action)
        action.set_defaults(run=run)

    rename = actions.add_parser(
        "rename", help="name a device as its owner knows it (as the device page does)"
    )
    rename.add_argument("address", metavar="ADDRESS")
    rename.add_argument(
        "fingerprint", metavar="FINGERPRINT",
        help="the device's fingerprint from 'devices list', or a unique prefix",
    )
    rename.add_argument(
        "name", metavar="NAME",
        help=f"at most {MAX_NAME_LENGTH} characters, no control characters; '' removes the name",
    )
    _storeOptions(rename)
    rename.set_defaults(run=_devicesRename)


def _addTokenCommands(commands: Any) -> None:
    tokens = commands.add_parser("tokens", help="revoke or unlock a token on every account")
    actions = tokens.add_subparsers(dest="action", metavar="ACTION", required=True)

    revoke = actions.add_parser("revoke", help="refuse a token on every account")
    revoke.add_argument("type", metavar="TYPE")
    revoke.add_argument("token", metavar="TOKEN")
    revoke.add_argument("--for", dest="for_seconds", metavar="SECONDS", type=float,
                        help="only for this long [default: until unlocked]")
    _storeOptions(revoke)
    revoke.set_defaults(run=_tokensRevoke)

    unlock = actions.add_parser(
        "unlock", help="lift a token's revocation or lockout and forget its failures"
    )
    unlock.add_argument("type", metavar="TYPE")
    unlock.add_argument("token", metavar="TOKEN")
    _storeOptions(unlock)
    unlock.set_defaults(run=_tokensUnlock)


def _addEventCommands(commands: Any) -> None:
    events = commands.add_parser("events", help="recent security events")
    events.add_argument("--account", metavar="ADDRESS", help="only this account's")
    events.add_argument("--limit", metavar="N", type=int, default=20, help="how many [default: 20]")
    events.add_argument("--json", action="store_true", help="JSON instead of a table")
    _storeOptions(events)
    events.set_defaults(run=_events)


# queue: the relay queue (DATA_DIR/queue)


def _relayQueue(context: _Context) -> Any:
    """
    The data directory's relay queue, read from disk (no reactor).
    """
    from clientid_twisted.server.relayqueue import RelayQueue

    directory = context.existingDataDir() / "queue"
    if not directory.is_dir():
        return None
    return RelayQueue(directory, clock=_WallClock())


def _queueList(context: _Context) -> None:
    queue = _relayQueue(context)
    entries = sorted(queue.entries.values(), key=lambda e: e.queued) if queue else []
    if context.arguments.json:
        context.say(
            json.dumps(
                [
                    {
                        "id": e.id,
                        "queued": _isoTime(e.queued),
                        "from": e.sender,
                        "to": e.recipient,
                        "account": e.account,
                        "size": _size(queue.dataPath(e.id)),
                        "attempts": e.attempts,
                        "next_attempt": _isoTime(e.nextAttempt),
                        "last_error": e.lastError,
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return
    if not entries:
        context.say("the relay queue is empty")
        return
    _table(
        context,
        ["ID", "QUEUED", "FROM", "TO", "SIZE", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR"],
        [
            [
                e.id,
                _time(e.queued),
                e.sender or "<>",
                e.recipient,
                str(_size(queue.dataPath(e.id))),
                str(e.attempts),
                _time(e.nextAttempt),
                e.lastError or "",
            ]
            for e in entries
        ],
    )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _queueFlush(context: _Context) -> None:
    queue = _relayQueue(context)
    if queue is None or not queue.entries:
        context.say("the relay queue is empty")
        return
    queue.requestFlush()
    context.say(
        f"asked the server to try {len(queue.entries)} queued message(s) now: "
        "a running server does within a few seconds, a stopped one when it starts"
    )


def _queueRemove(context: _Context) -> None:
    from clientid_twisted.server.relayqueue import isMessageID

    messageID = context.arguments.id
    if not isMessageID(messageID):
        raise UsageError(f"{messageID!r} is not a queue ID (see 'queue list')")
    queue = _relayQueue(context)
    entry = queue.entries.get(messageID) if queue is not None else None
    if queue is None or not queue.remove(messageID):
        raise UsageError(f"no message {messageID} in the relay queue")
    described = f" ({entry.sender or '<>'} to {entry.recipient})" if entry else ""
    context.say(f"removed {messageID}{described} from the relay queue; no bounce is sent")


def _addQueueCommands(commands: Any) -> None:
    queue = commands.add_parser("queue", help="the relay queue of mail for the smarthost")
    actions = queue.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the queued messages")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    listing.set_defaults(run=_queueList)

    flush = actions.add_parser("flush", help="have the server try every queued message now")
    flush.set_defaults(run=_queueFlush)

    remove = actions.add_parser("remove", help="delete a queued message without a bounce")
    remove.add_argument("id", metavar="ID", help="its ID, from 'queue list'")
    remove.set_defaults(run=_queueRemove)


def _init(context: _Context) -> None:
    """
    Make the data directory, its installation key and the CLIENTID store,
    as the server's first start would, so users can be added before it
    runs.
    """
    if _usesDataDir(context):
        context.dataDir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _manager(context, create=True)
    where = context.dataDir.absolute() if _usesDataDir(context) else context.arguments.store
    context.say(f"initialised {where}")


def _addInitCommand(commands: Any) -> None:
    init = commands.add_parser(
        "init", help="make the data directory and store (the server's first start does it too)"
    )
    _storeOptions(init)
    init.set_defaults(run=_init)


COMMANDS: list[Callable[[Any], None]] = [
    _addInitCommand,
    _addUserCommands,
    _addDeviceCommands,
    _addTokenCommands,
    _addEventCommands,
    _addQueueCommands,
]
"""
Functions that each add one command group to the subparsers object they are
given; every leaf parser sets C{run}, a callable taking the command context.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clientid-admin",
        description="Manage the data directory of a clientid-mail server.",
        epilog="Exit status: 0 success, 1 unusable data, 2 usage error.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"clientid-admin (clientid-twisted) {__version__}",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help=f"the server's data directory (default: {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="the CLIENTID store (default: [store] url, else DATA_DIR/clientid.sqlite3)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="the TOML configuration (default: DATA_DIR/clientid.toml)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for addCommands in COMMANDS:
        addCommands(commands)
    return parser


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Run one command.

    @param argv: The arguments (without the program name); C{sys.argv[1:]}
        by default.
    @return: The exit status.  Errors are one line on C{stderr}, never a
        traceback.
    """
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    parser = _parser()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            arguments = parser.parse_args(argv)
    except SystemExit as e:
        # --help (0) or a usage error (2), already reported by argparse.
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    context = _Context(arguments, stdin, stdout, stderr)
    try:
        try:
            arguments.run(context)
        finally:
            context.close()
    except (UserDatabaseError, StoreError, OSError) as e:
        print(f"clientid-admin: error: {e}", file=stderr)
        return EXIT_DATA
    except (UsageError, InvalidAddress, UserExists, UnknownUser, ValueError) as e:
        # ValueError: the remaining refusals of the data layer (an empty
        # password), whose messages are written for this.
        print(f"clientid-admin: error: {e}", file=stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("clientid-admin: interrupted", file=stderr)
        return 130
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
