# -*- test-case-name: tests.test_typing -*-
"""
The package type-checks: C{mypy clientid_twisted} with the mypy-zope
plugin (configured in C{pyproject.toml}) reports no errors.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def requireModules(case: SynchronousTestCase, *names: str) -> None:
    """
    Skip C{case} when a tool it runs is not installed, unless the
    environment variable C{CI} is set: there a missing tool fails the test,
    so CI cannot pass without running the check.
    """
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if not missing:
        return
    message = f"not installed: {', '.join(missing)} (pip install '.[test]')"
    if os.environ.get("CI"):
        case.fail(f"CI is set and {message}")
    raise SkipTest(message)


class MypyTests(SynchronousTestCase):
    def test_packageTypeChecks(self) -> None:
        """
        mypy, with the configuration and plugin in C{pyproject.toml}, finds no
        errors in the package.
        """
        requireModules(self, "mypy", "mypy_zope")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--config-file",
                str(ROOT / "pyproject.toml"),
                "--cache-dir",
                os.path.abspath(self.mktemp()),
                "clientid_twisted",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(
            result.returncode,
            0,
            f"mypy failed:\n{result.stdout}\n{result.stderr}",
        )
