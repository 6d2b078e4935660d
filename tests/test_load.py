"""
The load test of C{benchmarks/load.py} in its smoke mode: concurrent TLS
sessions, SMTP and IMAP, held against the running server with no error.
The full run (1,000 sessions for a minute) is C{python -m benchmarks.load}.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.runningserver import canRunServer

ROOT = Path(__file__).resolve().parent.parent


class LoadSmokeTests(SynchronousTestCase):
    def test_smoke(self) -> None:
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        if not (ROOT / "benchmarks" / "load.py").exists():
            raise SkipTest("not running from a source checkout")
        result = subprocess.run(
            [sys.executable, "-m", "benchmarks.load", "--smoke"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = result.stdout.strip().splitlines()
        self.assertTrue(lines, result.stderr)
        summary = json.loads(lines[-1])
        self.assertTrue(summary["ok"], result.stdout + result.stderr)
        self.assertEqual(summary["errors"], 0)
        self.assertEqual(summary["established"], summary["sessions"])
        self.assertEqual(result.returncode, 0)
