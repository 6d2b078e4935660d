"""
What an idle CLIENTID session costs a server in memory.

    python -m benchmarks.connections [--count 5000] [--smoke]

Starts the two IMAP stacks of L{benchmarks._stacks} in child processes,
ours (the runnable server's IMAP with its default C{learn} policy on the
SQLite store) and bare C{twisted.mail} IMAP4Server, one after the other,
with the same certificate, checker and mailbox.  Against each, this
process opens C{--count} sessions (connect, STARTTLS, CAPABILITY, CLIENTID,
LOGIN) and holds them, idle, while it reads the server's resident memory
(C{VmRSS} in C{/proc/PID/status}) before and after.  The bare server
answers CLIENTID with BAD (it does not know it) and the sessions go on:
the bytes on the wire are the same.

Each stack first serves a warm-up of sessions from every device (the first
TLS handshakes, imports, each device's first login and its new-device
alert), so the figure is the steady cost of one more idle session.
Clients connect from 2,000 addresses in 127.1.0.0/16 in turn, as a real
server's clients come from many addresses (ours limits connections and TLS
handshakes per address); ours gets C{max_connections} above C{--count}.
Both processes raise their open-file limit (C{RLIMIT_NOFILE}) to the hard
limit; the server children inherit it from this process.

The last line printed is one JSON object: C{ours_kib_per_conn},
C{bare_kib_per_conn}, C{ratio} (ours/bare), C{failed} (connections that
did not complete, both stacks) and details.  Exit status 1 if any failed.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import resource
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._stacks import PASSWORD, USERS
from benchmarks.sessions import ServerProcess, deviceToken, seedMailboxes

ADDRESSES = 2000
"""Source addresses (127.1.0.1 upwards), used in turn: 3 sessions per
address for 5,000, and the sessions being opened at once come from
different addresses, as they would on the internet."""
OPENING = 32
"""Sessions being opened at once (TLS handshakes in flight)."""
TIMEOUT = 60.0


def raiseFileLimit(needed: int) -> int:
    """
    Raise this process's soft C{RLIMIT_NOFILE} to the hard limit (children
    inherit it).

    @return: The new soft limit.
    @raise SystemExit: If the hard limit is below C{needed}.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed: raise it (ulimit -Hn)")
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rssKiB(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Session:
    """
    One IMAP session, opened up to LOGIN and then held idle.
    """

    def __init__(self, n: int, port: int, context: ssl.SSLContext) -> None:
        self.n = n
        self.port = port
        self.context = context
        self.writer: asyncio.StreamWriter | None = None
        self._tag = 0

    async def _line(self, reader: asyncio.StreamReader) -> bytes:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed by the server")
        return line

    async def _command(self, reader: asyncio.StreamReader, command: bytes) -> bytes:
        self._tag += 1
        tag = b"a%d" % self._tag
        assert self.writer is not None
        self.writer.write(tag + b" " + command + b"\r\n")
        while True:
            line = await self._line(reader)
            if line.startswith(tag + b" "):
                return line[len(tag) + 1:].split(b" ", 1)[0]

    async def open(self) -> None:
        address = self.n % ADDRESSES
        source = f"127.1.{address // 250}.{address % 250 + 1}"
        reader, self.writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0)
        )
        if not (await self._line(reader)).startswith(b"* OK"):
            raise ConnectionError("greeting")
        if await self._command(reader, b"STARTTLS") != b"OK":
            raise ConnectionError("STARTTLS")
        await self.writer.start_tls(self.context, server_hostname="127.0.0.1")
        if await self._command(reader, b"CAPABILITY") != b"OK":
            raise ConnectionError("CAPABILITY")
        # Ours says OK, bare IMAP4Server BAD (unknown command): same bytes.
        if await self._command(reader, b"CLIENTID UUID " + deviceToken(self.n).encode()) not in (
            b"OK", b"BAD",
        ):
            raise ConnectionError("CLIENTID")
        user = USERS[self.n % len(USERS)].encode()
        if await self._command(reader, b'LOGIN "%s" "%s"' % (user, PASSWORD.encode())) != b"OK":
            raise ConnectionError("LOGIN")
        self.reader = reader

    def close(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()


async def openSessions(port: int, context: ssl.SSLContext, count: int, first: int) -> tuple[list[Session], list[str]]:
    """
    Open C{count} sessions, L{OPENING} at a time.

    @return: The sessions that are up, and what went wrong with the others.
    """
    gate = asyncio.Semaphore(OPENING)
    up: list[Session] = []
    failures: list[str] = []

    async def one(n: int) -> None:
        async with gate:
            session = Session(n, port, context)
            try:
                await asyncio.wait_for(session.open(), TIMEOUT)
                up.append(session)
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")
                session.close()

    await asyncio.gather(*(one(first + n) for n in range(count)))
    return up, failures


def startServer(stack: str, count: int, work: Path) -> ServerProcess:
    dataDir = work / stack
    seedMailboxes(dataDir)
    if stack == "ours":
        (dataDir / "clientid.toml").write_text(
            "[server]\n"
            f"max_connections = {count + 1000}\n"
            "idle_timeout_seconds = 3600\n"
        )
    return ServerProcess(stack, "imap", "fast", work)


def measureStack(server: ServerProcess, count: int, settle: float) -> dict[str, Any]:
    """
    Warm C{server} up, then open and hold C{count} sessions against it.
    """
    context = server.context

    async def run() -> dict[str, Any]:
        # Warm-up: every device once (its first login, its alert).
        warm, warmFailures = await openSessions(server.port, context, len(USERS) * 3, 0)
        for session in warm:
            session.close()
        await asyncio.sleep(settle)
        before = rssKiB(server.process.pid)
        started = time.perf_counter()
        sessions, failures = await openSessions(server.port, context, count, len(USERS) * 3)
        openSeconds = time.perf_counter() - started
        await asyncio.sleep(settle)
        after = rssKiB(server.process.pid)
        # Every session must still be open.
        alive = sum(1 for s in sessions if not s.reader.at_eof())
        for session in sessions:
            session.close()
        return {
            "rss_before_kib": before,
            "rss_after_kib": after,
            "sessions": len(sessions),
            "alive": alive,
            "failed": len(failures) + len(warmFailures) + (len(sessions) - alive),
            "failure_kinds": sorted(set(failures + warmFailures))[:5],
            "open_s": round(openSeconds, 1),
            "kib_per_conn": round((after - before) / max(1, len(sessions)), 2),
        }

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--smoke", action="store_true", help="200 sessions")
    args = parser.parse_args(argv)
    if args.smoke:
        args.count = 200
    limit = raiseFileLimit(args.count + 500)
    work = Path(tempfile.mkdtemp(prefix="clientid-bench-"))
    servers: dict[str, ServerProcess] = {}
    try:
        # Both start at once (each makes its users, which takes seconds);
        # they are measured one after the other.
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            starting = {s: pool.submit(startServer, s, args.count, work) for s in ("ours", "bare")}
            for stack, future in starting.items():
                servers[stack] = future.result()
        settle = 0.5 if args.smoke else 3.0
        results = {stack: measureStack(servers[stack], args.count, settle) for stack in servers}
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.count} idle TLS IMAP sessions (CLIENTID sent, logged in); RLIMIT_NOFILE {limit}")
    print(f"{'stack':<6}{'RSS before MiB':>15}{'RSS after MiB':>14}{'KiB/conn':>10}{'open s':>8}{'failed':>7}")
    for stack, r in results.items():
        print(
            f"{stack:<6}{r['rss_before_kib'] / 1024:>15.1f}{r['rss_after_kib'] / 1024:>14.1f}"
            f"{r['kib_per_conn']:>10.2f}{r['open_s']:>8}{r['failed']:>7}"
        )
        for kind in r["failure_kinds"]:
            print(f"  {stack} failure: {kind}")
    ours, bare = results["ours"]["kib_per_conn"], results["bare"]["kib_per_conn"]
    summary = {
        "count": args.count,
        "ours_kib_per_conn": ours,
        "bare_kib_per_conn": bare,
        "ratio": round(ours / bare, 3) if bare > 0 else None,
        "failed": results["ours"]["failed"] + results["bare"]["failed"],
        "stacks": results,
    }
    print(f"ratio ours/bare: {summary['ratio']}")
    print(json.dumps(summary))
    if summary["failed"]:
        sys.exit(1)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
