# -*- test-case-name: tests.test_delivery,tests.test_users,tests.test_mailbox -*-
"""
File-system steps the server's writers share.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsyncDirectory"]


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
