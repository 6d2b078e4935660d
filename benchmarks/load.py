"""
Hold many concurrent sessions against the running server.

    python -m benchmarks.load [--sessions 1000] [--seconds 60] [--smoke]

Starts C{twistd -n clientid-mail} (this interpreter's, so the source tree)
on loopback with its default limits, then opens C{--sessions} TLS sessions,
half SMTP and half IMAP, half of each over STARTTLS and half over implicit
TLS, each presenting CLIENTID and logging in.  Once all are up it holds them
for C{--seconds}, each session doing something every few seconds (NOOP,
a small message, SELECT and FETCH FLAGS, a short IDLE), then closes them
all and stops the server with SIGTERM.

Clients connect from 127.0.0.2 upwards, at most 40 from one address, so
the default per-address limit (50) is not what is measured.  Everything
stays on 127.0.0.0/8; every loop is bounded and the run stops by itself.

Reports errors (any unexpected reply, timeout or closed connection), the
server's RSS (before, peak over the whole run including the scrypt memory
of the logins, and peak while the sessions are held) and CPU time; the last
line printed is one JSON object: sessions, established, held_seconds,
errors, error_kinds, baseline_rss_mb, peak_rss_mb, held_rss_mb,
rss_per_session_kb, actions, messages, p50_ms, p99_ms, server_cpu_s,
server_tracebacks, server_exit, ok.
Exit status 1 when any session failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from clientid_twisted.server.users import UserDatabase
from clientid_twisted.testing import throwawayCertificate

PASSWORD = "load test password"
USERS = [f"user{n}@load.test" for n in range(16)]
PER_ADDRESS = 40
COMMAND_TIMEOUT = 60.0
BODY = b"Subject: load\r\nFrom: load\r\n\r\n" + b"x" * 70 + b"\r\n"

_FACTORIES = {
    "smtp": "SubmissionFactory",
    "smtps": "SubmissionFactory (TLS)",
    "imap": "MailIMAP4Factory",
    "imaps": "MailIMAP4Factory (TLS)",
}


class SessionError(Exception):
    """
    A session saw something it did not expect; the message is its kind.
    """


class Server:
    """
    C{twistd -n clientid-mail} in a child process.
    """

    def __init__(self, work: Path) -> None:
        data = work / "data"
        data.mkdir(mode=0o700)
        (data / "clientid.toml").write_text('[server]\nhostname = "load.test"\n')
        certificate = throwawayCertificate()
        (work / "cert.pem").write_bytes(certificate.certificatePEM)
        (work / "key.pem").write_bytes(certificate.keyPEM)
        users = UserDatabase(data / "users.json")
        for user in USERS:
            users.addUser(user, PASSWORD)
        self.context = ssl.create_default_context(cadata=certificate.certificatePEM.decode())
        self.logPath = work / "server.log"
        command = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "clientid-mail", "--data-dir", str(data),
            "--certificate", str(work / "cert.pem"), "--private-key", str(work / "key.pem"),
        ]
        for name in _FACTORIES:
            command += [f"--{name}", "tcp:0:interface=127.0.0.1:backlog=1024"]
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while len(self.ports) < len(_FACTORIES):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("server did not start:\n" + self.logPath.read_text())
            text = self.logPath.read_text(errors="replace")
            for name, factory in _FACTORIES.items():
                match = re.search(re.escape(factory) + r" starting on (\d+)", text)
                if match:
                    self.ports[name] = int(match.group(1))
            time.sleep(0.05)
        self._tick = os.sysconf("SC_CLK_TCK")

    def status(self, field: str) -> int:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(field + r":\s+(\d+) kB", text)
        return int(match.group(1)) * 1024 if match else 0

    def cpuSeconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class Session:
    """
    One client session over asyncio streams.
    """

    def __init__(self, n: int, server: Server, stats: Stats, pause: float) -> None:
        self.n = n
        self.pause = pause
        self.server = server
        self.stats = stats
        self.protocol = "smtp" if n % 2 == 0 else "imap"
        self.implicit = (n // 2) % 2 == 1 or not hasattr(asyncio.StreamWriter, "start_tls")
        self.source = f"127.0.{2 + n // PER_ADDRESS // 250}.{2 + n // PER_ADDRESS % 250}"
        self.user = USERS[n % len(USERS)]
        self.rng = random.Random(n)
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.tag = 0

    # -- I/O ------------------------------------------------------------------------

    async def line(self) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.readline(), COMMAND_TIMEOUT)
        except asyncio.TimeoutError:
            raise SessionError(f"{self.protocol} timeout")
        if not data.endswith(b"\r\n"):
            raise SessionError(f"{self.protocol} connection closed")
        return data

    async def smtp(self, line: bytes | None, expect: bytes) -> bytes:
        if line is not None:
            self.writer.write(line + b"\r\n")
        while True:
            reply = await self.line()
            if reply[3:4] != b"-":
                break
        if not reply.startswith(expect):
            raise SessionError(f"smtp {(line or b'greeting').split()[0].decode(errors='replace')} got {reply[:3].decode(errors='replace')}")
        return reply

    async def imap(self, command: bytes, bye: bool = False) -> list[bytes]:
        self.tag += 1
        tag = b"t%d" % (self.tag,)
        self.writer.write(tag + b" " + command + b"\r\n")
        lines = []
        while True:
            reply = await self.line()
            lines.append(reply)
            if reply.startswith(tag + b" "):
                break
            if reply.startswith(b"* BYE") and not bye:
                raise SessionError("imap BYE")
        if not reply.startswith(tag + b" OK"):
            raise SessionError(f"imap {command.split()[0].decode(errors='replace')} got {reply.split()[1].decode(errors='replace')}")
        return lines

    async def connect(self) -> None:
        name = self.protocol + ("s" if self.implicit else "")
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1",
                self.server.ports[name],
                ssl=self.server.context if self.implicit else None,
                server_hostname="localhost" if self.implicit else None,
                local_addr=(self.source, 0),
                limit=1 << 20,
            ),
            COMMAND_TIMEOUT,
        )

    async def startTLS(self) -> None:
        await asyncio.wait_for(
            self.writer.start_tls(self.server.context, server_hostname="localhost"),  # type: ignore[attr-defined]
            COMMAND_TIMEOUT,
        )

    # -- the session -------------------------------------------------------------------

    async def open(self) -> None:
        await self.connect()
        token = str(uuid.UUID(int=self.n + 1)).encode()
        auth = base64.b64encode(b"\0" + self.user.encode() + b"\0" + PASSWORD.encode())
        if self.protocol == "smtp":
            await self.smtp(None, b"220 ")
            await self.smtp(b"EHLO load.test", b"250")
            if not self.implicit:
                await self.smtp(b"STARTTLS", b"220 ")
                await self.startTLS()
                await self.smtp(b"EHLO load.test", b"250")
            await self.smtp(b"CLIENTID UUID " + token, b"250 ")
            await self.smtp(b"AUTH PLAIN " + auth, b"235 ")
        else:
            greeting = await self.line()
            if not greeting.startswith(b"* OK"):
                raise SessionError("imap greeting")
            if not self.implicit:
                await self.imap(b"STARTTLS")
                await self.startTLS()
            await self.imap(b"CAPABILITY")
            await self.imap(b"CLIENTID UUID " + token)
            await self.imap(b'LOGIN "' + self.user.encode() + b'" "' + PASSWORD.encode() + b'"')
            await self.imap(b"SELECT INBOX")

    async def act(self) -> bool:
        """
        One action; return whether its time is a command's latency (an
        IDLE's is not: it waits on purpose).
        """
        roll = self.rng.random()
        if self.protocol == "smtp":
            if roll < 0.25:
                await self.smtp(b"MAIL FROM:<" + self.user.encode() + b"> SIZE=%d" % len(BODY), b"250 ")
                await self.smtp(b"RCPT TO:<" + USERS[self.rng.randrange(len(USERS))].encode() + b">", b"250 ")
                await self.smtp(b"DATA", b"354 ")
                await self.smtp(BODY + b".", b"250 ")
                self.stats.messages += 1
            else:
                await self.smtp(b"NOOP", b"250 ")
        elif roll < 0.5:
            await self.imap(b"NOOP")
        elif roll < 0.8:
            await self.imap(b"FETCH 1:* (FLAGS)")
        else:
            await self.idle()
            return False
        return True

    async def idle(self) -> None:
        self.tag += 1
        tag = b"t%d" % (self.tag,)
        self.writer.write(tag + b" IDLE\r\n")
        while True:
            reply = await self.line()
            if reply.startswith(b"+"):
                break
            if not reply.startswith(b"* "):
                raise SessionError("imap IDLE")
        await asyncio.sleep(self.rng.uniform(0.5, 2))
        self.writer.write(b"DONE\r\n")
        while True:
            reply = await self.line()
            if reply.startswith(tag + b" "):
                if not reply.startswith(tag + b" OK"):
                    raise SessionError("imap IDLE end")
                break

    async def close(self) -> None:
        try:
            if self.protocol == "smtp":
                await self.smtp(b"QUIT", b"221 ")
            else:
                await self.imap(b"LOGOUT", bye=True)
        finally:
            self.writer.close()

    async def run(self, opened: asyncio.Event, allUp: asyncio.Event, stop: asyncio.Event) -> None:
        try:
            await self.open()
            self.stats.up += 1
            opened.set()
            await allUp.wait()
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(self.pause / 4, self.pause))
                    break
                except asyncio.TimeoutError:
                    pass
                started = time.monotonic()
                if await self.act():
                    self.stats.latencies.append(time.monotonic() - started)
                self.stats.actions += 1
            await self.close()
        except SessionError as e:
            self.stats.errors[str(e)] += 1
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:
            self.stats.errors[f"{self.protocol} {type(e).__name__}"] += 1
        finally:
            opened.set()


class Stats:
    def __init__(self) -> None:
        self.up = 0
        self.actions = 0
        self.messages = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()


async def warmUp(server: Server) -> None:
    """
    Log in a few sessions at once and close them, so the scrypt memory of
    logins in parallel is in the baseline, not in the cost of sessions.
    """
    stats = Stats()
    allUp, stop = asyncio.Event(), asyncio.Event()
    allUp.set()
    stop.set()
    warm = [Session(10**6 + n, server, stats, pause=1).run(asyncio.Event(), allUp, stop) for n in range(16)]
    await asyncio.wait_for(asyncio.gather(*warm), COMMAND_TIMEOUT + 30)
    if stats.errors:
        raise SystemExit(f"warm-up failed: {dict(stats.errors)}")
    await asyncio.sleep(0.5)


async def drive(server: Server, sessions: int, seconds: float, rampSeconds: float) -> dict[str, Any]:
    await warmUp(server)
    stats = Stats()
    allUp = asyncio.Event()
    stop = asyncio.Event()
    tasks = []
    baseline = server.status("VmRSS")
    peak = baseline
    cpuBefore = server.cpuSeconds()
    interval = rampSeconds / max(sessions, 1)
    for n in range(sessions):
        opened = asyncio.Event()
        # Each session acts every 2-8 s (sooner in a short run).
        session = Session(n, server, stats, pause=min(8.0, seconds / 3))
        tasks.append(asyncio.create_task(session.run(opened, allUp, stop)))
        await asyncio.sleep(interval)
        peak = max(peak, server.status("VmRSS"))
    # Wait (bounded) until every session is up or has failed.
    deadline = time.monotonic() + 120
    while stats.up + sum(stats.errors.values()) < sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        peak = max(peak, server.status("VmRSS"))
    established = stats.up
    allUp.set()
    print(f"{established} of {sessions} sessions up; holding them for {seconds:.0f} s", flush=True)
    # Logins run scrypt (16 MiB each, in parallel threads): the peak
    # while sessions are only held shows what sessions cost.
    holdEnd = time.monotonic() + seconds
    held = server.status("VmRSS")
    while time.monotonic() < holdEnd:
        await asyncio.sleep(0.5)
        held = max(held, server.status("VmRSS"))
    peak = max(peak, held)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), COMMAND_TIMEOUT + 30)
    peak = max(peak, server.status("VmHWM"))
    latencies = sorted(stats.latencies) or [0.0]
    errors = sum(stats.errors.values())
    return {
        "sessions": sessions,
        "established": established,
        "held_seconds": seconds,
        "errors": errors,
        "error_kinds": dict(stats.errors),
        "baseline_rss_mb": round(baseline / 2**20, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "held_rss_mb": round(held / 2**20, 1),
        "rss_per_session_kb": round((held - baseline) / max(established, 1) / 1024, 1),
        "actions": stats.actions,
        "messages": stats.messages,
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1 if len(latencies) > 1 else 0] * 1000, 1),
        "server_cpu_s": round(server.cpuSeconds() - cpuBefore, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ramp", type=float, default=None, help="seconds to open the sessions over")
    parser.add_argument("--smoke", action="store_true", help="a short run for CI: 40 sessions, 3 s")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sessions = min(args.sessions, 40)
        args.seconds = min(args.seconds, 3)
    if not 1 <= args.sessions <= 5000:
        parser.error("--sessions: 1 to 5000")
    if not 0 < args.seconds <= 3600:
        parser.error("--seconds: up to 3600")
    ramp = args.ramp if args.ramp is not None else min(30.0, args.sessions / 40)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 2 * args.sessions + 256)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))

    work = Path(tempfile.mkdtemp(prefix="clientid-load-"))
    server = Server(work)
    try:
        result = asyncio.run(drive(server, args.sessions, args.seconds, ramp))
    finally:
        exitCode = server.stop()
        log = server.logPath.read_text(errors="replace")
        shutil.rmtree(work, ignore_errors=True)
    result["server_tracebacks"] = log.count("Traceback")
    result["server_exit"] = exitCode
    result["ok"] = (
        result["errors"] == 0 and result["established"] == args.sessions and result["server_tracebacks"] == 0
    )
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
