"""
Real services the tests start: find their programs, or skip with the
command that installs them.

Outside CI a missing program skips the test with the install command in the
reason; with the C{CI} environment variable set it is a failure, since
C{.ci/run} installs every one of them (Debian packages and PyPI's
C{selenium}) and CI must not pass without running those tests.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
from pathlib import Path

from twisted.trial.unittest import SkipTest

__all__ = ["freePort", "requireProgram", "silentListener"]

_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/lib/postfix/sbin", "/usr/lib/dovecot"]
)


def requireProgram(name: str, package: str, purpose: str) -> str:
    """
    The path of the program C{name}.

    @param package: The Debian package that installs it.
    @param purpose: What the tests that need it test, for the message.
    @raise SkipTest: If there is none and C{CI} is not set.
    @raise AssertionError: If there is none and C{CI} is set.
    """
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is not None:
        return str(Path(found))
    if os.environ.get("CI"):
        raise AssertionError(
            f"{name} is not installed, and CI is set: the {purpose} tests must run "
            f"in CI (apt-get install -y {package})"
        )
    raise SkipTest(
        f"{name} is not installed (apt-get install {package}); "
        f"the {purpose} tests are skipped outside CI"
    )


def freePort() -> int:
    """
    A TCP port on 127.0.0.1 that nothing listens on right now, for a server
    a test starts (a child process, so the test cannot bind it and hand it
    over).

    Alone, the kernel picks it (port 0).  Under pytest-xdist the workers run
    side by side, and a port the kernel handed one worker is free again the
    moment the check closes it: another worker's port 0 (or a connection's
    source port) could get it before the first worker's server binds it.
    So each worker picks from a range of its own, below the kernel's
    ephemeral range, and never hands out the same port twice.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = (_WORKER_PORTS.stop - _WORKER_PORTS.start) // count
    first = _WORKER_PORTS.start + int(worker[2:]) % count * size
    candidates = [p for p in range(first, first + size) if p not in _handedOut]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handedOut.add(port)
        return port
    raise RuntimeError(f"no free port left in {first}-{first + size - 1} for xdist worker {worker}")


# Below Linux's default ephemeral range (32768-60999), which port 0 and
# outgoing connections draw from.
_WORKER_PORTS = range(12000, 32000)
_handedOut: set[int] = set()


def silentListener(port: int) -> socket.socket:
    """
    A socket listening on 127.0.0.1:C{port} that accepts connections (the
    kernel does) and never answers: a backend that hangs.  The caller
    closes it.
    """
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", port))
    silent.listen(5)
    return silent
