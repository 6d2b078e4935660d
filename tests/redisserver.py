"""
A throwaway C{redis-server} for tests: started on a free loopback port,
with no persistence, stopped at the end.

Tests that need one call L{requireRedisServer} first: without the
C{redis-server} program they are skipped, with a reason saying how to get
it, unless the C{CI} environment variable is set, where a missing Redis is
a failure (CI must install it: C{apt-get install -y redis-server}).

A server can also require a password (C{requirepass}), have ACL users, or
speak only TLS with a throwaway certificate, for the tests of C{rediss://}
and of logging in (L{tests.test_redis_security}); or replicate another
(C{replicaof}).  L{SentinelServer} runs C{redis-sentinel} from a config
written into its temporary directory, and L{FailoverGroup} a master, a
replica and Sentinels watching them (L{tests.test_redis_sentinel}).
"""

from __future__ import annotations

import atexit
import json
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

from tests.services import freePort, requireProgram

__all__ = [
    "RedisServer",
    "SentinelServer",
    "FailoverGroup",
    "requireRedisServer",
    "sharedRedisServer",
    "redisServerProgram",
]


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
        replicaOf: RedisServer | None = None,
        cluster: bool = False,
        certificate: Any = None,
    ) -> None:
        """
        @param users: ACL users, each as the words of a C{user} directive
            after the keyword (C{["mail", "on", ">secret", "~*", "+@all"]}).
        @param bind: Loopback addresses to listen on.
        @param replicaOf: The master this one replicates (logging in with
            C{password}, which must be the master's).
        @param cluster: Run in cluster mode (a lone node, serving no slot:
            for C{CLUSTER KEYSLOT}).
        @param certificate: With C{tls}, the certificate to serve (and
            trust, replicating over TLS): one shared by the servers of a
            group; by default a throwaway one of its own.
        """
        self.program = requireRedisServer()
        self.port = port if port is not None else freePort()
        self.directory = tempfile.mkdtemp(prefix="clientid-redis-")
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.password = password
        self.tls = tls
        self.users = [list(user) for user in users]
        self.bind = list(bind)
        self.replicaOf = replicaOf
        self.cluster = cluster
        self.certificate: Any = None
        self.caFile: str | None = None
        if tls:
            from clientid_twisted.testing import throwawayCertificate

            self.certificate = certificate if certificate is not None else throwawayCertificate()
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
                # Replicas (any server, after a failover) and Sentinels
                # reach their master over TLS too.
                "--tls-replication", "yes",
            ]
        else:
            arguments += ["--port", str(self.port)]
        if self.password is not None:
            # masterauth too: after a failover Sentinel may make any
            # server a replica, which logs in to its master with it.
            arguments += ["--requirepass", self.password, "--masterauth", self.password]
        for user in self.users:
            arguments += ["--user", *user]
        if self.replicaOf is not None:
            arguments += ["--replicaof", "127.0.0.1", str(self.replicaOf.port)]
        if self.cluster:
            nodes = str(Path(self.directory) / "nodes.conf")
            arguments += [
                "--cluster-enabled", "yes", "--cluster-config-file", nodes,
                # Its bus port, by default PORT + 10000 (maybe taken, or
                # beyond 65535).
                "--cluster-port", str(freePort()),
            ]
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
        from clientid_twisted.store._resp import encodeCommand

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
                        position = _replyEnd(data, position)
                    _replyEnd(data, position)
                    return data[position:]
                except _Incomplete:
                    chunk = s.recv(65536)
                    if not chunk:
                        return data[position:]
                    data += chunk

    def reply(self, *arguments: str, timeout: float = 2.0) -> Any:
        """
        L{command}, its reply parsed: bytes, lists, integers, L{None}.
        """
        return _parse(self.command(*arguments, timeout=timeout))

    def info(self, section: str) -> dict[str, str]:
        """
        C{INFO section} as a dictionary.
        """
        text = self.reply("INFO", section).decode("utf-8")
        return dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
        )

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


class _Incomplete(Exception):
    pass


def _replyEnd(data: bytes, position: int) -> int:
    """
    Where the RESP reply at C{position} ends (a parser of the tests' own,
    independent of the store's client).

    @raise _Incomplete: If C{data} holds only part of it.
    """
    line = data.find(b"\r\n", position)
    if line < 0:
        raise _Incomplete()
    kind, header = data[position : position + 1], data[position + 1 : line]
    position = line + 2
    if kind == b"$" and int(header) >= 0:
        position += int(header) + 2
        if len(data) < position:
            raise _Incomplete()
    elif kind == b"*":
        for _ in range(max(0, int(header))):
            position = _replyEnd(data, position)
    return position


def _parse(data: bytes) -> Any:
    def one(position: int) -> tuple[Any, int]:
        line = data.index(b"\r\n", position)
        kind, header = data[position : position + 1], data[position + 1 : line]
        position = line + 2
        if kind == b"$":
            if int(header) < 0:
                return None, position
            return data[position : position + int(header)], position + int(header) + 2
        if kind == b"*":
            if int(header) < 0:
                return None, position
            items = []
            for _ in range(int(header)):
                item, position = one(position)
                items.append(item)
            return items, position
        if kind == b":":
            return int(header), position
        if kind == b"-":
            raise RuntimeError(header.decode("utf-8", "replace"))
        return header.decode("utf-8", "replace"), position

    return one(0)[0]


class SentinelServer(RedisServer):
    """
    One C{redis-sentinel} process on loopback, watching C{master} under the
    name L{MASTER}, from a config file in its temporary directory (Sentinel
    rewrites it as it learns).
    """

    MASTER = "mymaster"

    def __init__(self, master: RedisServer, quorum: int = 1, downAfterMs: int = 1000) -> None:
        super().__init__(tls=master.tls, certificate=master.certificate)
        self.program = requireProgram("redis-sentinel", "redis-sentinel", "Redis Sentinel")
        self.master = master
        self.quorum = quorum
        self.downAfterMs = downAfterMs

    def arguments(self) -> list[str]:
        directory = Path(self.directory)
        config = directory / "sentinel.conf"
        if self.tls:
            listen = [
                "port 0",
                f"tls-port {self.port}",
                f"tls-cert-file {directory / 'redis.crt'}",
                f"tls-key-file {directory / 'redis.key'}",
                f"tls-ca-cert-file {self.caFile}",
                "tls-auth-clients no",
                "tls-replication yes",
            ]
        else:
            listen = [f"port {self.port}"]
        lines = [
            *listen,
            "bind 127.0.0.1",
            "protected-mode no",
            f"dir {self.directory}",
            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {self.MASTER} {self.downAfterMs}",
            f"sentinel failover-timeout {self.MASTER} 5000",
            f"sentinel parallel-syncs {self.MASTER} 1",
        ]
        if self.master.password is not None:
            lines.append(f"sentinel auth-pass {self.MASTER} {json.dumps(self.master.password)}")
        config.write_text("\n".join(lines) + "\n")
        return [self.program, str(config)]

    def masterPort(self) -> int | None:
        reply = self.reply("SENTINEL", "get-master-addr-by-name", self.MASTER)
        return int(reply[1]) if reply else None


class FailoverGroup:
    """
    A master, one replica of it and C{sentinels} Sentinels watching them,
    all on free loopback ports, started and waited for (the replica in
    sync, every Sentinel knowing the replica); L{cleanUp} stops them all.
    """

    def __init__(self, sentinels: int = 1, password: str | None = None, tls: bool = False) -> None:
        """
        @param tls: Every server and Sentinel speaks only TLS, with one
            throwaway certificate (L{RedisServer.caFile}).
        """
        certificate = None
        if tls:
            from clientid_twisted.testing import throwawayCertificate

            certificate = throwawayCertificate()
        self.master = RedisServer(password=password, tls=tls, certificate=certificate)
        self.replica = RedisServer(
            password=password, replicaOf=self.master, tls=tls, certificate=certificate
        )
        quorum = 1 if sentinels < 3 else 2
        self.sentinels = [SentinelServer(self.master, quorum) for _ in range(sentinels)]
        self.servers: list[RedisServer] = [self.master, self.replica, *self.sentinels]

    def start(self, timeout: float = 30.0) -> FailoverGroup:
        try:
            for server in self.servers:
                server.start()
            deadline = time.monotonic() + timeout
            while self.replica.info("replication").get("master_link_status") != "up":
                self._waiting(deadline, "the replica to sync")
            for sentinel in self.sentinels:
                while not sentinel.reply("SENTINEL", "replicas", SentinelServer.MASTER):
                    self._waiting(deadline, "the Sentinels to find the replica")
        except BaseException:
            self.cleanUp()
            raise
        return self

    def _waiting(self, deadline: float, what: str) -> None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)

    def url(self, *options: str) -> str:
        """
        The C{redis+sentinel://} URL of the group (with the password).
        """
        login = f":{quote(self.master.password, safe='')}@" if self.master.password else ""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "redis+sentinel"
        if self.master.tls:
            scheme = "rediss+sentinel"
            options = (f"ca={quote(self.master.caFile or '')}", *options)
        query = "?" + "&".join(options) if options else ""
        return f"{scheme}://{login}{hosts}/{SentinelServer.MASTER}/0{query}"

    def cleanUp(self) -> None:
        for server in reversed(self.servers):
            server.cleanUp()


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
