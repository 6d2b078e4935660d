# -*- test-case-name: tests.test_devicename -*-
"""
The name an owner gives a device ("Anna's phone"): text a person typed,
shown on the device page and in C{clientid-admin devices list}, so it is
checked once here before any store keeps it.

A name is at most L{MAX_NAME_LENGTH} characters, trimmed of surrounding
space, and holds no control or formatting character (line breaks, escape
sequences, bidirectional overrides that would make it read differently
from what it is); those are refused with a message the page shows, rather
than silently dropped, so the owner sees what was kept.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_NAME_LENGTH", "BadDeviceName", "checkDeviceName"]

MAX_NAME_LENGTH = 64
"""The longest name kept, in characters."""

_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Control, format, surrogate, private-use and unassigned characters, and
line and paragraph separators."""


class BadDeviceName(ValueError):
    """
    The name cannot be kept; the message says why, for the owner.
    """


def checkDeviceName(text: str) -> str | None:
    """
    The name to keep for C{text}.

    @return: C{text} without surrounding space, or L{None} if nothing is
        left (the device's name is removed).
    @raise BadDeviceName: If it is too long or holds a control character.
    """
    name = text.strip()
    if not name:
        return None
    if len(name) > MAX_NAME_LENGTH:
        raise BadDeviceName(
            f"A device name has at most {MAX_NAME_LENGTH} characters; this one has {len(name)}."
        )
    if any(unicodedata.category(c) in _REFUSED_CATEGORIES for c in name):
        raise BadDeviceName(
            "A device name cannot hold control characters (such as line breaks or tabs)."
        )
    return name
