"""
Every core: aggregate IMAP sessions per second with worker processes.

    python -m benchmarks.workers [--workers 2] [--rounds 3] [--sessions 300]
        [--concurrency 16] [--clients 2] [--smoke]

Three stacks on one loopback port each, driven in alternating rounds by
the same load (C{--clients} load processes, each with C{--concurrency}
threads, running L{benchmarks.sessions.imapSession}: connect, STARTTLS,
CAPABILITY, CLIENTID when listed, LOGIN, SELECT, FETCH 1, LOGOUT):

 - C{ours}: the real C{twistd -n clientid-mail --workers N} (the parent
   binds, N workers accept; default C{learn} policy on the SQLite store;
   C{--logfile} to a file);
 - C{bare}: bare C{twisted.mail} (L{benchmarks._stacks}) as N processes
   sharing one listening socket that this process binds and passes on
   (as a C{systemd:} socket would be), each logging to its own file;
 - C{dovecot}: a private Dovecot in its high-performance configuration
   (C{service_count = 0}, C{process_min_avail} = N login processes, and
   likewise IMAP processes reused across sessions: its best case), if
   installed.

Equal footing: every stack serves the same throwaway P-256 certificate
(Dovecot's), every password check is nearly free (ours and bare read the
same C{users.json} through the server's scrypt checker, with cheap scrypt
parameters written for the benchmark; Dovecot's passwd file is plain), a
warm-up logs every device in first.  Server CPU is read from /proc for
every process of a stack (the parent, its workers, children reaped).

The last line printed is one JSON object: ours_per_s, bare_per_s,
dovecot_per_s (or null), ratio_bare (ours/bare), ratio_dovecot,
cpu_ms_ours (all its processes), cpu_ms_ours_parent (the parent's share:
the workers' log relayed, the metrics), cpu_ms_bare, cpu_ms_dovecot,
workers.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._stacks import PASSWORD, USERS
from benchmarks.sessions import DEVICES, BODY, DovecotStack, _children, cpuSecondsOf, imapSession, seedMailboxes

ROOT = Path(__file__).resolve().parent.parent


def cheapUsersFile(path: Path) -> None:
    """
    C{users.json} for the benchmark's accounts with scrypt at its cheapest
    parameters (n=2, r=1, p=1): the server's own checker, in the same
    thread pool, without the KDF's 50 ms, so the protocols are measured.
    """
    users = {}
    for user in USERS:
        salt = os.urandom(16)
        digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2, r=1, p=1, dklen=32)
        users[user] = "scrypt$2$1$1${}${}".format(
            base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
        )
    path.write_text(json.dumps(users))


class OursStack:
    """
    C{twistd -n clientid-mail --workers N}.
    """

    stack = "ours"

    def __init__(self, work: Path, workers: int, certificate: Path, key: Path) -> None:
        self.dataDir = work / "ours"
        self.dataDir.mkdir(parents=True)
        (self.dataDir / "clientid.toml").write_text("[alerts]\nmail_account = false\n")
        cheapUsersFile(self.dataDir / "users.json")
        seedMailboxes(self.dataDir)
        self.logPath = work / "ours.log"
        self.process = subprocess.Popen(
            [
                sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "--logfile", str(self.logPath),
                "clientid-mail", "--data-dir", str(self.dataDir), "--hostname", "bench.test",
                "--workers", str(workers), "--certificate", str(certificate), "--private-key", str(key),
                "--imap", "tcp:0:interface=127.0.0.1:backlog=512",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            log = self.logPath.read_text() if self.logPath.exists() else ""
            found = re.findall(r"\[worker=\d+ -\] MailIMAP4Factory starting on (\d+)", log)
            if len(found) >= workers:
                self.port = int(found[0])
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ours did not start:\n" + log)
            time.sleep(0.1)
        self.context = ssl.create_default_context(cafile=str(certificate))

    def cpuSeconds(self) -> float:
        return cpuSecondsOf([self.process.pid, *_children(self.process.pid)])

    def parentCpuSeconds(self) -> float:
        """
        The parent's own CPU: relaying the workers' log, the metrics.
        """
        tick = os.sysconf("SC_CLK_TCK")
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


class BareStack:
    """
    Bare C{twisted.mail} as N processes on one socket bound here.
    """

    stack = "bare"

    def __init__(self, work: Path, processes: int) -> None:
        self.dataDir = work / "bare"
        self.dataDir.mkdir(parents=True)
        cheapUsersFile(self.dataDir / "users.json")
        seedMailboxes(self.dataDir)
        self.listening = socket.socket()
        self.listening.bind(("127.0.0.1", 0))
        self.listening.listen(512)
        self.port = self.listening.getsockname()[1]
        self.processes: list[subprocess.Popen[bytes]] = []
        for index in range(processes):
            portFile = work / f"bare-{index}.port"
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable, "-m", "benchmarks._stacks", "--stack", "bare",
                        "--protocol", "imap", "--checker", "scrypt",
                        "--data-dir", str(self.dataDir), "--port-file", str(portFile),
                        "--certificate", "ec256", "--log-file", str(work / f"bare-{index}.log"),
                        "--adopt-fd", str(self.listening.fileno()),
                    ],
                    cwd=ROOT,
                    pass_fds=[self.listening.fileno()],
                )
            )
            # One at a time: the first makes the data directory's files.
            deadline = time.monotonic() + 60
            while not portFile.exists() or not portFile.read_text():
                if self.processes[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("bare server did not start")
                time.sleep(0.05)
        self.listening.close()
        certificate = (self.dataDir / "tls" / "selfsigned.pem").read_text()
        self.context = ssl.create_default_context(cadata=certificate)

    def cpuSeconds(self) -> float:
        return cpuSecondsOf([p.pid for p in self.processes])

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=30)


class HighPerformanceDovecot(DovecotStack):
    """
    Dovecot's documented high-performance mode: login processes that each
    serve many connections, one per CPU kept running.
    """

    def __init__(self, processes: int) -> None:
        super().__init__(
            "service imap-login {\n  service_count = 0\n"
            f"  process_min_avail = {processes}\n  vsz_limit = 1G\n}}\n"
            # Its best case: IMAP processes reused for many sessions too,
            # instead of one started per login.
            "service imap {\n  service_count = 0\n"
            f"  process_min_avail = {processes}\n}}\n"
        )


class _Target:
    """
    What a load process needs of a stack (picklable).
    """

    def __init__(self, port: int, cafile: str | None, cadata: str | None) -> None:
        self.port = port
        self.cafile = cafile
        self.cadata = cadata
        self.context: Any = None


def _loadProcess(target: _Target, start: int, count: int, concurrency: int) -> list[float]:
    target.context = ssl.create_default_context(cafile=target.cafile, cadata=target.cadata)
    latencies: list[float] = []

    def timed(n: int) -> None:
        began = time.perf_counter()
        imapSession(target, n)  # type: ignore[arg-type]
        latencies.append(time.perf_counter() - began)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(timed, start + i) for i in range(count)]:
            future.result()
    return latencies


def runRound(
    stack: Any, target: _Target, count: int, concurrency: int, clients: int, offset: int,
    pool: Any,
) -> tuple[float, float, list[float]]:
    """
    @return: (wall seconds, server CPU seconds, latencies) of C{count}
        sessions spread over C{clients} load processes.
    """
    per = count // clients
    cpuBefore = stack.cpuSeconds()
    began = time.perf_counter()
    results = [
        pool.apply_async(_loadProcess, (target, offset + i * per, per, concurrency))
        for i in range(clients)
    ]
    latencies = [latency for result in results for latency in result.get(timeout=600)]
    wall = time.perf_counter() - began
    return wall, stack.cpuSeconds() - cpuBefore, latencies


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per stack")
    parser.add_argument("--sessions", type=int, default=300, help="sessions per round")
    parser.add_argument("--concurrency", type=int, default=8, help="threads per load process")
    parser.add_argument("--clients", type=int, default=2, help="load processes")
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--smoke", action="store_true", help="1 round of 20 sessions")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.sessions = 1, 20

    work = Path(tempfile.mkdtemp(prefix="clientid-bench-workers-"))
    stacks: dict[str, Any] = {}
    targets: dict[str, _Target] = {}
    try:
        dovecot = None
        if not args.no_dovecot:
            from tests.dovecotserver import requireDovecot

            try:
                requireDovecot()
            except Exception as e:  # SkipTest: not installed
                print(f"Dovecot skipped: {e}", flush=True)
                args.no_dovecot = True
        if not args.no_dovecot:
            dovecot = HighPerformanceDovecot(args.workers)
            stacks["dovecot"] = dovecot
            assert dovecot.server.caFile is not None
            targets["dovecot"] = _Target(dovecot.port, str(dovecot.server.caFile), None)
            certificate = dovecot.server.caFile
            key = dovecot.server.caFile.with_name("key.pem")
        else:
            from clientid_twisted.testing import throwawayCertificate

            made = throwawayCertificate("bench.test")
            certificate, key = work / "cert.pem", work / "key.pem"
            certificate.write_bytes(made.certificatePEM)
            key.write_bytes(made.keyPEM)
        stacks["ours"] = OursStack(work, args.workers, certificate, key)
        targets["ours"] = _Target(stacks["ours"].port, str(certificate), None)
        stacks["bare"] = BareStack(work, args.workers)
        targets["bare"] = _Target(
            stacks["bare"].port, None, (stacks["bare"].dataDir / "tls" / "selfsigned.pem").read_text()
        )
        for user in USERS:
            if dovecot is not None:
                dovecot.server.deliver(user, BODY)
        results: dict[str, dict[str, float]] = {
            name: {"wall": 0.0, "cpu": 0.0, "sessions": 0} for name in stacks
        }
        parentCpu = 0.0
        latencies: dict[str, list[float]] = {name: [] for name in stacks}
        with multiprocessing.get_context("fork").Pool(args.clients) as pool:
            # Warm-up: every device of every account once (new-device
            # records written), not measured.
            for name in stacks:
                runRound(stacks[name], targets[name], DEVICES, 4, args.clients, 0, pool)
            offset = DEVICES
            for number in range(args.rounds):
                for name in stacks:
                    parentBefore = stacks["ours"].parentCpuSeconds()
                    wall, cpu, lat = runRound(
                        stacks[name], targets[name], args.sessions, args.concurrency, args.clients,
                        offset, pool,
                    )
                    offset += args.sessions
                    if name == "ours":
                        parentCpu += stacks["ours"].parentCpuSeconds() - parentBefore
                    results[name]["wall"] += wall
                    results[name]["cpu"] += cpu
                    results[name]["sessions"] += (args.sessions // args.clients) * args.clients
                    latencies[name] += lat
                    print(f"round {number + 1} {name}: {args.sessions / wall:.1f} sessions/s, "
                          f"server CPU {1000 * cpu / args.sessions:.2f} ms/session", flush=True)
    finally:
        for stack in stacks.values():
            try:
                stack.stop()
            except Exception as e:  # pragma: no cover (report, keep cleaning)
                print(f"stopping {stack.stack}: {e}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)

    def rate(name: str) -> float | None:
        if name not in results:
            return None
        return round(results[name]["sessions"] / results[name]["wall"], 1)

    def cpuPerSession(name: str) -> float | None:
        if name not in results:
            return None
        return round(1000 * results[name]["cpu"] / results[name]["sessions"], 3)

    ours, bare, dove = rate("ours"), rate("bare"), rate("dovecot")
    assert ours is not None and bare is not None
    result = {
        "workers": args.workers,
        "ours_per_s": ours,
        "bare_per_s": bare,
        "dovecot_per_s": dove,
        "ratio_bare": round(ours / bare, 3),
        "ratio_dovecot": round(ours / dove, 3) if dove else None,
        "cpu_ms_ours": cpuPerSession("ours"),
        "cpu_ms_bare": cpuPerSession("bare"),
        "cpu_ms_dovecot": cpuPerSession("dovecot"),
        "cpu_ms_ours_parent": round(1000 * parentCpu / results["ours"]["sessions"], 3),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
