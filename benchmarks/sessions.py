"""
What CLIENTID costs a server per session.

    python -m benchmarks.sessions --protocol smtp|imap [--rounds 6]
        [--sessions 200] [--concurrency 8] [--checker fast|scrypt] [--breakdown]
        [--log file|none] [--certificate rsa2048|ec256] [--smoke]

Starts two server processes on loopback, ours (the runnable server's
protocols) and bare C{twisted.mail}, with the same certificate, password
checker (C{--checker}: wrapped once in the device policy for ours, alone
for bare), mailbox, log observer and C{TCP_NODELAY}; then this process, the load generator, drives
full sessions against them in alternating rounds so that drift (CPU
frequency, other load) hits both alike.  Ours runs the default C{learn}
policy on the SQLite store; a warm-up logs every device in once first, so
the rounds measure known devices (a device's first login also writes its
owner a notice, removed again so both INBOXes hold the same one message).
C{--breakdown} adds a third stack, ours without the policy.

C{--gateway} (IMAP) compares instead a client talking to a private Dovecot
directly (STARTTLS at Dovecot) with the same client going through our IMAP
gateway (C{--imap-backend}, STARTTLS and CLIENTID at the gateway, the
login checked and the session relayed by Dovecot over loopback): stacks
"gateway" and "dovecot"; the JSON adds cpu_ms_dovecot_direct and
cpu_ms_dovecot_behind (Dovecot's processes, reaped ones included) and
cpu_ms_added: what the gateway adds per session, its own CPU plus
Dovecot's behind it minus Dovecot's alone.

By default the servers run as an operator's would: each logs to a file
with the observer C{twistd --logfile} installs (Twisted's text format, a
L{twisted.python.logfile.LogFile}; C{--log none}: events stay in memory,
as before), and serves an RSA-2048 certificate (C{--certificate ec256}: the
development certificate's P-256 key, cheaper per handshake).

SMTP session: connect, EHLO, STARTTLS, EHLO, CLIENTID (when listed), AUTH
PLAIN, MAIL, RCPT, DATA of 2 KiB, QUIT.  IMAP session: connect, STARTTLS,
CAPABILITY, CLIENTID (when listed), LOGIN, SELECT, FETCH 1, LOGOUT.

The server's CPU time per session (from /proc) is the portable figure: the
load generator shares the machine's cores.  The last line printed is one
JSON object: ours_per_s, bare_per_s, ratio, p99_ms_ours, p99_ms_bare,
cpu_ms_ours, cpu_ms_bare (and protocol_per_s, p99_ms_protocol,
cpu_ms_protocol with C{--breakdown}).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import imaplib
import json
import os
import shutil
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from benchmarks._stacks import PASSWORD, USERS

BODY = b"Subject: benchmark\r\nFrom: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 26
"""About 2 KiB."""

_CLIENTID_COMMAND = "CLIENTID"
# imaplib only sends commands it knows; CLIENTID is valid before login.
imaplib.Commands.setdefault(_CLIENTID_COMMAND, ("NONAUTH",))


class ServerProcess:
    """
    One stack in a child process; reads its CPU time from /proc.
    """

    def __init__(
        self, stack: str, protocol: str, checker: str, work: Path,
        logToFile: bool = False, certificate: str = "ec256",
        extra: tuple[str, ...] = (),
    ) -> None:
        """
        @param logToFile: Log to C{WORK/STACK.log} as C{twistd --logfile}
            does; otherwise events only fill the in-memory buffer.
        @param certificate: C{ec256} or C{rsa2048}.
        @param extra: More arguments for C{benchmarks._stacks}.
        """
        work = work.resolve()  # the child runs from the source tree
        self.stack = stack
        self.dataDir = work / stack
        portFile = work / f"{stack}.port"
        self.logFile = work / f"{stack}.log" if logToFile else None
        logging = ["--log-file", str(self.logFile)] if self.logFile is not None else []
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "benchmarks._stacks",
                "--stack", stack, "--protocol", protocol, "--checker", checker,
                "--data-dir", str(self.dataDir), "--port-file", str(portFile),
                "--certificate", certificate, *logging, *extra,
            ],
            cwd=Path(__file__).resolve().parent.parent,
        )
        deadline = time.monotonic() + 60
        while not portFile.exists() or not portFile.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{stack} server did not start")
            time.sleep(0.05)
        self.port = int(portFile.read_text())
        certificate = (self.dataDir / "tls" / "selfsigned.pem").read_text()
        self.context = ssl.create_default_context(cadata=certificate)
        self._tick = os.sysconf("SC_CLK_TCK")

    def cpuSeconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of stat(5); index from ")".
        return (int(fields[11]) + int(fields[12])) / self._tick

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def smtpSession(server: ServerProcess, n: int) -> None:
    user = USERS[n % len(USERS)]
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.ehlo("bench.client")
        client.starttls(context=server.context)
        client.ehlo("bench.client")
        if client.has_extn("clientid"):
            code, _ = client.docmd(_CLIENTID_COMMAND, f"UUID {deviceToken(n)}")
            assert code == 250, code
        auth = base64.b64encode(b"\0" + user.encode() + b"\0" + PASSWORD.encode()).decode()
        code, reply = client.docmd("AUTH", "PLAIN " + auth)
        assert code == 235, (code, reply)
        client.sendmail(user, [USERS[(n + 1) % len(USERS)]], BODY)


def imapSession(server: ServerProcess, n: int) -> None:
    user = USERS[n % len(USERS)]
    connection = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    try:
        connection.starttls(ssl_context=server.context)
        if "CLIENTID" in connection.capabilities:
            status, _ = connection._simple_command(_CLIENTID_COMMAND, "UUID", deviceToken(n))
            assert status == "OK", status
        connection.login(user, PASSWORD)
        status, _ = connection.select("INBOX")
        assert status == "OK", status
        status, data = connection.fetch("1", "(BODY.PEEK[])")
        assert status == "OK" and data and data[0], (status, data)
    finally:
        connection.logout()


DEVICES = len(USERS) * 3
"""Distinct devices the load generator uses: three per account."""


def deviceToken(n: int) -> str:
    """
    Each account logs in from a few devices, as real users do.
    """
    return str(uuid.UUID(int=(n % DEVICES) + 1))


_SEED = "1700000000.seed"


def seedMailboxes(dataDir: Path) -> None:
    """
    One message in every INBOX, so FETCH 1 has something to fetch.
    """
    for user in USERS:
        new = dataDir / "mail" / user / "new"
        for sub in ("new", "cur", "tmp"):
            (dataDir / "mail" / user / sub).mkdir(parents=True, exist_ok=True)
        (new / f"{_SEED}.bench:2,").write_bytes(BODY)


def resetMailboxes(dataDir: Path) -> None:
    """
    Remove every message but the seeded one (the server notices at its
    next look, as it would a message expunged by another program).
    """
    for user in USERS:
        for sub in ("new", "cur"):
            for message in (dataDir / "mail" / user / sub).iterdir():
                if not message.name.startswith(_SEED):
                    message.unlink()


def runRound(
    server: ServerProcess, session: Callable[[ServerProcess, int], None],
    count: int, concurrency: int, offset: int,
) -> tuple[float, float, list[float]]:
    """
    @return: (wall seconds, server CPU seconds, per-session latencies in s).
    """
    latencies: list[float] = []

    def timed(n: int) -> None:
        start = time.perf_counter()
        session(server, n)
        latencies.append(time.perf_counter() - start)

    cpuBefore = server.cpuSeconds()
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(timed, offset + i) for i in range(count)]:
            future.result()
    wall = time.perf_counter() - start
    return wall, server.cpuSeconds() - cpuBefore, latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class DovecotStack:
    """
    A private Dovecot as a stack: the client talks to it directly (its
    STARTTLS); its CPU is its master's, with the children it reaped
    (login and mail processes end with their sessions) and those alive.
    """

    stack = "dovecot"

    def __init__(self, extra: str = "") -> None:
        """
        @param extra: More configuration lines (benchmarks.workers: the
            high-performance login processes).
        """
        from tests.dovecotserver import DovecotServer

        self.server = DovecotServer(
            {user: PASSWORD for user in USERS},
            ssl=True,
            extra="default_process_limit = 1000\ndefault_client_limit = 4000\n"
            "mail_max_userip_connections = 1000\n" + extra,
        )
        for user in USERS:
            self.server.deliver(user, BODY)
        self.port = self.server.port
        assert self.server.caFile is not None
        self.context = ssl.create_default_context(cafile=str(self.server.caFile))

    def cpuSeconds(self) -> float:
        assert self.server.process is not None
        return cpuSecondsOf([self.server.process.pid, *_children(self.server.process.pid)])

    def stop(self) -> None:
        self.server.cleanUp()


def cpuSecondsOf(pids: list[int]) -> float:
    """
    CPU seconds the processes C{pids} and their waited-for children used
    (those that ended are skipped).
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat(5).
        total += sum(int(f) for f in fields[11:15])
    return total / tick


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["smtp", "imap"], default="smtp")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per stack")
    parser.add_argument("--sessions", type=int, default=200, help="sessions per round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--checker", choices=["fast", "scrypt"], default="fast")
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 10 sessions")
    parser.add_argument("--log", choices=["file", "none"], default="file",
                        help="file: each server logs as twistd --logfile does (default)")
    parser.add_argument("--certificate", choices=["rsa2048", "ec256"], default="rsa2048")
    parser.add_argument(
        "--gateway", action="store_true",
        help="IMAP through our gateway vs straight to a private Dovecot (stacks gateway, dovecot)",
    )
    parser.add_argument(
        "--breakdown", action="store_true",
        help="also run ours without the device policy (keys protocol_per_s, cpu_ms_protocol)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.sessions = 2, 10

    if args.gateway:
        args.protocol = "imap"
    session = smtpSession if args.protocol == "smtp" else imapSession
    work = Path(tempfile.mkdtemp(prefix="clientid-bench-"))
    servers: dict[str, Any] = {}
    dovecotBehind: list[float] = []
    try:
        stacks: tuple[str, ...] = ("ours", "protocol", "bare") if args.breakdown else ("ours", "bare")
        if args.gateway:
            stacks = ("gateway", "dovecot")
            dovecot = DovecotStack()
            servers["dovecot"] = dovecot
            servers["gateway"] = ServerProcess(
                "gateway", "imap", args.checker, work,
                logToFile=args.log == "file", certificate=args.certificate,
                extra=("--imap-backend", f"tcp:host=127.0.0.1:port={dovecot.port}"),
            )
        for stack in stacks:
            if args.gateway:
                break
            if args.protocol == "imap":
                seedMailboxes(work / stack)
            servers[stack] = ServerProcess(
                stack, args.protocol, args.checker, work,
                logToFile=args.log == "file", certificate=args.certificate,
            )
        # Warm up both (imports, first TLS handshakes, mailbox state) with
        # one session per device, so the rounds measure the steady state of
        # known devices, not each device's first login.
        for server in servers.values():
            runRound(server, session, DEVICES, args.concurrency, 0)
        if args.protocol == "imap" and not args.gateway:
            # The learn policy mailed each account a new-device notice
            # per device; back to the same one-message INBOX as bare.
            for stack in stacks:
                if stack != "bare":
                    resetMailboxes(work / stack)

        totals = {s: {"wall": 0.0, "cpu": 0.0, "latencies": [], "sessions": 0} for s in servers}
        rows = []
        for r in range(args.rounds):
            order = stacks if r % 2 == 0 else stacks[::-1]
            for stack in order:
                dovecotBefore = servers["dovecot"].cpuSeconds() if args.gateway else 0.0
                wall, cpu, latencies = runRound(
                    servers[stack], session, args.sessions, args.concurrency, r * args.sessions
                )
                if stack == "gateway":
                    dovecotBehind.append(servers["dovecot"].cpuSeconds() - dovecotBefore)
                t = totals[stack]
                t["wall"] += wall
                t["cpu"] += cpu
                t["latencies"] += latencies
                t["sessions"] += args.sessions
                rows.append((r + 1, stack, args.sessions / wall, 1000 * cpu / args.sessions))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.protocol.upper()} sessions, checker={args.checker}, log={args.log}, "
          f"certificate={args.certificate}, "
          f"{args.rounds} rounds x {args.sessions} sessions, concurrency {args.concurrency}")
    print(f"{'round':>5} {'stack':>8} {'sessions/s':>11} {'server CPU ms/session':>22}")
    for rnd, stack, rate, cpuMs in rows:
        print(f"{rnd:>5} {stack:>8} {rate:>11.1f} {cpuMs:>22.2f}")
    result: dict[str, Any] = {
        "protocol": args.protocol, "checker": args.checker, "log": args.log,
        "certificate": args.certificate,
    }
    for stack in stacks:
        t = totals[stack]
        result[f"{stack}_per_s"] = round(t["sessions"] / t["wall"], 1)
        result[f"p99_ms_{stack}"] = round(1000 * percentile(t["latencies"], 0.99), 2)
        result[f"cpu_ms_{stack}"] = round(1000 * t["cpu"] / t["sessions"], 3)
    if args.gateway:
        sessions = totals["gateway"]["sessions"]
        behind = round(1000 * sum(dovecotBehind) / sessions, 3)
        result["cpu_ms_dovecot_direct"] = result.pop("cpu_ms_dovecot")
        result["cpu_ms_dovecot_behind"] = behind
        result["cpu_ms_added"] = round(
            result["cpu_ms_gateway"] + behind - result["cpu_ms_dovecot_direct"], 3
        )
        print(f"through the gateway: {result['gateway_per_s']} sessions/s, "
              f"p99 {result['p99_ms_gateway']} ms, gateway CPU {result['cpu_ms_gateway']} ms "
              f"+ Dovecot behind it {behind} ms per session")
        print(f"straight to Dovecot: {result['dovecot_per_s']} sessions/s, "
              f"p99 {result['p99_ms_dovecot']} ms, Dovecot CPU "
              f"{result['cpu_ms_dovecot_direct']} ms per session")
        print(f"CPU added per session: {result['cpu_ms_added']} ms")
        print(json.dumps(result))
        return result
    result["ratio"] = round(result["ours_per_s"] / result["bare_per_s"], 3)
    result["cpu_ratio"] = round(result["cpu_ms_ours"] / result["cpu_ms_bare"], 3)
    print(f"{'':>5} {'':>5} {'ours':>11} {'bare':>10}")
    print(f"{'sessions/s':>17} {result['ours_per_s']:>5} {result['bare_per_s']:>10}")
    print(f"{'p99 ms':>17} {result['p99_ms_ours']:>5} {result['p99_ms_bare']:>10}")
    print(f"{'CPU ms/session':>17} {result['cpu_ms_ours']:>5} {result['cpu_ms_bare']:>10}")
    if args.breakdown:
        print(f"without the policy: {result['protocol_per_s']} sessions/s, "
              f"{result['cpu_ms_protocol']} ms CPU/session")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
