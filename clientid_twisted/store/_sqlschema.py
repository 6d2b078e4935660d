# -*- test-case-name: tests.test_store_sqlite -*-
"""
The SQLite store's schema and its migrations.

The schema version is SQLite's C{user_version}.  C{MIGRATIONS[n]} takes a
database from version C{n} to C{n + 1}; opening a store applies the missing
ones in one transaction, so an upgrade needs no command and a crash half
way leaves the old version intact.  Never edit a released migration: add
one.
"""

from __future__ import annotations

import sqlite3
from typing import Sequence

from clientid_twisted.store._errors import StoreError

__all__ = ["MIGRATIONS", "migrate", "schemaVersion"]

MIGRATIONS: Sequence[Sequence[str]] = [
    # 0 -> 1: the first schema.
    [
        # The installation key (hex) and anything else of that kind.
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        # One row per device of an account.  digest is the keyed hash of
        # the identity: the token itself is never stored.
        """CREATE TABLE devices (
            account TEXT NOT NULL,
            digest TEXT NOT NULL,
            type TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            state TEXT NOT NULL,
            first_seen REAL,
            last_seen REAL,
            last_address TEXT,
            last_protocol TEXT,
            logins INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (account, digest)
        ) WITHOUT ROWID""",
        # Fixed-window counters; a windowed set keeps its window here too,
        # with its size as the count.
        """CREATE TABLE counters (
            key TEXT PRIMARY KEY,
            count INTEGER NOT NULL,
            expires REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX counters_by_expiry ON counters (expires)",
        """CREATE TABLE set_members (
            key TEXT NOT NULL,
            member TEXT NOT NULL,
            PRIMARY KEY (key, member)
        ) WITHOUT ROWID""",
        # Timed locks and one-shot markers; until may be +infinity.
        "CREATE TABLE locks (key TEXT PRIMARY KEY, until REAL NOT NULL) WITHOUT ROWID",
        "CREATE INDEX locks_by_end ON locks (until)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            kind TEXT NOT NULL,
            account TEXT,
            type TEXT,
            fingerprint TEXT,
            address TEXT,
            protocol TEXT,
            detail TEXT
        )""",
        "CREATE INDEX events_by_account ON events (account, id)",
    ],
    # 1 -> 2: the name the owner gives a device (NULL: unnamed).
    [
        "ALTER TABLE devices ADD COLUMN name TEXT",
    ],
    # 2 -> 3: messages waiting for an account's next gateway login.
    [
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            account TEXT NOT NULL,
            expires REAL NOT NULL,
            message BLOB NOT NULL
        )""",
        "CREATE INDEX messages_by_account ON messages (account, id)",
        "CREATE INDEX messages_by_expiry ON messages (expires)",
    ],
]


def schemaVersion(connection: sqlite3.Connection) -> int:
    """
    The schema version of the database behind C{connection}.
    """
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    connection: sqlite3.Connection, migrations: Sequence[Sequence[str]] | None = None
) -> tuple[int, int]:
    """
    Bring the database up to the latest schema, in one transaction.

    @param connection: In autocommit mode (C{isolation_level=None}).
    @param migrations: L{MIGRATIONS} by default (tests add their own).
    @return: The versions before and after.
    @raise StoreError: If the database is newer than this software knows.
    """
    if migrations is None:
        migrations = MIGRATIONS
    latest = len(migrations)
    connection.execute("BEGIN IMMEDIATE")
    try:
        before = schemaVersion(connection)
        if before > latest:
            raise StoreError(
                f"the store's schema is version {before}, newer than this "
                f"software knows ({latest}): upgrade clientid-twisted"
            )
        for version in range(before, latest):
            for statement in migrations[version]:
                connection.execute(statement)
        if before != latest:
            # PRAGMA takes no parameters; latest is an int we computed.
            connection.execute(f"PRAGMA user_version = {int(latest)}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return before, latest
