"""
Several frontends, one memory, as deployed: two real
C{twistd -n clientid-mail} processes on one Redis (which wants a
password), driven over real TLS by C{smtplib} and C{imaplib}, managed with
C{clientid-admin --store redis://...} run as a program of its own and as
C{main()}.

L{tests.test_redis_frontends} checks the same with both frontends in the
test's process; this checks what only separate processes show: that each
one's store connection, script cache and identity key agree through Redis
alone, and that the URL's password works from the command line
(C{--store}) and from C{clientid.toml} (C{[store] url}) without being
logged.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.admin import main as admin
from tests.redisserver import RedisServer, uniquePrefix
from tests.runningserver import PASSWORD, RunningServer
from tests.test_imap_server import registerIMAPLibCommand
from tests.test_policy_server import imapsLogin

ALICE = "alice@example.test"
LAPTOP = "5b0e0c1e-laptop-token-9f1d-7a44c0de"
PHONE = "1c2d3e4f-phone-token-8a7b-6c5d4e3f"
REDIS_PASSWORD = "redis p@ss/word:7"
SMTP_OK = (235, b"2.7.0 Authentication successful")
SMTP_REFUSED = (535, b"5.7.8 Authentication credentials invalid")
SMTP_TEMPFAIL = (454, b"4.7.0 Temporary authentication failure")
IMAP_OK = ("OK", b"LOGIN succeeded")
IMAP_REFUSED = ("NO", b"[AUTHENTICATIONFAILED] Authentication failed")
IMAP_TEMPFAIL = ("NO", b"[UNAVAILABLE] Temporary authentication failure")

CONFIG = """
[server]
auth_failure_delay_seconds = 0
shutdown_grace_seconds = 1

[policy]
devices = "allowlist"

[limits]
device_failures = 3

[alerts]
mail_account = false
"""

T = TypeVar("T")


class Frontend:
    """
    One C{twistd clientid-mail} process (SMTP with STARTTLS, IMAP on
    implicit TLS) and blocking clients for it.
    """

    def __init__(self, server: RunningServer) -> None:
        self.server = server

    def smtp(self, token: str, password: str = PASSWORD) -> tuple[int, bytes]:
        """
        EHLO, STARTTLS, EHLO, CLIENTID, AUTH PLAIN: the AUTH reply.
        """
        with smtplib.SMTP("127.0.0.1", self.server.ports["smtp"], timeout=10) as client:
            client.ehlo("laptop.example.net")
            client.starttls(context=self.server.context)
            client.ehlo("laptop.example.net")
            assert client.docmd("CLIENTID", "UUID " + token)[0] == 250
            secret = base64.b64encode(f"\0{ALICE}\0{password}".encode()).decode()
            return client.docmd("AUTH", "PLAIN " + secret)

    def imap(self, token: str, password: str = PASSWORD) -> tuple[str, bytes]:
        """
        Implicit TLS, CLIENTID, LOGIN: the LOGIN reply's status and text.
        """
        return imapsLogin(
            self.server.ports["imaps"], self.server.context, token, ALICE, password, timeout=10
        )


def _untilDecided(login: Callable[[], T], temporary: T, seconds: float = 15.0) -> T:
    """
    Log in until the answer is not the temporary failure a frontend gives
    before it has read the store's key; the first decided answer.
    """
    deadline = time.monotonic() + seconds
    while True:
        reply = login()
        if reply != temporary or time.monotonic() > deadline:
            return reply
        time.sleep(0.05)


class TwoProcessesOneRedisTests(SynchronousTestCase):
    """
    Two frontend processes on one Redis: an approval, a lockout and a
    revocation made on one (or by the admin command) hold on the other at
    once.
    """

    def setUp(self) -> None:
        self.redis = RedisServer(password=REDIS_PASSWORD).start()
        self.addCleanup(self.redis.cleanUp)
        self.url = f"{self.redis.url}?prefix={uniquePrefix(self)}&timeout=1"
        registerIMAPLibCommand(self, "CLIENTID")  # type: ignore[arg-type]
        work = Path(self.mktemp())
        # One gets the store on its command line, the other in its
        # clientid.toml; both are started at once (each takes about 1 s).
        starts = [
            lambda: RunningServer(work / "one", CONFIG, ("smtp", "imaps"), store=self.url),
            lambda: RunningServer(
                work / "two", CONFIG + f'\n[store]\nurl = "{self.url}"\n', ("smtp", "imaps")
            ),
        ]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(start) for start in starts]
        servers = []
        for future in futures:
            if future.exception() is None:
                servers.append(future.result())
                self.addCleanup(self.stopped, servers[-1])
        for future in futures:
            future.result()  # raises (after the cleanups are in place)
        self.one, self.two = (Frontend(s) for s in servers)
        # Wait until each frontend decides (it has the store's key).
        self.assertEqual(_untilDecided(lambda: self.one.smtp(LAPTOP), SMTP_TEMPFAIL), SMTP_REFUSED)
        self.assertEqual(_untilDecided(lambda: self.two.imap(LAPTOP), IMAP_TEMPFAIL), IMAP_REFUSED)

    def stopped(self, server: RunningServer) -> None:
        """
        Stop a frontend; its log must show no traceback and never the
        Redis password.
        """
        log = server.stop()
        self.assertNotIn("Traceback", log)
        self.assertNotIn(REDIS_PASSWORD, log)
        self.assertNotIn(self.redis.url.split("@")[0], log)

    def admin(self, *arguments: str) -> tuple[int, str, str]:
        """
        C{clientid-admin --store URL ...} in this process (its C{main}).
        """
        stdout, stderr = io.StringIO(), io.StringIO()
        status = admin(["--store", self.url, *arguments], stdout=stdout, stderr=stderr)
        return status, stdout.getvalue(), stderr.getvalue()

    def adminProgram(self, *arguments: str) -> tuple[int, str, str]:
        """
        C{clientid-admin --store URL ...} as a program of its own.
        """
        result = subprocess.run(
            [sys.executable, "-m", "clientid_twisted.admin", "--store", self.url, *arguments],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return result.returncode, result.stdout, result.stderr

    def states(self) -> dict[str, str]:
        """
        Alice's devices by fingerprint, as the admin command lists them.
        """
        status, out, err = self.admin("devices", "list", ALICE, "--json")
        self.assertEqual(status, 0, err)
        return {d["fingerprint"]: d["state"] for d in json.loads(out)}

    def test_oneFingerprintEverywhere(self) -> None:
        """
        One identity key for both processes (the store's): the same token
        has the same fingerprint in each process's protocol log lines and
        alert lines, in the events and in C{clientid-admin devices list};
        neither process made a C{clientid.key} of its own.
        """
        self.assertEqual(self.two.smtp(LAPTOP), SMTP_REFUSED)
        self.assertEqual(self.one.imap(LAPTOP), IMAP_REFUSED)
        [fingerprint] = self.states()
        status, out, err = self.admin("events", "--json")
        self.assertEqual(status, 0, err)
        self.assertEqual({e["fingerprint"] for e in json.loads(out) if e.get("fingerprint")}, {fingerprint})
        alerted = []
        for frontend in (self.one, self.two):
            log = frontend.server.log()
            # Each login's line names the device it used.
            accepted = re.findall(
                r"(?:AUTH|LOGIN) (?:succeeded|failed) for .* \(CLIENTID type=\S+ fingerprint=([0-9a-f]+)\)", log
            )
            self.assertTrue(accepted, log)
            self.assertEqual(set(accepted), {fingerprint}, log)
            # The device-refused alert goes out once per period, from
            # whichever process saw the device first.
            alerted += re.findall(r"CLIENTID alert device-refused .*fingerprint=(\S+)", log)
            self.assertFalse((frontend.server.dataDir / "clientid.key").exists())
        self.assertEqual(set(alerted), {fingerprint})

    def test_approvalOnBoth(self) -> None:
        """
        A device both frontends refused (allowlist mode) is let in by both,
        on both protocols, once the admin program approves it.
        """
        self.assertEqual(self.two.smtp(LAPTOP), SMTP_REFUSED)
        self.assertEqual(self.one.imap(LAPTOP), IMAP_REFUSED)
        [fingerprint] = self.states()
        self.assertEqual(self.states(), {fingerprint: "pending"})

        status, out, err = self.adminProgram("devices", "approve", ALICE, "--fingerprint", fingerprint)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.one.smtp(LAPTOP), SMTP_OK)
        self.assertEqual(self.two.imap(LAPTOP), IMAP_OK)
        self.assertEqual(self.one.imap(LAPTOP), IMAP_OK)
        self.assertEqual(self.two.smtp(LAPTOP), SMTP_OK)
        # Another device is still refused by both.
        self.assertEqual(self.one.smtp(PHONE), SMTP_REFUSED)
        self.assertEqual(self.two.imap(PHONE), IMAP_REFUSED)
        self.assertEqual(sorted(self.states().values()), ["approved", "pending"])

    def test_lockoutOnOneHoldsOnTheOther(self) -> None:
        """
        Wrong passwords from a device on one frontend lock it on the other
        too, even with the right password; another device is untouched;
        unlocking it through the admin command frees it on both.
        """
        for token in (LAPTOP, PHONE):
            self.assertEqual(self.admin("devices", "approve", ALICE, "UUID", token)[::2], (0, ""))
        self.assertEqual(self.two.imap(LAPTOP), IMAP_OK)

        for n in range(3):
            self.assertEqual(self.one.smtp(LAPTOP, password="wrong"), SMTP_REFUSED)
        self.assertEqual(self.two.imap(LAPTOP), IMAP_REFUSED)
        self.assertEqual(self.two.smtp(LAPTOP), SMTP_REFUSED)
        self.assertEqual(self.one.imap(LAPTOP), IMAP_REFUSED)
        self.assertEqual(self.two.imap(PHONE), IMAP_OK)
        self.assertEqual(self.one.smtp(PHONE), SMTP_OK)

        status, out, err = self.admin("events", "--json")
        self.assertEqual(status, 0, err)
        self.assertIn("device-locked", [e["event"] for e in json.loads(out)])

        status, out, err = self.adminProgram("tokens", "unlock", "UUID", LAPTOP)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.two.smtp(LAPTOP), SMTP_OK)
        self.assertEqual(self.one.imap(LAPTOP), IMAP_OK)

    def test_revocationOnBoth(self) -> None:
        """
        A device both frontends let in is refused by both, on both
        protocols, once the admin program revokes it.
        """
        for token in (LAPTOP, PHONE):
            self.assertEqual(self.admin("devices", "approve", ALICE, "UUID", token)[::2], (0, ""))
        self.assertEqual(self.one.imap(LAPTOP), IMAP_OK)
        self.assertEqual(self.two.smtp(LAPTOP), SMTP_OK)

        status, out, err = self.adminProgram("devices", "revoke", ALICE, "UUID", LAPTOP)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(self.one.imap(LAPTOP), IMAP_REFUSED)
        self.assertEqual(self.two.smtp(LAPTOP), SMTP_REFUSED)
        self.assertEqual(self.one.smtp(LAPTOP), SMTP_REFUSED)
        self.assertEqual(self.two.imap(LAPTOP), IMAP_REFUSED)
        self.assertEqual(self.two.imap(PHONE), IMAP_OK)
        self.assertEqual(sorted(self.states().values()), ["approved", "revoked"])
