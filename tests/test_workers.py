"""
C{twistd clientid-mail --workers N}: the parent's restart and shutdown
logic on a fake reactor, the log relay and the hand-off, then real
processes on real sockets (L{tests.runningserver}): both workers serve,
one fingerprint everywhere, a killed worker comes back, SIGTERM stops
everything and frees the ports, the metrics are the workers' sum, and the
memory store is refused.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, eventAsJSON, formatEventAsClassicLogText
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted.server.tap import OptionError, Options
from clientid_twisted.server.workerprocess import Handoff, InheritedListener
from clientid_twisted.server.workers import (
    HandedOverListener,
    RestartBackoff,
    WorkerPool,
    forwardWorkerOutput,
    workerCount,
)
from tests.runningserver import PASSWORD, USERS, RunningServer, canRunServer, smtpLogin
from tests.services import freePort


class RestartBackoffTests(SynchronousTestCase):
    def test_doublesWhileDyingYoung(self) -> None:
        """
        Workers that keep dying young wait 0.5, 1, 2, ... seconds, at most
        C{maximum}.
        """
        backoff = RestartBackoff(initial=0.5, maximum=4.0, stableAfter=10.0)
        self.assertEqual([backoff.died(1.0) for _ in range(6)], [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])

    def test_resetAfterStableRun(self) -> None:
        """
        A worker that ran longer than C{stableAfter} is restarted quickly
        again.
        """
        backoff = RestartBackoff(initial=0.5, maximum=30.0, stableAfter=10.0)
        backoff.died(1.0)
        backoff.died(1.0)
        self.assertEqual(backoff.died(60.0), 0.5)


class _FakeTransport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class _SpawningClock(Clock):
    """
    A clock that records C{spawnProcess} calls.
    """

    def __init__(self) -> None:
        Clock.__init__(self)
        self.spawned: list[tuple[Any, list[str], _FakeTransport]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: list[str], env: Any, childFDs: Any) -> Any:
        transport = _FakeTransport(1000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append((protocol, args, transport))
        return transport


def _died(protocol: Any, signalNumber: int = 9) -> None:
    protocol.processEnded(Failure(ProcessTerminated(signal=signalNumber)))


class WorkerPoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = _SpawningClock()
        self.exited: list[int] = []
        self.events: list[dict[str, Any]] = []
        self.pool = WorkerPool(
            2,
            lambda index: ("python", ["worker", str(index)], {}, {}),
            reactor=self.clock,
            grace=5.0,
            onExit=self.exited.append,
            publisher=self.events.append,
        )

    def test_startsEach(self) -> None:
        self.pool.startService()
        self.assertEqual([args for _, args, _ in self.clock.spawned], [["worker", "1"], ["worker", "2"]])

    def test_restartsWithBackoff(self) -> None:
        """
        A dead worker is started again, with the same index, after the
        backoff's delay; one dying young again waits twice as long.
        """
        self.pool.startService()
        first = self.clock.spawned[1][0]
        _died(first)
        self.assertEqual(self.exited, [1001])
        self.assertEqual(len(self.clock.spawned), 2)
        self.clock.advance(0.49)
        self.assertEqual(len(self.clock.spawned), 2)
        self.clock.advance(0.01)
        self.assertEqual(self.clock.spawned[2][1], ["worker", "2"])
        self.clock.advance(1.0)
        _died(self.clock.spawned[2][0])
        self.clock.advance(0.99)
        self.assertEqual(len(self.clock.spawned), 3)
        self.clock.advance(0.01)
        self.assertEqual(self.clock.spawned[3][1], ["worker", "2"])
        self.assertEqual(set(self.pool.workers), {1, 2})

    def test_stopTerminatesAll(self) -> None:
        """
        Stopping sends SIGTERM to every worker, restarts none, and fires
        once all have ended.
        """
        self.pool.startService()
        stopped = self.pool.stopService()
        self.assertEqual([t.signals for _, _, t in self.clock.spawned], [["TERM"], ["TERM"]])
        self.assertNoResult(stopped)
        self.clock.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.assertNoResult(stopped)
        self.clock.spawned[1][0].processEnded(Failure(ProcessDone(0)))
        self.successResultOf(stopped)
        self.clock.advance(60)
        self.assertEqual(len(self.clock.spawned), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopCancelsPendingRestart(self) -> None:
        """
        A worker that died just before the stop is not started again.
        """
        self.pool.startService()
        _died(self.clock.spawned[0][0])
        stopped = self.pool.stopService()
        self.clock.spawned[1][0].processEnded(Failure(ProcessDone(0)))
        self.successResultOf(stopped)
        self.clock.advance(60)
        self.assertEqual(len(self.clock.spawned), 2)

    def test_killAfterGrace(self) -> None:
        """
        A worker still running after the grace period and a margin is
        killed.
        """
        self.pool.startService()
        stopped = self.pool.stopService()
        self.clock.spawned[0][0].processEnded(Failure(ProcessDone(0)))
        self.clock.advance(10.0)
        self.assertEqual(self.clock.spawned[1][2].signals, ["TERM", "KILL"])
        _died(self.clock.spawned[1][0])
        self.successResultOf(stopped)

    def test_cannotStart(self) -> None:
        """
        A worker that cannot be started (the interpreter not executable
        after the privilege drop) is one log line and another try after the
        backoff's delay, not a traceback.
        """
        failing = [True]
        spawn = self.clock.spawnProcess

        def spawnProcess(*args: Any, **kwargs: Any) -> Any:
            if failing[0]:
                raise PermissionError(13, "Permission denied")
            return spawn(*args, **kwargs)

        self.clock.spawnProcess = spawnProcess  # type: ignore[method-assign]
        self.pool.count = 1
        self.pool.startService()
        self.assertEqual(self.clock.spawned, [])
        failing[0] = False
        self.clock.advance(0.5)
        self.assertEqual(len(self.clock.spawned), 1)

    def test_relaysOutput(self) -> None:
        """
        Lines split across reads are logged whole, each with the worker's
        number.
        """
        self.pool.startService()
        protocol = self.clock.spawned[0][0]
        protocol.childDataReceived(2, b"first li")
        protocol.childDataReceived(2, b"ne\nsecond")
        self.assertEqual([e["output"] for e in self.events if "output" in e], ["first line"])
        protocol.processEnded(Failure(ProcessDone(0)))


class ForwardTests(SynchronousTestCase):
    def test_jsonEvent(self) -> None:
        """
        A worker's JSON event is logged as itself (format, fields, time),
        its system prefixed with the worker's number.
        """
        event = {
            "log_format": "AUTH {result} for {user}",
            "result": "succeeded",
            "user": "alice",
            "log_time": 1700000000.0,
            "log_level": LogLevel.info,
            "log_namespace": "clientid_twisted.smtp",
        }
        published: list[dict[str, Any]] = []
        forwardWorkerOutput(2, ("\x1e" + eventAsJSON(event) + "\n").encode(), published.append)
        [forwarded] = published
        text = formatEventAsClassicLogText(forwarded)
        self.assertIn("[worker=2 clientid_twisted.smtp#info] AUTH succeeded for alice", text)
        self.assertEqual(forwarded["log_time"], 1700000000.0)
        self.assertEqual(forwarded["worker"], 2)

    def test_text(self) -> None:
        """
        A line that is not an event (a traceback before logging started)
        is logged as text, to the global log by default.
        """
        from twisted.logger import globalLogPublisher

        published: list[dict[str, Any]] = []
        observer: Any = published.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        forwardWorkerOutput(1, b"Traceback (most recent call last):\n")
        [event] = [e for e in published if "output" in e]
        self.assertIn("[worker=1 output] Traceback (most recent call last):", formatEventAsClassicLogText(event))


class HandoffTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        handoff = Handoff(
            2,
            (InheritedListener("imaps", "haproxy:tcp:993", 3, "AF_INET6"),),
            "tcp:8443",
        )
        self.assertEqual(Handoff.fromJSON(handoff.toJSON()), handoff)
        self.assertEqual(Handoff.fromEnvironment({"CLIENTID_MAIL_WORKER": handoff.toJSON()}), handoff)
        self.assertIsNone(Handoff.fromEnvironment({}))


class HandedOverListenerTests(SynchronousTestCase):
    def test_bindsWithoutAccepting(self) -> None:
        """
        The parent's port is bound and never accepts: connections wait in
        the backlog for a worker.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        listener = HandedOverListener(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), "imap")
        listener.setName("imap tcp:0")
        listener.privilegedStartService()
        bound = listener.port
        # No reactor runs here to finish stopListening: close it directly.
        self.addCleanup(bound.socket.close)
        self.assertNotIn(bound, reactor.getReaders())
        self.assertEqual(listener.inherited(3, "tcp:0"), InheritedListener("imap", "tcp:0", 3, "AF_INET"))

    def test_portInUse(self) -> None:
        """
        A port that cannot be bound stops start-up with one line.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            listener = HandedOverListener(TCP4ServerEndpoint(reactor, port, interface="127.0.0.1"), "imap")
            listener.setName(f"imap tcp:{port}")
            with self.assertRaises(SystemExit) as caught:
                listener.privilegedStartService()
        self.assertEqual(str(caught.exception), f"clientid-mail: cannot listen for imap tcp:{port}: Address already in use")


class OptionTests(SynchronousTestCase):
    def test_default(self) -> None:
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["workers"], 1)

    def test_auto(self) -> None:
        self.assertEqual(workerCount("auto"), os.cpu_count() or 1)
        options = Options()
        options.parseOptions(["--workers", "3"])
        self.assertEqual(options["workers"], 3)

    def test_invalid(self) -> None:
        for value in ("0", "-1", "many"):
            with self.assertRaises(OptionError) as caught:
                Options().parseOptions(["--workers", value])
            self.assertIn("--workers", str(caught.exception))

    def test_unshareableListener(self) -> None:
        """
        A listener with TLS in the port cannot be handed to workers.
        """
        from clientid_twisted.testing import throwawayCertificate

        work = Path(self.mktemp())
        work.mkdir()
        certificate = throwawayCertificate()
        (work / "cert.pem").write_bytes(certificate.certificatePEM)
        (work / "key.pem").write_bytes(certificate.keyPEM)
        with self.assertRaises(OptionError) as caught:
            Options().parseOptions(
                ["--workers", "2", "--imap", f"ssl:9993:privateKey={work}/key.pem:certKey={work}/cert.pem"]
            )
        self.assertIn("worker processes can share only", str(caught.exception))


# -- real processes ---------------------------------------------------------

_TOKEN = "4b5c6d7e-0000-4000-8000-00000000beef"
_CONFIG = "[server]\nauth_failure_delay_seconds = 0\n[alerts]\nmail_account = false\n"


def _smtpLogin(port: int, context: ssl.SSLContext, token: str = _TOKEN) -> int:
    return smtpLogin(port, context, USERS[0], PASSWORD, token)


def _waitFor(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def _workerPids(log: str) -> dict[int, list[int]]:
    pids: dict[int, list[int]] = {}
    for index, pid in re.findall(r"worker (\d+) started, pid (\d+)", log):
        pids.setdefault(int(index), []).append(int(pid))
    return pids


class WorkersProcessTests(SynchronousTestCase):
    """
    C{twistd -n clientid-mail --workers 2} as a child process.
    """

    def setUp(self) -> None:
        reason = canRunServer()
        if reason:
            raise SkipTest(reason)

    def test_workers(self) -> None:
        work = Path(self.mktemp())
        metricsPort = freePort()
        server = RunningServer(
            work, _CONFIG, protocols=("smtp",),
            arguments=("--workers", "2", "--metrics", f"tcp:{metricsPort}", "--web", "tcp:0:interface=127.0.0.1"),
        )
        try:
            self._checkWeb(server)
            self._checkRunning(server, metricsPort)
        except BaseException:
            print(server.stop())
            raise
        # SIGTERM: every process ends, the ports and the metrics directory
        # go with them.
        pids = [pid for found in _workerPids(server.log()).values() for pid in found]
        metricsDirectory = re.search(r"PROMETHEUS_MULTIPROC_DIR (\S+)", server.log())
        # Open sessions in the workers are wound down as by a single
        # server: a goodbye line, then the connection closes.
        idle = [socket.create_connection(("127.0.0.1", server.ports["smtp"]), timeout=30) for _ in range(4)]
        for s in idle:
            self.assertTrue(s.recv(1024).startswith(b"220 "))
        server.terminate()
        for s in idle:
            goodbye = b""
            while chunk := s.recv(1024):
                goodbye += chunk
            self.assertTrue(goodbye.startswith(b"421 "), goodbye)
            s.close()
        # twistd ends with the signal that stopped it.
        self.assertIn(server.wait(60), (0, -signal.SIGTERM))
        log = server.stop()
        for pid in pids:
            self.assertFalse(_alive(pid), pid)
        for port in (server.ports["smtp"], metricsPort):
            with socket.socket() as s:
                self.assertNotEqual(s.connect_ex(("127.0.0.1", port)), 0)
        self.assertIsNotNone(metricsDirectory, log)
        assert metricsDirectory is not None
        self.assertFalse(Path(metricsDirectory.group(1)).exists())
        self.assertNotIn("Traceback", log)

    def _checkWeb(self, server: RunningServer) -> None:
        """
        The owners' device page (sessions and rate limits in memory) is
        served by the parent alone.
        """
        [line] = re.findall(r"^.*Site \(TLS\) starting on \d+$", server.log(), re.M)
        self.assertNotIn("worker=", line)
        port = int(line.rsplit(" ", 1)[1])
        with server.context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost"
        ) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            self.assertTrue(s.recv(1024).startswith(b"HTTP/1.0 "))

    def _checkRunning(self, server: RunningServer, metricsPort: int) -> None:
        port = server.ports["smtp"]
        _waitFor(lambda: len(re.findall(r"worker=\d -\] SubmissionFactory starting on", server.log())) == 2)
        # Both workers accept on the one shared socket: logins, one after
        # another, are served by both.
        logins = 0
        while logins < 40 and set(_loginWorkers(server.log())) != {"1", "2"}:
            self.assertEqual(_smtpLogin(port, server.context), 235)
            logins += 1
        self.assertEqual(set(_loginWorkers(server.log())), {"1", "2"})
        # The key was made once, by the parent, before any worker started.
        created = re.findall(r"^.*created the identity hashing key.*$", server.log(), re.M)
        self.assertEqual(len(created), 1, created)
        self.assertNotIn("worker=", created[0])
        self.assertLess(server.log().index(created[0]), server.log().index("worker 1 started"))
        # One identity key: the token has one fingerprint in both workers.
        fingerprints = set(re.findall(r"AUTH succeeded .*fingerprint=([0-9a-f]+)", server.log()))
        self.assertEqual(len(fingerprints), 1, fingerprints)
        # Both workers write the one SQLite store at once (new devices,
        # in parallel): every login succeeds, none is a 454 for a lock the
        # other worker holds.
        tokens = [f"4b5c6d7e-0000-4000-8000-{n:012d}" for n in range(32)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda token: _smtpLogin(port, server.context, token), tokens))
        self.assertEqual(codes, [235] * len(tokens))
        logins += len(tokens)
        # (the log's lines for a 454: a login that could not be decided, or
        # one whose decision raised; "454" itself is not logged, and could
        # be part of a fingerprint)
        self.assertNotIn("AUTH could not be decided", server.log())
        self.assertNotIn("AUTH raised", server.log())
        # The metrics endpoint sums both workers' counts, and their open
        # connections (each worker sets its gauge every second).
        _waitFor(lambda: _succeeded(metricsPort) == logins)
        held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(6)]
        for s in held:
            s.recv(1024)
        _waitFor(lambda: _metric(metricsPort, 'clientid_connections{protocol="smtp",tls="no"}') == 6)
        for s in held:
            s.close()
        self.assertIn("clientid_build_info{", _scrape(metricsPort))
        # A worker killed with SIGKILL is started again; logins keep working.
        victim = _workerPids(server.log())[1][0]
        os.kill(victim, signal.SIGKILL)
        _waitFor(lambda: len(_workerPids(server.log())[1]) == 2)
        self.assertIn("worker 1 (pid %d) ended" % victim, server.log())
        _waitFor(lambda: len(re.findall(r"worker=1 -\] SubmissionFactory starting on", server.log())) == 2)
        for _ in range(6):
            self.assertEqual(_smtpLogin(port, server.context), 235)
            logins += 1
        # The dead worker's counts stay in the sum.
        _waitFor(lambda: _succeeded(metricsPort) == logins)


def _loginWorkers(log: str) -> list[str]:
    return re.findall(r"\[worker=(\d) [^\]]*\] AUTH succeeded", log)


def _scrape(metricsPort: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metricsPort}/metrics", timeout=20) as r:
        return str(r.read().decode())


def _metric(metricsPort: int, sample: str) -> float:
    found = re.search("^" + re.escape(sample) + r" (\S+)$", _scrape(metricsPort), re.M)
    return float(found.group(1)) if found else 0.0


def _succeeded(metricsPort: int) -> float:
    return _metric(metricsPort, 'clientid_logins_total{protocol="smtp",result="succeeded"}')


class MemoryStoreTests(SynchronousTestCase):
    def test_refused(self) -> None:
        """
        The memory store cannot be shared: C{--workers 2} with it stops
        with one line.
        """
        work = Path(self.mktemp()).absolute()
        work.mkdir(parents=True)
        root = str(Path(__file__).resolve().parent.parent)
        result = subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "clientid-mail", "--data-dir", str(work / "data"),
             "--store", "memory:", "--workers", "2", "--imap", "tcp:0:interface=127.0.0.1",
             "--metrics", "tcp:0:interface=127.0.0.1"],
            cwd=work, capture_output=True, text=True, timeout=120,
            env=dict(os.environ, TMPDIR=str(work),
                     PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))),
        )
        # Nothing left behind: no metrics directory for the workers.
        self.assertEqual(sorted(p.name for p in work.iterdir()), ["data"])
        self.assertNotEqual(result.returncode, 0)
        output = result.stdout + result.stderr
        self.assertIn(
            "clientid-mail: --workers 2: the memory: store lives in one process and cannot be shared",
            output,
        )
        self.assertNotIn("Traceback", output)
        self.assertNotIn("worker 1 started", output)


class AdoptedWrappersTests(SynchronousTestCase):
    """
    The PROXY protocol and TLS on connect wrap the factory above a
    worker's adopted port as they do above a bound one.
    """

    def setUp(self) -> None:
        reason = canRunServer()
        if reason:
            raise SkipTest(reason)

    def test_proxiedImplicitTLS(self) -> None:
        from tests.runningserver import connect, readUntil
        from tests.test_proxy_protocol import CLIENT

        server = RunningServer(
            Path(self.mktemp()), _CONFIG, protocols=("smtps",),
            arguments=("--workers", "2"), listen="haproxy:tcp:0:interface=127.0.0.1",
        )
        self.addCleanup(server.stop)
        port = server.ports["smtps"]
        # Each worker wrapped its adopted port: the PROXY header first, then TLS.
        _waitFor(lambda: len(re.findall(r"\[worker=\d -\] SubmissionFactory \(TLS\) \(PROXY\) starting on",
                                        server.log())) == 2)
        s = connect(port)
        s.sendall(f"PROXY TCP4 {CLIENT} 127.0.0.1 40000 {port}\r\n".encode())
        t = server.context.wrap_socket(s, server_hostname="localhost")
        self.assertTrue(readUntil(t, rb"^220 [^\r\n]*\r\n").startswith(b"220 "))
        t.sendall(b"EHLO client.example\r\n")
        self.assertIn(f"Hello {CLIENT}".encode(), readUntil(t, rb"(?m)^250 [^\r\n]*\r\n"))
        t.close()


class OrphanTests(SynchronousTestCase):
    def setUp(self) -> None:
        reason = canRunServer()
        if reason:
            raise SkipTest(reason)

    def test_parentKilled(self) -> None:
        """
        Workers whose parent is killed (SIGKILL: no chance to stop them)
        stop by themselves: no orphan keeps serving the port.
        """
        server = RunningServer(Path(self.mktemp()), _CONFIG, protocols=("smtp",), arguments=("--workers", "2"))
        self.addCleanup(server.stop)
        _waitFor(lambda: len(re.findall(r"worker \d started, pid \d+", server.log())) == 2)
        pids = [found[0] for found in _workerPids(server.log()).values()]
        server.process.kill()
        server.wait()
        _waitFor(lambda: not any(_alive(pid) for pid in pids))
        with socket.socket() as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", server.ports["smtp"])), 0)


class SocketActivationTests(SynchronousTestCase):
    """
    C{systemd:} listeners with workers, without systemd: a socket handed
    over as systemd does (descriptor 3, C{LISTEN_FDS}, C{LISTEN_PID},
    C{LISTEN_FDNAMES}).
    """

    def setUp(self) -> None:
        reason = canRunServer()
        if reason:
            raise SkipTest(reason)

    def test_adoptedByEveryWorker(self) -> None:
        work = Path(self.mktemp()).absolute()
        work.mkdir(parents=True)
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(16)
        port = listening.getsockname()[1]
        root = str(Path(__file__).resolve().parent.parent)
        log = work / "server.log"
        with open(log, "wb") as output:
            # As systemd does: the socket at descriptor 3, LISTEN_PID the
            # pid of the program it runs (exec keeps the pid).
            handOver = (
                f"import os, sys; os.dup2({listening.fileno()}, 3); "
                "os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
            )
            process = subprocess.Popen(
                [sys.executable, "-c", handOver,
                 "-c", "from twisted.scripts.twistd import run; run()",
                 "-n", "--pidfile=", "clientid-mail", "--data-dir", str(work / "data"),
                 "--workers", "2", "--imap", "systemd:domain=INET:index=0"],
                cwd=work, stdout=output, stderr=subprocess.STDOUT, pass_fds=[listening.fileno()],
                env=dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="clientid-mail",
                         PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))),
            )
        def stop() -> None:
            if process.poll() is None:
                process.terminate()
                process.wait(60)

        self.addCleanup(stop)
        listening.close()
        _waitFor(lambda: len(re.findall(r"\[worker=\d -\] MailIMAP4Factory starting on " + str(port),
                                        log.read_text())) == 2 or process.poll() is not None, 60)
        self.assertIsNone(process.poll(), log.read_text())
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            self.assertTrue(s.recv(1024).startswith(b"* OK"))
        process.terminate()
        process.wait(60)
        self.assertNotIn("Traceback", log.read_text())
