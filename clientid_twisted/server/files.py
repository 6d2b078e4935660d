# -*- test-case-name: tests.test_delivery,tests.test_users,tests.test_mailbox -*-
"""
File-system steps the server's writers share.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsyncDirectory", "replaceDurably"]


def replaceDurably(path: Path, data: bytes) -> None:
    """
    Replace C{path} by C{data} so that readers, and a power cut, leave the
    old file or the new one, never a part or nothing: a temporary file
    beside it (mode 0600), synced, renamed over it, and the directory
    synced.
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsyncDirectory(path.parent)


def fsyncDirectory(directory: Path) -> None:
    """
    Make a rename or a new file in C{directory} durable; best effort (not
    every platform can open a directory).
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
