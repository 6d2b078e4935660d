# -*- test-case-name: tests.test_store_open -*-
"""
Where the policy keeps devices, counters, locks and events
(L{clientid_twisted.interfaces.IClientIDStore}), and L{openStore}, which
picks a backend from a URL:

    - C{sqlite:///abs/path.sqlite3}: an SQLite file at an absolute path;
    - C{sqlite:relative/path.sqlite3}: relative to the data directory;
    - C{sqlite:} or no URL: C{DATA_DIR/clientid.sqlite3}, the default;
    - C{memory:}: in this process only, gone at exit (tests, trials);
    - C{redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=&timeout=&time=]}
      and C{rediss://...} (TLS): one store shared by several frontends
      (L{clientid_twisted.store._redis});
    - C{redis+sentinel://[[USER]:PASSWORD@]SENTINEL[:PORT][,...]/MASTER[/DB]}
      and C{rediss+sentinel://...}: the same, on the master Redis Sentinel
      names, following a failover.

More backends register their scheme with L{registerStoreScheme}.

This package is the stores' public API: L{openStore}, the two stores an
embedder makes directly (L{MemoryStore}, L{SQLiteStore}), the records a
store exchanges with the policy (L{DeviceRecord}, L{Event}, the device
states, the batch operations a backend implements) and its errors.  Its
modules (C{_sqlite}, C{_redis}, ...) are the implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.store._errors import StoreError, StoreMissing, UnknownDevice
from clientid_twisted.store._memory import MemoryStore
from clientid_twisted.store._records import (
    APPROVED,
    AddMember,
    Bump,
    DEVICE_STATES,
    DecisionState,
    DeviceRecord,
    DeviceUpdate,
    Event,
    FOREVER,
    Once,
    Operation,
    OutcomeRecord,
    OutcomeResult,
    PENDING,
    REVOKED,
    Reset,
    StateQuery,
)
from clientid_twisted.store._sqlite import STORE_FILE, SQLiteStore

__all__ = [
    "isLocalStore",
    "openStore",
    "registerStoreScheme",
    "storeScheme",
    "StoreError",
    "StoreMissing",
    "UnknownDevice",
    "sqlitePath",
    "MemoryStore",
    "SQLiteStore",
    "STORE_FILE",
    "APPROVED",
    "PENDING",
    "REVOKED",
    "DEVICE_STATES",
    "FOREVER",
    "Event",
    "DeviceRecord",
    "StateQuery",
    "DecisionState",
    "DeviceUpdate",
    "Bump",
    "Reset",
    "AddMember",
    "Once",
    "Operation",
    "OutcomeRecord",
    "OutcomeResult",
]

StoreOpener = Callable[..., IClientIDStore]
"""C{opener(url, dataDir, reactor=, clock=, blocking=, create=)}."""

_SCHEMES: dict[str, StoreOpener] = {}


def registerStoreScheme(scheme: str, opener: StoreOpener) -> None:
    """
    Make L{openStore} understand URLs starting with C{scheme + ":"}.

    @param opener: Called as C{opener(url, dataDir, reactor=reactor,
        clock=clock, blocking=blocking, create=create)}; raises
        L{ValueError} for a malformed URL, L{StoreError} when the store
        cannot be opened.
    """
    _SCHEMES[scheme.lower()] = opener


def storeScheme(url: str | None) -> str:
    """
    The scheme of a store URL (C{"sqlite"} when there is none).

    @raise ValueError: If C{url} has no C{scheme:} prefix.
    """
    if not url:
        return "sqlite"
    scheme, colon, rest = url.partition(":")
    if not colon or not scheme:
        raise ValueError(
            f"invalid store URL {url!r}: expected sqlite:///PATH, sqlite:PATH or memory:"
        )
    return scheme.lower()


LOCAL_SCHEMES = frozenset({"sqlite", "memory"})
"""Schemes of stores that belong to one process or data directory; every
other store may be shared by several frontends."""


def isLocalStore(url: str | None) -> bool:
    """
    Whether the store C{url} names belongs to this installation alone
    (SQLite, memory) rather than being shared by frontends (Redis).
    """
    return storeScheme(url) in LOCAL_SCHEMES


def openStore(
    url: str | None,
    dataDir: Path | None,
    reactor: Any = None,
    *,
    clock: Any = None,
    blocking: bool = False,
    create: bool = True,
) -> IClientIDStore:
    """
    Open the store a URL names.

    @param url: See the module docstring; L{None} for the default.
    @param dataDir: Where relative SQLite paths and the default file live;
        L{None}: the current directory.
    @param reactor: For backends that need one; the global reactor by
        default.
    @param clock: The store's time; C{reactor} by default.
    @param blocking: Whether every call must answer before it returns (the
        admin command's mode).
    @param create: Whether a store that does not exist yet may be made.
    @raise ValueError: For a URL this function cannot use, naming the
        problem (never repeating a password in it).
    @raise StoreError: If the store cannot be opened.
    """
    scheme = storeScheme(url)
    opener = _SCHEMES.get(scheme)
    if opener is None:
        known = ", ".join(f"{name}:" for name in sorted(_SCHEMES))
        raise ValueError(f"unknown store URL scheme {scheme!r} (known: {known})")
    return opener(url, dataDir, reactor=reactor, clock=clock, blocking=blocking, create=create)


def sqlitePath(url: str | None, dataDir: Path | None) -> Path:
    """
    The file a SQLite store URL names (relative ones, and none, under
    C{dataDir}).
    """
    base = Path(dataDir) if dataDir is not None else Path(".")
    if not url:
        return base / STORE_FILE
    rest = url.partition(":")[2]
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host:
            raise ValueError(
                f"invalid SQLite store URL {url!r}: no host allowed; "
                "use sqlite:///ABSOLUTE/PATH or sqlite:RELATIVE/PATH"
            )
        if not path:
            raise ValueError(f"invalid SQLite store URL {url!r}: no path")
        return Path("/" + unquote(path))
    if not rest:
        return base / STORE_FILE
    relative = Path(unquote(rest))
    return relative if relative.is_absolute() else base / relative


def _openSQLite(
    url: str | None,
    dataDir: Path | None,
    reactor: Any = None,
    clock: Any = None,
    blocking: bool = False,
    create: bool = True,
) -> IClientIDStore:
    path = sqlitePath(url, dataDir)
    if create and not path.exists() and not path.parent.is_dir():
        # A URL naming a missing directory is a typo to report (the server
        # and clientid-admin alike), not a tree to create; the data
        # directory the default store lives in exists by now.
        raise StoreMissing(f"cannot create SQLite store {path}: no directory {path.parent}")
    return SQLiteStore(path, reactor=reactor, clock=clock, blocking=blocking, create=create)


def _openMemory(
    url: str | None,
    dataDir: Path | None,
    reactor: Any = None,
    clock: Any = None,
    blocking: bool = False,
    create: bool = True,
) -> IClientIDStore:
    assert url is not None
    if url.partition(":")[2]:
        raise ValueError(f"invalid memory store URL {url!r}: use memory:")
    return MemoryStore(clock if clock is not None else reactor)


registerStoreScheme("sqlite", _openSQLite)
registerStoreScheme("memory", _openMemory)


def _openRedis(url: str | None, dataDir: Path | None, **kwargs: Any) -> IClientIDStore:
    from clientid_twisted.store._redis import openRedisStore

    return openRedisStore(url, dataDir, **kwargs)


registerStoreScheme("redis", _openRedis)
registerStoreScheme("rediss", _openRedis)
registerStoreScheme("redis+sentinel", _openRedis)
registerStoreScheme("rediss+sentinel", _openRedis)
