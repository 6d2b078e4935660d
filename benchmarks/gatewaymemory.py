"""
Memory per idle session relayed by the IMAP gateway.

    python -m benchmarks.gatewaymemory [--sessions 200] [--certificate ec256|rsa2048] [--smoke]

Starts a private Dovecot (tests/dovecotserver.py) and our IMAP gateway in
front of it (C{benchmarks._stacks --stack gateway}, built as
C{twistd clientid-mail --imap-backend} builds it), opens a few sessions to
warm up, reads the gateway's resident memory (VmRSS), then opens
C{--sessions} more, each as a mail client leaves one: STARTTLS, CLIENTID,
LOGIN, SELECT INBOX, IDLE, and reads VmRSS again.  The difference divided
by the sessions is what one idle relayed session costs the gateway: the
client's TLS connection and front protocol, the backend connection and
its relay.

The last line printed is one JSON object: sessions, rss_before_kib,
rss_after_kib, kib_per_session.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._stacks import PASSWORD, USERS
from benchmarks.sessions import BODY, ServerProcess, deviceToken


def rssKiB(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match is not None
    return int(match.group(1))


def idleSession(server: ServerProcess, n: int) -> imaplib.IMAP4:
    """
    One session left idle in IDLE, as a mail client leaves its INBOX.
    """
    connection = imaplib.IMAP4("127.0.0.1", server.port, timeout=30)
    connection.starttls(ssl_context=server.context)
    status, _ = connection._simple_command("CLIENTID", "UUID", deviceToken(n))
    assert status == "OK", status
    connection.login(USERS[n % len(USERS)], PASSWORD)
    status, _ = connection.select("INBOX")
    assert status == "OK", status
    connection.send(b"I IDLE\r\n")
    line = connection.readline()
    assert line.startswith(b"+"), line
    return connection


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from tests.dovecotserver import DovecotServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--certificate", choices=["rsa2048", "ec256"], default="rsa2048")
    parser.add_argument("--smoke", action="store_true", help="10 sessions")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sessions = 10
    imaplib.Commands.setdefault("CLIENTID", ("NONAUTH",))

    work = Path(tempfile.mkdtemp(prefix="clientid-bench-"))
    dovecot = DovecotServer(
        {user: PASSWORD for user in USERS},
        extra="default_process_limit = 2000\ndefault_client_limit = 8000\n"
        "mail_max_userip_connections = 1000\n",
    )
    gateway = None
    open_: list[imaplib.IMAP4] = []
    try:
        for user in USERS:
            dovecot.deliver(user, BODY)
        # Every session comes from 127.0.0.1: lift the per-address limit.
        (work / "gateway").mkdir()
        (work / "gateway" / "clientid.toml").write_text(
            "[server]\nmax_connections_per_address = 100000\nmax_connections = 100000\n"
        )
        gateway = ServerProcess(
            "gateway", "imap", "fast", work, certificate=args.certificate,
            extra=("--imap-backend", f"tcp:host=127.0.0.1:port={dovecot.port}"),
        )
        # Warm up: imports, first handshakes, each device learned once (its
        # notice APPENDed), then the sessions stay open as a baseline.
        for n in range(len(USERS)):
            idleSession(gateway, n).shutdown()
        for n in range(20):
            open_.append(idleSession(gateway, n))
        time.sleep(1)
        before = rssKiB(gateway.process.pid)
        for n in range(args.sessions):
            open_.append(idleSession(gateway, 20 + n))
        time.sleep(1)
        after = rssKiB(gateway.process.pid)
    finally:
        for connection in open_:
            try:
                connection.shutdown()
            except OSError:
                pass
        if gateway is not None:
            gateway.stop()
        dovecot.cleanUp()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "sessions": args.sessions,
        "certificate": args.certificate,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_session": round((after - before) / args.sessions, 1),
    }
    print(f"{args.sessions} idle relayed IMAP sessions: gateway RSS {before} KiB -> {after} KiB, "
          f"{result['kib_per_session']} KiB per session")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
