# -*- test-case-name: tests.test_admin -*-
"""
C{clientid-admin}: manage the runnable server's data directory.

    clientid-admin [--data-dir DIR] user add ADDRESS --password-stdin
    clientid-admin [--data-dir DIR] user passwd ADDRESS --password-stdin
    clientid-admin [--data-dir DIR] user remove ADDRESS
    clientid-admin [--data-dir DIR] user list

Changes take effect on a running server at its next login: it re-reads the
files.  Each command group is registered by one function in L{COMMANDS}, so
more groups (devices, tokens, events) slot in beside C{user}.

Exit status: 0 success, 1 the data directory is unusable (a corrupt or
unreadable file), 2 a usage error (bad arguments, invalid address, unknown
or existing user, empty password).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sys
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from clientid_twisted.server.users import (
    InvalidAddress,
    UnknownUser,
    UserDatabase,
    UserDatabaseError,
    UserExists,
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

    @property
    def dataDir(self) -> Path:
        return Path(self.arguments.data_dir)

    def users(self) -> UserDatabase:
        return UserDatabase(usersPath(self.dataDir))

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


def _userRemove(context: _Context) -> None:
    address = context.arguments.address
    context.users().removeUser(address)
    context.say(f"removed user {address.lower()} (the mail stays on disk)")


def _userList(context: _Context) -> None:
    for address in context.users().listUsers():
        context.say(address)


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

    remove = actions.add_parser("remove", help="remove an account")
    remove.add_argument("address", metavar="ADDRESS")
    remove.set_defaults(run=_userRemove)

    listing = actions.add_parser("list", help="list the accounts")
    listing.set_defaults(run=_userList)


COMMANDS: list[Callable[[Any], None]] = [_addUserCommands]
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
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the server's data directory (default: {DEFAULT_DATA_DIR})",
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
        arguments.run(context)
    except (UserDatabaseError, OSError) as e:
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
