# -*- test-case-name: tests.test_secret -*-
"""
The installation secret that keys the fingerprints of CLIENTID tokens (see
L{clientid_twisted._fingerprint}).

It is made once, in C{DATA_DIR/clientid.key} by convention, and must then
never change: a new key makes every stored device unknown.  A local store
(SQLite) adopts this file's key when it is new; a shared store (Redis) keeps
its own key, which wins over this file (see
L{clientid_twisted.policy.resolveIdentityHasher}).  It holds 64 hex
digits (32 random bytes) and a newline, readable by its owner only.
"""

from __future__ import annotations

import binascii
import os
import tempfile
from pathlib import Path

from twisted.logger import Logger

__all__ = ["KEY_LENGTH", "KEY_FILE", "SecretError", "loadOrCreateKey", "readKeyIfPresent"]

KEY_LENGTH = 32
KEY_FILE = "clientid.key"
"""The conventional name of the key file inside the data directory."""

_log = Logger()


class SecretError(ValueError):
    """
    The key file exists but is not a key we wrote.  It is never replaced:
    the operator must restore it (or delete it, forgetting all devices).
    """


def loadOrCreateKey(path: Path) -> bytes:
    """
    Read the key at C{path}, making it first if there is none.

    Creation is atomic and exclusive: the key is written and synced to a
    private temporary file, which is then hard-linked to C{path}.  C{link}
    fails if C{path} exists, so of two processes starting at once exactly
    one key wins, and both return it; no process ever reads a half-written
    key.

    @return: The C{KEY_LENGTH} bytes of the key.
    @raise SecretError: If the file holds something else.
    @raise OSError: If it can be neither read nor created.
    """
    path = Path(path)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = os.urandom(KEY_LENGTH)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp: 0600, O_EXCL
            f.write(binascii.hexlify(key) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            # Another process won the race; its key is complete (it was
            # linked only after being written), so use it.
            return _read(path)
        except OSError:
            # No hard links on this file system: O_EXCL on the file itself
            # still gives a single winner.
            if not _createExclusive(path, binascii.hexlify(key) + b"\n"):
                return _read(path)
    finally:
        os.unlink(temporary)
    _log.info("created the identity hashing key {path}", path=str(path))
    return key


def readKeyIfPresent(path: Path) -> bytes | None:
    """
    The key at C{path}, or L{None} if there is no such file (nothing is
    made: a process using a shared store must leave no key of its own).

    @raise SecretError: If the file holds something else.
    """
    try:
        return _read(Path(path))
    except FileNotFoundError:
        return None


def _createExclusive(path: Path, content: bytes) -> bool:
    """
    Write C{content} to C{path} unless it exists.

    @return: Whether this call created it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    return True


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    try:
        key = binascii.unhexlify(data.strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_LENGTH:
        raise SecretError(
            f"{path} is not a key file ({KEY_LENGTH * 2} hex digits expected); "
            "it was left untouched: restore it, or delete it to make a new "
            "key (all known devices will be forgotten)"
        )
    mode = os.stat(path).st_mode
    if mode & 0o077:
        _log.warn(
            "{path} is readable by others (mode {mode:o}): chmod 600 it",
            path=str(path),
            mode=mode & 0o777,
        )
    return key
