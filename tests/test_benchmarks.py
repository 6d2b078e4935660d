"""
Smoke runs of the benchmarks: each runs its C{--smoke} mode in a child
process, exits 0 and ends with one JSON object holding the keys the docs
and dashboards read (the contract of issue 7).  The figures themselves are
not checked: a smoke run is too short to mean anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from twisted.trial.unittest import SynchronousTestCase, TestCase

ROOT = Path(__file__).resolve().parent.parent
GRID_KEYS = {"honest_success_rate", "compromised_accounts", "attacker_logins", "alerts_raised"}
DECISION_KEYS = {"decisions_per_s", "p50_ms", "p99_ms", "p99_ms_sequential", "cpu_us_per_decision"}


def runBenchmark(name: str, *arguments: str, timeout: float = 120) -> dict[str, Any]:
    """
    Run C{python -m benchmarks.NAME --smoke ARGUMENTS} from the source tree.

    @return: The JSON object on its last line.
    """
    environment = dict(os.environ, MPLBACKEND="Agg")
    process = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--smoke", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert process.returncode == 0, (process.returncode, process.stdout[-2000:], process.stderr[-4000:])
    lines = process.stdout.strip().splitlines()
    assert lines, process.stderr[-4000:]
    result = json.loads(lines[-1])
    assert isinstance(result, dict), lines[-1]
    return result


class BenchmarkSmokeTests(TestCase):
    def test_bruteforce(self) -> None:
        """
        The grid holds every strategy against every variant, each with the
        four figures.
        """
        result = runBenchmark("bruteforce", "--jobs", "1", "--chart", self.mktemp() + ".png")
        grid = result["results"]
        strategies = {r["strategy"] for r in grid}
        variants = {r["variant"] for r in grid}
        self.assertEqual(
            strategies, {"none", "address-lockout", "learn", "tofu", "allowlist"}
        )
        self.assertEqual(len(variants), 4)
        self.assertEqual(len(grid), 20)
        for row in grid:
            self.assertTrue(GRID_KEYS <= set(row), row)

    def test_decisionsMemory(self) -> None:
        result = runBenchmark("decisions", "--store", "memory")
        self.assertTrue(result["results"])
        for figures in result["results"].values():
            self.assertTrue(DECISION_KEYS <= set(figures), figures)
            self.assertEqual(figures["errors"], 0)

    def test_knownLogins(self) -> None:
        """
        Logins of known devices write nothing and are served from memory;
        with an interval of 0 each writes.
        """
        quiet = runBenchmark("knownlogins")
        self.assertEqual(quiet["commits"], 0)
        self.assertGreater(quiet["cache_hits"], 0)
        self.assertGreater(quiet["policy_us_per_login"], 0)
        every = runBenchmark("knownlogins", "--interval", "0")
        self.assertEqual(every["commits"], every["logins"])

    def test_decisionsSQLite(self) -> None:
        result = runBenchmark("decisions", "--store", "sqlite")
        for figures in result["results"].values():
            self.assertTrue(DECISION_KEYS <= set(figures), figures)
            self.assertEqual(figures["errors"], 0)

    def test_decisionsRedis(self) -> None:
        """
        The Redis run, on a throwaway C{redis-server} the benchmark starts.
        """
        from tests.redisserver import requireRedisServer

        requireRedisServer()
        result = runBenchmark("decisions", "--store", "redis")
        for figures in result["results"].values():
            self.assertTrue(DECISION_KEYS <= set(figures), figures)
            self.assertEqual(figures["errors"], 0)
            self.assertGreater(figures["cpu_us_per_decision"], 0)

    def test_connections(self) -> None:
        result = runBenchmark("connections")
        self.assertTrue(
            {"ours_kib_per_conn", "bare_kib_per_conn", "ratio"} <= set(result), result
        )
        self.assertEqual(result["failed"], 0)

    def test_sessions(self) -> None:
        """
        Full SMTP and IMAP sessions against ours and bare twisted.mail.
        """
        for protocol, extra in (("smtp", ()), ("imap", ("--breakdown",))):
            result = runBenchmark("sessions", "--protocol", protocol, *extra)
            if extra:
                self.assertTrue(
                    {"protocol_per_s", "p99_ms_protocol", "cpu_ms_protocol"} <= set(result), result
                )
            self.assertTrue(
                {
                    "ours_per_s",
                    "bare_per_s",
                    "ratio",
                    "p99_ms_ours",
                    "p99_ms_bare",
                    "cpu_ms_ours",
                    "cpu_ms_bare",
                }
                <= set(result),
                result,
            )

    def test_protocolWork(self) -> None:
        """
        The stacks' protocol work per session, in process, with a figure
        for each command of each stack.
        """
        for protocol, command in (("smtp", "AUTH"), ("imap", "LOGIN")):
            result = runBenchmark("protocolwork", "--protocol", protocol)
            self.assertTrue({"ms_bare", "ms_protocol", "ms_ours"} <= set(result), result)
            for stack in ("bare", "protocol", "ours"):
                self.assertGreater(result[f"us_{stack}_{command}"], 0, result)
            self.assertEqual(result["us_bare_CLIENTID"], 0, result)

    def test_workers(self) -> None:
        """
        twistd clientid-mail --workers 2 against bare twisted.mail as two
        processes on one socket.
        """
        result = runBenchmark("workers", "--workers", "2", "--no-dovecot")
        self.assertTrue(
            {"workers", "ours_per_s", "bare_per_s", "ratio_bare", "cpu_ms_ours", "cpu_ms_bare"} <= set(result),
            result,
        )
        self.assertEqual((result["workers"], result["dovecot_per_s"]), (2, None))


class GatewayBenchmarkSmokeTests(TestCase):
    """
    The IMAP gateway's figures against a private Dovecot.
    """

    def setUp(self) -> None:
        from tests.dovecotserver import requireDovecot

        requireDovecot()

    def test_sessionsThroughTheGateway(self) -> None:
        result = runBenchmark("sessions", "--gateway")
        self.assertTrue(
            {
                "gateway_per_s",
                "dovecot_per_s",
                "cpu_ms_gateway",
                "cpu_ms_dovecot_direct",
                "cpu_ms_dovecot_behind",
                "cpu_ms_added",
            }
            <= set(result),
            result,
        )

    def test_memoryPerIdleSession(self) -> None:
        result = runBenchmark("gatewaymemory")
        self.assertEqual(result["sessions"], 10)
        self.assertTrue({"rss_before_kib", "rss_after_kib", "kib_per_session"} <= set(result), result)


class SessionStackTests(SynchronousTestCase):
    """
    What the session benchmark's stacks check logins with, how they log and
    which certificate they serve (issue 17's benchmark fixes).
    """

    def server(self) -> Any:
        from clientid_twisted.server.assembly import assembleServer

        return self.successResultOf(
            assembleServer(Path(self.mktemp()), hostname="bench.test", storeURL="memory:")
        )

    def test_barePasswordCheckerOnly(self) -> None:
        """
        With C{--checker scrypt}, "bare" and "protocol" check the password
        with the plain scrypt checker, without the device policy (the
        assembled server's portal holds the policy's checker, which they
        must not take).
        """
        from benchmarks._stacks import portalChecker
        from clientid_twisted.policy._checker import ClientIDChecker
        from clientid_twisted.server.users import ScryptChecker

        server = self.server()
        for stack in ("bare", "protocol"):
            checker = portalChecker(stack, server, "scrypt")
            self.assertIsInstance(checker, ScryptChecker)
            self.assertNotIsInstance(checker, ClientIDChecker)

    def test_oursPolicyOnce(self) -> None:
        """
        "ours" wraps the same password checker in the device policy once:
        the policy's checker holds the password checker itself, not another
        policy checker.
        """
        from benchmarks._stacks import FastChecker, portalChecker
        from clientid_twisted.policy._checker import ClientIDChecker
        from clientid_twisted.server.users import ScryptChecker

        server = self.server()
        for name, kind in (("scrypt", ScryptChecker), ("fast", FastChecker)):
            checker = portalChecker("ours", server, name)
            self.assertIsInstance(checker, ClientIDChecker)
            self.assertIsInstance(checker.innerChecker, kind)
            self.assertIs(checker.policy, server.authentication.policy)

    def test_logsToFileWithRSA(self) -> None:
        """
        With a log file and C{--certificate rsa2048}, a stack's server
        process writes its events where C{twistd --logfile} would, in
        Twisted's text format (the login's line among them), and serves an
        RSA-2048 certificate.
        """
        import socket

        from benchmarks.sessions import ServerProcess, imapSession, seedMailboxes

        work = Path(self.mktemp())
        work.mkdir()
        seedMailboxes(work / "ours")
        server = ServerProcess("ours", "imap", "fast", work, logToFile=True, certificate="rsa2048")
        try:
            imapSession(server, 0)
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                # IMAP with STARTTLS: read the greeting, then upgrade.
                raw.recv(1024)
                raw.sendall(b"a STARTTLS\r\n")
                raw.recv(1024)
                with server.context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    der = tls.getpeercert(binary_form=True)
        finally:
            server.stop()
        assert der is not None
        key = x509.load_der_x509_certificate(der).public_key()
        self.assertIsInstance(key, rsa.RSAPublicKey)
        assert isinstance(key, rsa.RSAPublicKey)
        self.assertEqual(key.key_size, 2048)
        assert server.logFile is not None
        log = server.logFile.read_text()
        # textFileLogObserver's format: "TIMESTAMP [SYSTEM] message".
        self.assertRegex(log, r"(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[")
        self.assertIn("user0@bench.test", log)
