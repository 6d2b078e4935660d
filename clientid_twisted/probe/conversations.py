# -*- test-case-name: tests.test_probe -*-
"""
What the SMTP and IMAP checks hold the same way: the CLIENTID line they
send, the reachability check before a run, the one-command conversation,
and the walk through the malformed variants.  Each protocol's module
supplies how to open a session and how to read a reply.
"""

from __future__ import annotations

from typing import Any, Callable, ContextManager

from clientid_twisted.probe.checks import MALFORMED, Observations, Probe, expand
from clientid_twisted.probe.connection import ProbeError, Unreachable

__all__ = ["clientID", "requireReachable", "singleCommand", "sendMalformed"]


def clientID(probe: Probe, type: bytes = b"UUID", token: bytes | None = None) -> bytes:
    """
    A CLIENTID command line: the run's token unless C{token} is given.
    """
    return b"CLIENTID " + type + b" " + (probe.tokenBytes if token is None else token)


def requireReachable(openBare: Callable[[], Any]) -> None:
    """
    Make sure the server can be reached over TLS at all: open (with
    C{openBare}, which does TLS and nothing after it) and close a session.

    @raise Unreachable: When it cannot (the run ends with exit status 2).
    """
    try:
        openBare().close()
    except Unreachable:
        raise
    except ProbeError as e:
        raise Unreachable(str(e)) from None


def singleCommand(
    session: Callable[[Probe], ContextManager[Any]], line: bytes
) -> Callable[[Probe, Observations], None]:
    """
    A conversation of one CLIENTID (a template for
    L{clientid_twisted.probe.checks.expand}) on a fresh C{session}: its
    reply is C{seen["clientid"]}.
    """

    def conversation(probe: Probe, seen: Observations) -> None:
        with session(probe) as s:
            seen["clientid"] = s.command(expand(probe, line))

    return conversation


def sendMalformed(
    probe: Probe,
    seen: Observations,
    openSession: Callable[[Probe], Any],
    refused: Callable[[Any], bool],
    sessionEnded: Callable[[Any], bool],
) -> None:
    """
    Each malformed variant on one connection while the server keeps
    refusing them (C{refused}: a refused command changes no state); after
    anything else the next variant gets a fresh connection.  A variant
    whose reused connection ended (an error raised, or a reply that
    C{sessionEnded}: an error budget spent) is sent again on a fresh one.
    Each reply, or the L{ProbeError}, goes to C{seen} under the variant's
    name.
    """
    s: Any = None
    try:
        for name, _, line, _ in MALFORMED:
            for _attempt in range(2):
                fresh = s is None
                if s is None:
                    s = openSession(probe)
                reply: Any = None
                try:
                    reply = s.command(expand(probe, line))
                except ProbeError as e:
                    seen[name] = e
                else:
                    seen[name] = reply
                if reply is None or not refused(reply):
                    s.close()
                    s = None
                if fresh or (reply is not None and not sessionEnded(reply)):
                    break
    finally:
        if s is not None:
            s.close()
