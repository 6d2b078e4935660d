"""
The sdist and wheel built from the tree hold the licence (and the sdist the
changelog) with SPDX licence metadata; the twistd dropin ships in the wheel:
after a plain C{pip install} of the wheel into a fresh virtualenv, with no
C{dropin.cache} yet, C{twistd --reactor=poll -n clientid-mail} starts on
the poll reactor and greets (importing the dropins must not install the
default reactor first: issue 13, finding 1); C{twistd --help} lists
C{clientid-mail} and C{twistd clientid-mail --version} prints our version.

Slow (it builds a wheel and installs its dependencies), so marked; CI runs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted import __version__
from tests.services import freePort

ROOT = Path(__file__).resolve().parent.parent


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
                ".git", ".venv", "build", "dist", "*.egg-info", "_trial_temp*", "__pycache__", "dropin.cache",
                "tests.test_*", ".pytest_cache", ".hypothesis",
            ),
        )
        dist = self.work / "dist"
        # The sdist first, then the wheel built from the unpacked sdist (as
        # a packager would): what the wheel holds came through the sdist.
        self.run_(sys.executable, "-m", "build", "--outdir", dist, source)
        [sdist] = dist.glob("clientid_twisted-*.tar.gz")
        [wheel] = dist.glob("clientid_twisted-*.whl")
        version = wheel.name.split("-")[1]
        self.assertEqual(version, __version__)
        with tarfile.open(sdist) as archive:
            sdistNames = archive.getnames()
            top = f"clientid_twisted-{version}"
            self.assertIn(f"{top}/LICENSE", sdistNames)
            self.assertIn(f"{top}/CHANGELOG.md", sdistNames)
            sdistInfo = archive.extractfile(f"{top}/PKG-INFO")
            assert sdistInfo is not None
            self.assertIn("License-Expression: MIT", sdistInfo.read().decode())
        names = zipfile.ZipFile(wheel).namelist()
        distInfo = f"clientid_twisted-{version}.dist-info"
        self.assertIn(f"{distInfo}/licenses/LICENSE", names)
        metadata = zipfile.ZipFile(wheel).read(f"{distInfo}/METADATA").decode()
        self.assertIn("License-Expression: MIT", metadata)
        self.assertIn("License-File: LICENSE", metadata)
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
        # A fresh install: no plugin cache yet, so twistd imports every
        # dropin (ours too) before it installs the reactor asked for.
        self.assertEqual(list(env.rglob("dropin.cache")), [])
        port = freePort()
        server = subprocess.Popen(
            [
                str(env / "bin" / "twistd"),
                "--reactor=poll",
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
        self.assertNotIn("reactor already installed", output)
        self.assertIn("PollReactor", output)

        help_ = self.run_(env / "bin" / "twistd", "--help", cwd=empty)
        self.assertIn("clientid-mail", help_.stdout)
        admin = self.run_(env / "bin" / "clientid-admin", "--help", cwd=empty)
        self.assertIn("user", admin.stdout)
        printed = self.run_(env / "bin" / "twistd", "clientid-mail", "--version", cwd=empty)
        self.assertEqual(printed.stdout.splitlines()[0], f"clientid-mail (clientid-twisted) {__version__}")



