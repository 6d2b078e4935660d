# -*- test-case-name: tests.test_startup -*-
"""
Listening ports and the privilege drop around them.

C{twistd} binds every port in C{privilegedStartService} (so ports below
1024 are bound while still root), then sheds privileges to C{--uid} /
C{--gid}, then starts the services.  Two things here make that work for
an operator:

 - L{listener}: Twisted's C{strports.service}, but a port that cannot be
   bound (in use, not permitted) stops start-up with one line naming the
   listener, instead of a forty-line traceback;
 - L{handOver}: everything start-up made in the data directory as root
   (the directory, key, certificate, store and its journal) is given to
   the user twistd is about to become, as Postfix and Dovecot do for
   their queue and state directories; otherwise every login after the
   drop fails on "unable to open database file".
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any, Iterable

from twisted.application.internet import StreamServerEndpointService
from twisted.internet import endpoints
from twisted.internet.error import CannotListenError

__all__ = ["listener", "endpointListener", "cannotListen", "targetOwner", "handOver"]


class _Listener(StreamServerEndpointService):
    """
    A listening service whose bind error is one line for the operator.
    """

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise cannotListen(str(self.name), e) from None


def cannotListen(name: str, error: CannotListenError) -> SystemExit:
    """
    The one-line stop for a listener C{name} that cannot bind.
    """
    reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
    return SystemExit(f"clientid-mail: cannot listen for {name}: {reason}")


def listener(description: str, factory: Any, reactor: Any = None) -> StreamServerEndpointService:
    """
    A service listening on the endpoint C{description} with C{factory},
    bound in C{privilegedStartService} (before the privilege drop).
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    return endpointListener(endpoints.serverFromString(reactor, description), factory)


def endpointListener(endpoint: Any, factory: Any) -> StreamServerEndpointService:
    """
    A service listening on C{endpoint} with C{factory}, its bind error one
    line (a worker's adopted socket, L{clientid_twisted.server.workers}).
    """
    service = _Listener(endpoint, factory)
    service._raiseSynchronously = True
    return service


def targetOwner(options: Any) -> tuple[int, int] | None:
    """
    The uid and gid twistd will switch to (its C{--uid} / C{--gid}, on the
    options object it parsed ours under), if it will: run as root with
    C{--uid}.
    """
    parent = getattr(options, "parent", None)
    if parent is None or os.getuid() != 0:
        return None
    uid = parent.get("uid")
    if uid is None:
        return None
    gid = parent.get("gid")
    if gid is None:
        gid = pwd.getpwuid(uid).pw_gid
    return int(uid), int(gid)


def handOver(paths: Iterable[Path], uid: int, gid: int) -> None:
    """
    Give each path, and for a directory everything below it, to C{uid}:C{gid}.
    Symbolic links are changed themselves, never followed.
    """
    for path in paths:
        if not path.exists():
            continue
        os.lchown(path, uid, gid)
        if path.is_dir() and not path.is_symlink():
            for directory, names, files in os.walk(path):
                for name in [*names, *files]:
                    os.lchown(os.path.join(directory, name), uid, gid)
