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

from twisted.trial.unittest import TestCase

ROOT = Path(__file__).resolve().parent.parent
GRID_KEYS = {"honest_success_rate", "compromised_accounts", "attacker_logins", "alerts_raised"}
DECISION_KEYS = {"decisions_per_s", "p50_ms", "p99_ms", "p99_ms_sequential"}


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

    def test_decisionsSQLite(self) -> None:
        result = runBenchmark("decisions", "--store", "sqlite")
        for figures in result["results"].values():
            self.assertTrue(DECISION_KEYS <= set(figures), figures)
            self.assertEqual(figures["errors"], 0)

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
