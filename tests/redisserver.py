"""
A throwaway C{redis-server} for tests: started on a free loopback port,
with no persistence, stopped at the end.

Tests that need one call L{requireRedisServer} first: without the
C{redis-server} program they are skipped, with a reason saying how to get
it, unless the C{CI} environment variable is set, where a missing Redis is
a failure (CI must install it: C{apt-get install -y redis-server}).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from twisted.trial.unittest import SkipTest

__all__ = ["RedisServer", "requireRedisServer", "sharedRedisServer", "redisServerProgram"]


def redisServerProgram() -> str | None:
    return shutil.which("redis-server")


def requireRedisServer() -> str:
    """
    The path of C{redis-server}.

    @raise SkipTest: If there is none and C{CI} is not set.
    @raise AssertionError: If there is none and C{CI} is set.
    """
    program = redisServerProgram()
    if program is not None:
        return program
    if os.environ.get("CI"):
        raise AssertionError(
            "redis-server is not installed, and CI is set: the Redis store tests "
            "must run in CI (apt-get install -y redis-server)"
        )
    raise SkipTest(
        "redis-server is not installed (apt-get install redis-server); "
        "the Redis store tests are skipped outside CI"
    )


def _freePort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """
    One C{redis-server} process on loopback.

    @ivar port: Where it listens; the same across L{restart}.
    """

    def __init__(self, port: int | None = None) -> None:
        self.program = requireRedisServer()
        self.port = port if port is not None else _freePort()
        self.directory = tempfile.mkdtemp(prefix="clientid-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """
        Start it and wait until it answers C{PING}.
        """
        self.process = subprocess.Popen(
            [
                self.program,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,
                "--enable-debug-command", "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.process.returncode}")
            try:
                if self.command("PING") == b"+PONG\r\n":
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)

    def command(self, *arguments: str, timeout: float = 2.0) -> bytes:
        """
        Send one command on a fresh connection; its raw reply.
        """
        from clientid_twisted.store.resp import encodeCommand

        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(encodeCommand(arguments))
            return s.recv(65536)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if self.paused:
            process.send_signal(signal.SIGCONT)
            self.paused = False
        process.kill()
        process.wait(10)

    def restart(self) -> None:
        """
        Stop it and start an empty one on the same port.
        """
        self.stop()
        self.start()

    def pause(self) -> None:
        """
        Freeze it (C{SIGSTOP}): connections stay open, nothing answers.
        """
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def cleanUp(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


_shared: RedisServer | None = None


def sharedRedisServer() -> RedisServer:
    """
    One server for every test of this process that needs no faults (each
    uses its own key prefix), stopped at exit.
    """
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        _shared = RedisServer().start()
        atexit.register(_shared.cleanUp)
    return _shared


def uniquePrefix(test: Any) -> str:
    return f"test:{os.getpid()}:{id(test)}:{time.monotonic_ns()}:"
