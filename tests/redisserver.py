"""
A throwaway C{redis-server} for tests: started on a free loopback port,
with no persistence, stopped at the end.

Tests that need one call L{requireRedisServer} first: without the
C{redis-server} program they are skipped, with a reason saying how to get
it, unless the C{CI} environment variable is set, where a missing Redis is
a failure (CI must install it: C{apt-get install -y redis-server}).

A server can also require a password (C{requirepass}), have ACL users, or
speak only TLS with a throwaway certificate, for the tests of C{rediss://}
and of logging in (L{tests.test_redis_security}).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

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
    @ivar password: The default user's password (C{requirepass}), or
        L{None} for none.
    @ivar tls: Whether it speaks only TLS (C{--port 0 --tls-port PORT}),
        with L{certificate}; clients are not asked for certificates.
    @ivar certificate: The throwaway certificate it serves with TLS (for
        localhost, 127.0.0.1 and ::1), or L{None}.
    @ivar caFile: A PEM file of L{certificate}, for C{rediss://...&ca=}.
    """

    def __init__(
        self,
        port: int | None = None,
        password: str | None = None,
        tls: bool = False,
        users: Sequence[Sequence[str]] = (),
        bind: Sequence[str] = ("127.0.0.1",),
    ) -> None:
        """
        @param users: ACL users, each as the words of a C{user} directive
            after the keyword (C{["mail", "on", ">secret", "~*", "+@all"]}).
        @param bind: Loopback addresses to listen on.
        """
        self.program = requireRedisServer()
        self.port = port if port is not None else _freePort()
        self.directory = tempfile.mkdtemp(prefix="clientid-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.password = password
        self.tls = tls
        self.users = [list(user) for user in users]
        self.bind = list(bind)
        self.certificate: Any = None
        self.caFile: str | None = None
        if tls:
            from clientid_twisted.testing import throwawayCertificate

            self.certificate = throwawayCertificate()
            directory = Path(self.directory)
            (directory / "redis.crt").write_bytes(self.certificate.certificatePEM)
            (directory / "redis.key").write_bytes(self.certificate.keyPEM)
            self.caFile = str(directory / "redis.crt")

    @property
    def url(self) -> str:
        """
        Its store URL, with the password if it has one (options, such as
        C{ca} for TLS, are the caller's to add).
        """
        scheme = "rediss" if self.tls else "redis"
        login = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"{scheme}://{login}127.0.0.1:{self.port}/0"

    def arguments(self) -> list[str]:
        """
        The C{redis-server} command line.
        """
        arguments = [
            self.program,
            "--bind", *self.bind,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--enable-debug-command", "local",
        ]
        if self.tls:
            assert self.caFile is not None
            directory = Path(self.directory)
            arguments += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(directory / "redis.crt"),
                "--tls-key-file", str(directory / "redis.key"),
                "--tls-ca-cert-file", self.caFile,
                "--tls-auth-clients", "no",
            ]
        else:
            arguments += ["--port", str(self.port)]
        if self.password is not None:
            arguments += ["--requirepass", self.password]
        for user in self.users:
            arguments += ["--user", *user]
        return arguments

    def start(self, timeout: float = 10.0) -> RedisServer:
        """
        Start it and wait until it answers C{PING}.
        """
        self.process = subprocess.Popen(
            self.arguments(),
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
        Send one command on a fresh connection (over TLS, after C{AUTH},
        as the server needs); its raw reply.
        """
        from clientid_twisted.store.resp import _Incomplete, encodeCommand, parseReply

        commands: list[Sequence[str]] = [arguments]
        if self.password is not None:
            commands.insert(0, ("AUTH", self.password))
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as plain:
            s = plain
            if self.tls:
                context = ssl.create_default_context(cafile=self.caFile)
                s = context.wrap_socket(plain, server_hostname="127.0.0.1")
            s.sendall(b"".join(encodeCommand(command) for command in commands))
            data = b""
            while True:
                try:
                    position = 0
                    for command in commands[:-1]:
                        position = parseReply(data, position)[1]
                    parseReply(data, position)
                    return data[position:]
                except (_Incomplete, IndexError):
                    chunk = s.recv(65536)
                    if not chunk:
                        return data[position:]
                    data += chunk

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
