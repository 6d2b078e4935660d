"""
The twistd dropin ships in the wheel: after a plain C{pip install} of a
built wheel into a fresh virtualenv, C{twistd --help} lists C{clientid-mail}
and the server starts and greets.

Slow (it builds a wheel and installs its dependencies), so marked; CI runs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import pytest

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
class WheelTests(SynchronousTestCase):
    """
    Build, install, list, start.
    """

    def setUp(self) -> None:
        if not (ROOT / "pyproject.toml").exists():
            raise SkipTest("not running from a source checkout")
        self.work = Path(self.mktemp()).resolve()
        self.work.mkdir(parents=True)

    def run_(self, *args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            timeout=600,
            **kwargs,  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            self.fail(f"{args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def test_wheelInstallsDropin(self) -> None:
        source = self.work / "src"
        shutil.copytree(
            ROOT,
            source,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", "build", "dist", "*.egg-info", "_trial_temp*", "__pycache__", "dropin.cache"
            ),
        )
        dist = self.work / "dist"
        self.run_(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, source)
        [wheel] = dist.glob("clientid_twisted-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        self.assertIn("twisted/plugins/clientid_mail.py", names)
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        self.assertFalse([n for n in names if n.startswith("tests/")], names)

        env = self.work / "venv"
        venv.EnvBuilder(with_pip=True).create(env)
        python = env / "bin" / "python"
        self.run_(python, "-m", "pip", "install", "-q", wheel)

        # Run from an empty directory so nothing from the checkout is found.
        empty = self.work / "elsewhere"
        empty.mkdir()
        help_ = self.run_(env / "bin" / "twistd", "--help", cwd=empty)
        self.assertIn("clientid-mail", help_.stdout)
        admin = self.run_(env / "bin" / "clientid-admin", "--help", cwd=empty)
        self.assertIn("user", admin.stdout)

        port = _freePort()
        server = subprocess.Popen(
            [
                str(env / "bin" / "twistd"),
                "-n",
                "--pidfile=",
                "clientid-mail",
                "--data-dir",
                str(self.work / "data"),
                "--smtp",
                f"tcp:{port}:interface=127.0.0.1",
            ],
            cwd=empty,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            greeting = b""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not greeting:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                        greeting = s.recv(1024)
                except OSError:
                    if server.poll() is not None:
                        break
                    time.sleep(0.2)
            self.assertTrue(greeting.startswith(b"220 "), greeting)
        finally:
            server.terminate()
            output, _ = server.communicate(timeout=30)
        self.assertIn("SHA-256 fingerprint", output)
        self.assertTrue((self.work / "data" / "tls" / "selfsigned.pem").exists())
        self.assertNotIn("Traceback", output)


