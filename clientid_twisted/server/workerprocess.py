# -*- test-case-name: tests.test_workers -*-
"""
Inside one worker of C{twistd clientid-mail --workers N}: what the parent
(L{clientid_twisted.server.workers}) hands over, and how the worker takes
it.

The parent starts each worker as C{twistd -n clientid-mail} with the same
options and one environment variable, L{HANDOFF_VARIABLE}: a JSON
L{Handoff} naming the worker and, for each listener, the descriptor
number the listening socket has in the worker.  The worker adopts those
sockets (C{reactor.adoptStreamPort}, through Twisted's
L{AdoptedStreamServerEndpoint}) and binds nothing itself.

The worker logs JSON events to its standard output
(L{parentLogObserver}, given to C{twistd --logger}); the parent reads
them and logs them as its own, marked with the worker's number.  When the
parent goes away without stopping the worker (killed with SIGKILL), the
worker's standard input closes and the worker stops (L{watchParent}), so
no orphan keeps serving the ports.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from attrs import frozen

from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import FileLogObserver, Logger, jsonFileLogObserver
from twisted.protocols.haproxy import proxyEndpoint

from clientid_twisted._endpointfixes import splitEndpointDescription

__all__ = [
    "HANDOFF_VARIABLE",
    "SHAREABLE_ENDPOINTS",
    "Handoff",
    "InheritedListener",
    "adoptedEndpoint",
    "parentLogObserver",
    "watchParent",
]

_log = Logger()

HANDOFF_VARIABLE = "CLIENTID_MAIL_WORKER"
"""The environment variable that makes C{twistd clientid-mail} a worker."""

SHAREABLE_ENDPOINTS = frozenset({"tcp", "tcp6", "unix", "systemd"})
"""Endpoint types whose listening socket a worker can adopt (optionally
behind C{haproxy:}).  Others (C{ssl:}, which puts TLS in the port) cannot
be shared: C{--smtps} and C{--imaps} add TLS above the port instead."""


def endpointKind(description: str) -> tuple[bool, str]:
    """
    Whether C{description} is behind C{haproxy:}, and the kind of the
    endpoint that binds (C{tcp}, C{systemd}, ...).
    """
    args, _ = splitEndpointDescription(description)
    kinds = [str(a).lower() for a in args[:2]] or [""]
    if kinds[0] == "haproxy":
        return True, kinds[1] if len(kinds) > 1 else ""
    return False, kinds[0]


@frozen
class InheritedListener:
    """
    One listening socket a worker inherits.

    @ivar name: The protocol (C{smtp}, C{smtps}, C{imap}, C{imaps}).
    @ivar description: The endpoint string the parent bound.
    @ivar fileno: The socket's descriptor number in the worker.
    @ivar family: The socket's address family name (C{AF_INET}, ...).
    """

    name: str
    description: str
    fileno: int
    family: str


@frozen
class Handoff:
    """
    What a worker is told by its parent.

    @ivar index: The worker's number, from 1, kept across restarts.
    @ivar listeners: The sockets to adopt.
    @ivar webListener: The parent's first C{--web} endpoint (notices link
        to the site the parent serves), or L{None}.
    """

    index: int
    listeners: tuple[InheritedListener, ...]
    webListener: str | None = None

    def toJSON(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "listeners": [
                    [l.name, l.description, l.fileno, l.family] for l in self.listeners
                ],
                "web": self.webListener,
            }
        )

    @classmethod
    def fromJSON(cls, text: str) -> Handoff:
        data = json.loads(text)
        return cls(
            index=int(data["index"]),
            listeners=tuple(
                InheritedListener(str(n), str(d), int(f), str(a)) for n, d, f, a in data["listeners"]
            ),
            webListener=data.get("web"),
        )

    @classmethod
    def fromEnvironment(cls, environ: Any = None) -> Handoff | None:
        """
        The hand-off of this process, or L{None} outside a worker.
        """
        text = (os.environ if environ is None else environ).get(HANDOFF_VARIABLE)
        return None if not text else cls.fromJSON(text)


def adoptedEndpoint(reactor: Any, listener: InheritedListener) -> IStreamServerEndpoint:
    """
    The endpoint that serves C{listener}'s inherited socket, with the
    PROXY protocol header read first when its description starts with
    C{haproxy:}, as the parent's own endpoint would.  TLS on connect
    (C{--smtps}, C{--imaps}) is a factory wrapper, added above this as in
    a single process.
    """
    endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(
        reactor, listener.fileno, getattr(socket, listener.family)
    )
    if endpointKind(listener.description)[0]:
        endpoint = proxyEndpoint(endpoint)
    return endpoint


def parentLogObserver() -> FileLogObserver:
    """
    For C{twistd --logger}: every event as one JSON record on standard
    output, which the parent reads and logs (one write per event, so the
    parent never sees half of one).
    """
    return jsonFileLogObserver(sys.stdout)


class _ParentPipe:
    """
    The reading end of the worker's standard input, a pipe from the
    parent that stays open, silent, while the parent lives.
    """

    def __init__(self, onClosed: Any) -> None:
        self.onClosed = onClosed

    def childDataReceived(self, name: str, data: bytes) -> None:
        pass

    def childConnectionLost(self, name: str, reason: Any = None) -> None:
        self.onClosed()


def watchParent(reactor: Any) -> None:
    """
    Stop the reactor (gracefully, as on SIGTERM) when standard input
    closes: the parent is gone.

    The worker also leaves its parent's process group: a signal to the
    group (Ctrl-C in a terminal, C{timeout}) reaches the parent only, which
    stops its workers once, in order.
    """
    from twisted.internet.process import ProcessReader

    try:
        os.setpgid(0, 0)
    except OSError:  # pragma: no cover (already a group leader)
        pass

    def parentGone() -> None:
        if reactor.running:
            _log.warn("the parent process is gone: stopping")
            reactor.stop()

    ProcessReader(reactor, _ParentPipe(parentGone), "parent", 0)
