"""
What the device policy adds to a login from a known, approved device: the
steady state of a server whose users log in again and again.

    python -m benchmarks.knownlogins [--logins 20000] [--devices 192]
        [--interval 300] [--smoke]

In one process, without sockets: the runnable server's decision path (the
SQLite store in a temporary file, the built-in C{learn} policy, the
L{ClientIDChecker} around the session benchmark's fast password checker),
on a L{Clock} standing in for the reactor (each login is followed by one
turn, where the store commits).  A warm-up logs every device in once, so
the timed logins are all of known devices.  Then the same logins go to the
password checker alone.

The last line printed is one JSON object: C{policy_us_per_login} (process
CPU time per login through the checker and policy, minus the password
check alone), C{password_us_per_login}, C{commits} (store transactions
during the timed logins: 0 when they are quiet) and C{cache_hits} (answers
the store served from memory).  C{--interval 0} writes every login, as
before the fast path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.cred.credentials import UsernamePassword
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from benchmarks._stacks import PASSWORD, USERS, FastChecker
from clientid_twisted.cred import identifyCredentials
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._engine import policyFromConfig
from clientid_twisted.policy._manage import resultOf
from clientid_twisted.store._sqlite import SQLiteStore


def timeLogins(checker: Any, logins: list[Any], clock: Clock, count: int) -> float:
    """
    @return: Process CPU seconds for C{count} logins, one reactor turn each.
    """
    results: list[Any] = []
    started = time.process_time()
    for n in range(count):
        checker.requestAvatarId(logins[n % len(logins)]).addBoth(results.append)
        clock.advance(0)
    cpu = time.process_time() - started
    refused = [r for r in results if not isinstance(r, bytes)]
    assert not refused, refused[0]
    return cpu


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=len(USERS) * 3)
    parser.add_argument("--interval", type=float, default=300.0,
                        help="[policy] last_seen_interval_seconds")
    parser.add_argument("--smoke", action="store_true", help="1,000 logins")
    args = parser.parse_args(argv)
    if args.smoke:
        args.logins = 1000

    work = Path(tempfile.mkdtemp(prefix="clientid-bench-"))
    try:
        clock = Clock()
        clock.advance(time.time())
        store = SQLiteStore(work / "clientid.sqlite3", reactor=clock, checkpointInterval=None)
        hasher = IdentityHasher(resultOf(store.identityKey(None)))
        config = {"policy": {"last_seen_interval_seconds": args.interval}}
        policy = policyFromConfig(config, store, hasher, [], clock)
        password = FastChecker()
        checker = ClientIDChecker(password, policy, clock)
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        logins = [
            identifyCredentials(
                UsernamePassword(USERS[n % len(USERS)].encode(), PASSWORD.encode()),
                ClientIdentity("UUID", f"bench-device-{n}"), peer, "imap", True,
            )
            for n in range(args.devices)
        ]
        timeLogins(checker, logins, clock, len(logins))  # each device learned
        commits, hits = store.commits, store.cache.hits
        withPolicy = timeLogins(checker, logins, clock, args.logins)
        commits, hits = store.commits - commits, store.cache.hits - hits
        alone = timeLogins(password, logins, clock, args.logins)
        resultOf(store.close())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "logins": args.logins,
        "devices": args.devices,
        "interval": args.interval,
        "policy_us_per_login": round(1e6 * (withPolicy - alone) / args.logins, 1),
        "password_us_per_login": round(1e6 * alone / args.logins, 1),
        "commits": commits,
        "cache_hits": hits,
    }
    print(
        f"{args.logins} logins of {args.devices} known devices: the policy adds "
        f"{summary['policy_us_per_login']} us of CPU per login "
        f"(password check alone {summary['password_us_per_login']} us); "
        f"{commits} commits, {hits} answers from memory"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
