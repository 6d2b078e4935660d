"""
What the protocol layers cost per session, without TLS or sockets.

    python -m benchmarks.protocolwork --protocol smtp|imap [--rounds 7]
        [--sessions 150] [--smoke]

Builds the stacks of L{benchmarks._stacks} ("bare", "protocol", "ours")
in this process, each logging to a file as C{twistd --logfile} does, and
drives the session of L{benchmarks.sessions} through each protocol
directly: lines in over a L{StringTransport
<twisted.internet.testing.StringTransport>} already marked as TLS, the
timers on a L{Clock <twisted.internet.task.Clock>}.  What is measured is
the Python the protocols, the session guard, the policy and the maildir
run per session (process CPU time), free of the TLS records, system calls
and scheduling noise of L{benchmarks.sessions}, whose figures it helps to
read: the difference between two stacks here is what their code adds.

The mailboxes are backdated after the warm-up, as a mailbox nobody
delivered to in the last seconds is: a poll then reads the directory
stamps only.  Rounds alternate between the stacks; each stack's median
round is reported.  The last line printed is one JSON object: ms_STACK
(median CPU ms per session) and, per command, us_STACK_COMMAND (mean
CPU microseconds, warm-up included).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.logfile import LogFile

from benchmarks import _stacks
from benchmarks.sessions import BODY, DEVICES, resetMailboxes, seedMailboxes
from clientid_twisted.testing import LineExchange, connectedTransport, synchronousScheduler

STACKS = ("bare", "protocol", "ours")


def buildFactories(protocol: str, work: Path) -> dict[str, Any]:
    """
    The stacks' factories, FETCH output paced synchronously.
    """
    factories: dict[str, Any] = {}
    for stack in STACKS:
        dataDir = work / stack
        if protocol == "imap":
            seedMailboxes(dataDir)
        factory, _ = _stacks.buildFactory(stack, protocol, dataDir, "fast")
        if protocol == "imap":
            factory.scheduler = synchronousScheduler
        factories[stack] = factory
    return factories


def sessionLines(protocol: str, stack: str, n: int) -> list[bytes]:
    """
    The lines of one session of L{benchmarks.sessions}, after TLS.
    """
    user = _stacks.USERS[n % len(_stacks.USERS)].encode()
    token = str(uuid.UUID(int=(n % DEVICES) + 1)).encode()
    withClientID = stack != "bare"
    if protocol == "imap":
        return [
            b"a CAPABILITY",
            *([b"b CLIENTID UUID " + token] if withClientID else []),
            b"c LOGIN " + user + b' "' + _stacks.PASSWORD.encode() + b'"',
            b"d SELECT INBOX",
            b"e FETCH 1 (BODY.PEEK[])",
            b"f LOGOUT",
        ]
    recipient = _stacks.USERS[(n + 1) % len(_stacks.USERS)].encode()
    credentials = base64.b64encode(b"\0" + user + b"\0" + _stacks.PASSWORD.encode())
    return [
        b"EHLO bench.client",
        *([b"CLIENTID UUID " + token] if withClientID else []),
        b"AUTH PLAIN " + credentials,
        b"MAIL FROM:<" + user + b">",
        b"RCPT TO:<" + recipient + b">",
        b"DATA",
        *BODY.rstrip(b"\r\n").split(b"\r\n"),
        b".",
        b"QUIT",
    ]


def runSession(
    protocol: str, stack: str, factory: Any, n: int, perCommand: dict[str, float]
) -> None:
    """
    One session; adds each command's CPU seconds to C{perCommand}.
    """
    started = time.process_time()
    server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000 + n % 1000))
    transport = connectedTransport(server, secure=True, peerHost="127.0.0.1", clock=Clock())
    if hasattr(server, "handshakeCompleted"):
        server.handshakeCompleted()
    client = LineExchange(server, transport)
    perCommand["connect"] = perCommand.get("connect", 0.0) + time.process_time() - started
    for line in sessionLines(protocol, stack, n):
        words = line.split()
        if protocol == "smtp" and getattr(server, "mode", None) == "DATA" and line != b".":
            command = "body"
        else:
            command = words[1 if protocol == "imap" else 0].decode("ascii")
        started = time.process_time()
        client.send(line + b"\r\n")
        perCommand[command] = perCommand.get(command, 0.0) + time.process_time() - started
    started = time.process_time()
    server.connectionLost(None)
    perCommand["end"] = perCommand.get("end", 0.0) + time.process_time() - started


def backdate(work: Path) -> None:
    """
    Make every maildir look untouched for a minute.
    """
    then = time.time_ns() - 60 * 10**9
    for stack in STACKS:
        for user in _stacks.USERS:
            for part in ("new", "cur", "clientid-uidlist"):
                path = work / stack / "mail" / user / part
                if path.exists():
                    os.utime(path, ns=(then, then))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=["smtp", "imap"], default="imap")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sessions", type=int, default=150, help="sessions per round and stack")
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 5 sessions")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.sessions = 2, 5
    work = Path(tempfile.mkdtemp(prefix="clientid-protocolwork-"))
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(LogFile.fromFullPath(str(work / "server.log")))],
        redirectStandardIO=False,
    )
    factories = buildFactories(args.protocol, work)
    perCommand: dict[str, dict[str, float]] = {stack: {} for stack in STACKS}
    # Warm up: every device logs in once (ours then knows them all).
    for stack in STACKS:
        for n in range(DEVICES):
            runSession(args.protocol, stack, factories[stack], n, perCommand[stack])
        if args.protocol == "imap" and stack != "bare":
            resetMailboxes(work / stack)
    if args.protocol == "imap":
        backdate(work)
    rounds: dict[str, list[float]] = {stack: [] for stack in STACKS}
    for r in range(args.rounds):
        for stack in STACKS if r % 2 == 0 else STACKS[::-1]:
            started = time.process_time()
            for n in range(args.sessions):
                runSession(args.protocol, stack, factories[stack], n, perCommand[stack])
            rounds[stack].append(1000 * (time.process_time() - started) / args.sessions)
    sessions = DEVICES + args.rounds * args.sessions
    result: dict[str, Any] = {"protocol": args.protocol}
    print(f"{args.protocol.upper()} protocol work, {args.rounds} rounds x {args.sessions} sessions")
    for stack in STACKS:
        ordered = sorted(rounds[stack])
        result[f"ms_{stack}"] = round(ordered[len(ordered) // 2], 3)
        print(f"{stack:>9}: {result[f'ms_{stack}']:.3f} ms CPU per session (median round)")
    commands = list(perCommand["ours"])
    print(f"{'command':>10} " + " ".join(f"{stack:>9}" for stack in STACKS) + "  (us per session)")
    for command in commands:
        cells = []
        for stack in STACKS:
            us = round(1e6 * perCommand[stack].get(command, 0.0) / sessions, 1)
            result[f"us_{stack}_{command}"] = us
            cells.append(f"{us:>9.1f}")
        print(f"{command:>10} " + " ".join(cells))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
