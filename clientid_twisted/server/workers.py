# -*- test-case-name: tests.test_workers -*-
"""
C{twistd clientid-mail --workers N}: one parent process binds the
listening sockets and starts N worker processes that accept on them.

Why the parent binds and hands the descriptors over (C{spawnProcess}
with C{childFDs}, adopted in the worker with Twisted's public
C{reactor.adoptStreamPort}) rather than C{SO_REUSEPORT} in every worker:

 - C{systemd:} endpoints: systemd passes one socket per port to one
   process; only that process can share it.  The parent adopts it as any
   endpoint and hands it on;
 - privileged ports and C{twistd --uid}: the parent binds 25, 465, 587,
   143 and 993 as root in C{privilegedStartService}, drops privileges,
   and only then starts the workers, which never run as root and never
   bind;
 - C{unix:} sockets and every option of an endpoint string (interface,
   backlog, mode) stay Twisted's: the parent listens with the endpoint
   the operator wrote, then stops accepting on it;
 - one socket, one accept queue: a worker that dies loses no queued
   connection (with C{SO_REUSEPORT} the kernel hashes new connections to
   a dead worker's queue until it is gone).

The PROXY protocol (C{haproxy:}) and TLS on connect (C{--smtps},
C{--imaps}) wrap the factory, not the socket: a worker applies them
above the adopted port (L{workerprocess.adoptedEndpoint}).  Endpoints
that put TLS in the port itself (C{ssl:}) cannot be shared and are
refused with C{--workers} above 1.

What runs where: the workers serve SMTP and IMAP (every session, login
and delivery).  The parent resolves the identity key, creates the
certificate and the store before any worker starts (so no two workers
race to create them), serves the owners' self-service site (whose
sessions and rate limits live in one process's memory), the metrics
endpoint (adding the workers' counters, prometheus_client's
multiprocess mode) and the relay queue's sender; and it restarts a worker
that dies, after a delay that doubles while workers keep dying young
(L{RestartBackoff}), so a crash loop costs little.  On SIGTERM the
parent sends SIGTERM to every worker, which winds down its sessions as a
single process does (L{clientid_twisted.server.shutdown}), and waits for
them (SIGKILL after the grace period and a margin) before it closes the
ports.

Each worker logs JSON events to the parent through a pipe; the parent
logs each one whole, with C{worker=N} in its system field, so the lines
of several workers never interleave in the log.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, Callable

from attrs import define, field

from twisted.application.service import Service
from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError, ProcessDone
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.logger import eventFromJSON
from twisted.python.failure import Failure

from clientid_twisted.server.listening import cannotListen
from clientid_twisted.server.workerprocess import (
    HANDOFF_VARIABLE,
    Handoff,
    InheritedListener,
)

__all__ = [
    "RestartBackoff",
    "WorkerPool",
    "HandedOverListener",
    "forwardWorkerOutput",
    "workerCommand",
    "workerCount",
]

_log = Logger()


def workerCount(value: str) -> int:
    """
    C{--workers}: a number from 1, or C{auto} for the number of CPUs.

    @raise ValueError: For anything else.
    """
    if value.strip().lower() == "auto":
        return os.cpu_count() or 1
    count = int(value)
    if count < 1:
        raise ValueError("a number of processes from 1, or auto")
    return count


@define
class RestartBackoff:
    """
    How long to wait before restarting a worker that died: C{initial}
    seconds, doubled for each death in a row of a worker that lived less
    than C{stableAfter} seconds, up to C{maximum}.
    """

    initial: float = 0.5
    maximum: float = 30.0
    stableAfter: float = 10.0
    _failures: int = field(default=0, init=False)

    def died(self, lifetime: float) -> float:
        """
        A worker died after C{lifetime} seconds: the delay before the next
        start.
        """
        if lifetime >= self.stableAfter:
            self._failures = 0
        delay = min(self.maximum, self.initial * 2**self._failures)
        self._failures += 1
        return delay


def forwardWorkerOutput(index: int, line: bytes, publisher: Any = None) -> None:
    """
    Log one line a worker wrote: a JSON event (L{workerprocess.parentLogObserver})
    as the original event, with C{worker=N} before its system; anything
    else (a traceback before logging started) as text.
    """
    if publisher is None:
        publisher = globalLogPublisher
    text = line.decode("utf-8", "replace").lstrip("\x1e").rstrip("\r\n")
    if not text.strip():
        return
    event: dict[str, Any] | None = None
    if text.startswith("{"):
        try:
            loaded = eventFromJSON(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict) and "log_time" in loaded:
            event = loaded
    if event is None:
        Logger(namespace=__name__, observer=publisher).info(
            "{output}", output=text, log_system=f"worker={index} output"
        )
        return
    system = event.get("log_system")
    if system is None:
        level = event.get("log_level")
        name = level.name if isinstance(level, type(LogLevel.info)) else "-"
        system = f"{event.get('log_namespace', '-')}#{name}"
    event["log_system"] = f"worker={index} {system}"
    event["worker"] = index
    publisher(event)


class _WorkerProtocol(protocol.ProcessProtocol):
    """
    One running worker: relays its output to the log, tells the pool when
    it ends.
    """

    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.started = pool.reactor.seconds()
        self.pid: int | None = None
        self.ended: defer.Deferred[None] = defer.Deferred()
        self._buffers: dict[int, bytes] = {1: b"", 2: b""}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        lines = (self._buffers.get(childFD, b"") + data).split(b"\n")
        self._buffers[childFD] = lines.pop()
        for line in lines:
            forwardWorkerOutput(self.index, line, self.pool.publisher)

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in self._buffers.items():
            if rest:
                forwardWorkerOutput(self.index, rest, self.pool.publisher)
        self._buffers = {}
        self.pool._ended(self, reason)
        self.ended.callback(None)


def _exitDescription(reason: Failure) -> str:
    number = getattr(reason.value, "signal", None)
    if number:
        return f"killed by signal {number}"
    return f"exit status {getattr(reason.value, 'exitCode', None)}"


class WorkerPool(Service):
    """
    Starts C{count} workers, restarts each one that dies, stops them all
    when the service stops.

    @ivar workers: The running workers by index (1 to C{count}).
    """

    name = "workers"

    def __init__(
        self,
        count: int,
        command: Callable[[int], tuple[str, list[str], dict[str, str], dict[int, Any]]],
        reactor: Any = None,
        grace: float = 30.0,
        backoff: Callable[[], RestartBackoff] = RestartBackoff,
        onExit: Callable[[int], None] | None = None,
        publisher: Any = None,
    ) -> None:
        """
        @param command: For a worker's index, what C{spawnProcess} takes:
            the executable, the arguments, the environment and C{childFDs}.
        @param grace: Seconds stopping workers get before SIGKILL (their
            sessions' shutdown grace; a few seconds more are added).
        @param onExit: Called with a worker's process id when it ends (the
            metrics forget its gauges).
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self.count = count
        self.command = command
        self.reactor = reactor
        self.grace = grace
        self.onExit = onExit
        self.publisher = publisher
        self.workers: dict[int, _WorkerProtocol] = {}
        self._backoffs = {index: backoff() for index in range(1, count + 1)}
        self._pending: dict[int, Any] = {}

    def startService(self) -> None:
        Service.startService(self)
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._pending.pop(index, None)
        executable, args, env, childFDs = self.command(index)
        worker = _WorkerProtocol(self, index)
        try:
            transport = self.reactor.spawnProcess(worker, executable, args, env=env, childFDs=childFDs)
        except OSError as e:
            # After twistd --uid, the interpreter must be one that user
            # may run (docs/running.md).
            delay = self._backoffs[index].died(0.0)
            _log.error(
                "cannot start worker {index}: {error}; trying again in {delay:.1f} s",
                index=index, error=str(e), delay=delay,
            )
            self._pending[index] = self.reactor.callLater(delay, self._spawn, index)
            return
        worker.pid = transport.pid
        self.workers[index] = worker
        _log.info("worker {index} started, pid {pid}", index=index, pid=worker.pid)

    def _ended(self, worker: _WorkerProtocol, reason: Failure) -> None:
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.onExit is not None and worker.pid is not None:
            self.onExit(worker.pid)
        if not self.running:
            # twistd ends with the signal that stopped it: SIGTERM is a
            # clean stop.
            if not reason.check(ProcessDone) and getattr(reason.value, "signal", None) != signal.SIGTERM:
                _log.info(
                    "worker {index} (pid {pid}) stopped: {how}",
                    index=worker.index, pid=worker.pid, how=_exitDescription(reason),
                )
            return
        lifetime = self.reactor.seconds() - worker.started
        delay = self._backoffs[worker.index].died(lifetime)
        _log.warn(
            "worker {index} (pid {pid}) ended after {lifetime:.1f} s ({how}); restarting in {delay:.1f} s",
            index=worker.index, pid=worker.pid, lifetime=lifetime, how=_exitDescription(reason), delay=delay,
        )
        self._pending[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    def stopService(self) -> defer.Deferred[Any]:
        Service.stopService(self)
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        workers = list(self.workers.values())
        for worker in workers:
            self._signal(worker, "TERM")
        allEnded = defer.DeferredList([worker.ended for worker in workers])
        hardStop = self.reactor.callLater(self.grace + 5.0, self._kill, workers)

        def ended(result: Any) -> None:
            if hardStop.active():
                hardStop.cancel()

        return allEnded.addCallback(ended)

    def _kill(self, workers: list[_WorkerProtocol]) -> None:
        for worker in workers:
            if not worker.ended.called:
                _log.warn("worker {index} (pid {pid}) did not stop: killing it", index=worker.index, pid=worker.pid)
                self._signal(worker, "KILL")

    @staticmethod
    def _signal(worker: _WorkerProtocol, name: str) -> None:
        try:
            worker.transport.signalProcess(name)  # type: ignore[union-attr]
        except Exception:  # already gone (ProcessExitedAlready)
            pass


class HandedToWorkers(protocol.Factory):
    """
    The factory the parent listens with: it never accepts (the port stops
    reading at once), so it never builds a protocol.  Its name is what the
    parent's log shows: C{HandedToWorkers starting on 8143}.
    """

    noisy = False


class HandedOverListener(Service):
    """
    Binds an endpoint in C{privilegedStartService} (before the privilege
    drop, as every listener) and stops accepting on it at once: the
    workers accept.  A port that cannot be bound stops start-up with one
    line, as any listener's.

    @ivar port: The listening port once bound, else L{None}.
    """

    port: Any = None

    def __init__(self, endpoint: Any, name: str) -> None:
        self.endpoint = endpoint
        self.listenerName = name

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        if self.port is not None:
            return
        results: list[Any] = []
        # tcp:, unix: and systemd: listen at once.
        self.endpoint.listen(HandedToWorkers()).addBoth(results.append)
        [result] = results
        if isinstance(result, Failure):
            if result.check(CannotListenError):
                raise cannotListen(str(self.name or self.listenerName), result.value)  # type: ignore[arg-type]
            result.raiseException()
        result.stopReading()
        self.port = result

    def startService(self) -> None:
        # Added to a running tree (a store that answered late): bind now.
        self.privilegedStartService()
        Service.startService(self)

    def stopService(self) -> Any:
        Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def inherited(self, fileno: int, description: str) -> InheritedListener:
        """
        How a worker finds this socket at descriptor C{fileno}.
        """
        family = self.port.socket.family
        return InheritedListener(self.listenerName, description, fileno, family.name)


def workerCommand(
    index: int,
    listeners: list[tuple[HandedOverListener, str]],
    arguments: list[str],
    webListener: str | None,
    environ: dict[str, str],
) -> tuple[str, list[str], dict[str, str], dict[int, Any]]:
    """
    What C{spawnProcess} takes to start worker C{index}: this interpreter's
    C{twistd -n clientid-mail} with C{arguments}, the bound C{listeners} at
    descriptors 3, 4, ..., the hand-off in its environment, a pipe as its
    standard input (closed when the parent dies) and its output read by the
    parent.
    """
    childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
    inherited = []
    for number, (service, description) in enumerate(listeners, start=3):
        childFDs[number] = service.port.fileno()
        inherited.append(service.inherited(number, description))
    handoff = Handoff(index, tuple(inherited), webListener)
    env = dict(environ, **{HANDOFF_VARIABLE: handoff.toJSON()})
    args = [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
        "--nodaemon", "--pidfile=",
        "--logger=clientid_twisted.server.workerprocess.parentLogObserver",
        "clientid-mail", *arguments,
    ]
    return sys.executable, args, env, childFDs

