# -*- test-case-name: tests.test_gateway_config -*-
"""
Where we use a private name of C{twisted.internet.endpoints}: its
endpoint-string tokenizer.  tests/test_twistedprivate.py fails when the
name appears anywhere else, or when a Twisted release drops it.
"""

from __future__ import annotations

from twisted.internet import endpoints

__all__ = ["splitEndpointDescription"]


def splitEndpointDescription(description: str) -> tuple[list[str], dict[str, str]]:
    """
    The positional and keyword parts of an endpoint string, as Twisted's
    own C{serverFromString} and C{clientFromString} read them.

    Gap: Twisted has no public tokenizer, and a hand-written one would
    read quoting and backslash escapes differently from every other
    endpoint string (docs/twisted-fixes.md).
    """
    args, kwargs = endpoints._parse(description)  # type: ignore[attr-defined]
    return args, kwargs
