# -*- test-case-name: tests.test_systemd -*-
"""
The systemd units in contrib/systemd: C{systemd-analyze verify} accepts
them without a warning, and the service's own command line, given the
socket unit's ports by C{systemd-socket-activate} (on free ports of ::1),
serves SMTP and IMAP on the sockets it inherits (with C{--workers auto},
each worker adopting all four).

Where systemd's tools are missing the tests are skipped with the reason;
they are not required in CI (a container has no systemd).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted.testing import throwawayCertificate
from tests.runningserver import readUntil

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"
SERVICE = UNITS / "clientid-mail.service"
SOCKET = UNITS / "clientid-mail.socket"
INSTALLED_TWISTD = "/opt/clientid-mail/bin/twistd"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SkipTest(f"{name} is not installed (systemd); the unit files are checked where it is")
    return found


def unitValues(path: Path, key: str) -> list[str]:
    """
    Every value of C{key} in a unit file, continuation lines joined.
    """
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [m.group(1).strip() for m in re.finditer(rf"(?m)^{key}=(.*)$", text)]


class UnitFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        if not SERVICE.exists():
            raise SkipTest("not running from a source checkout")

    def test_hardened(self) -> None:
        """
        The service runs unprivileged in a read-only system with only its
        state directory writable.
        """
        for setting in ("DynamicUser=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/clientid-mail",
                        "NoNewPrivileges=yes", "CapabilityBoundingSet=", "PrivateTmp=yes"):
            self.assertIn(f"\n{setting}\n", SERVICE.read_text())
        self.assertIn("--data-dir /var/lib/clientid-mail", unitValues(SERVICE, "ExecStart")[0])

    def test_verify(self) -> None:
        analyze = _tool("systemd-analyze")
        work = Path(self.mktemp()).absolute()
        work.mkdir(parents=True)
        twistd = Path(sys.executable).parent / "twistd"
        if not twistd.exists():
            raise SkipTest(f"no twistd script beside {sys.executable}")
        (work / SERVICE.name).write_text(SERVICE.read_text().replace(INSTALLED_TWISTD, str(twistd)))
        shutil.copy(SOCKET, work / SOCKET.name)
        result = subprocess.run(
            [analyze, "verify", "--man=no", SOCKET.name, SERVICE.name],
            cwd=work, capture_output=True, text=True, timeout=120,
            env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"),
        )
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


def _adopted(log: str) -> list[str]:
    """
    The worker number of each listening port a worker adopted.
    """
    return sorted(re.findall(r"\[worker=(\d+) -\] \S+ (?:\(TLS\) )?starting on", log))


class SocketActivationTests(SynchronousTestCase):
    """
    The service's ExecStart, as written, on the socket unit's sockets.
    """

    def test_serves(self) -> None:
        activate = _tool("systemd-socket-activate")
        if not SERVICE.exists():
            raise SkipTest("not running from a source checkout")
        work = Path(self.mktemp()).absolute()
        (work / "credentials").mkdir(parents=True)
        certificate = throwawayCertificate("localhost")
        (work / "credentials" / "fullchain.pem").write_bytes(certificate.certificatePEM)
        (work / "credentials" / "privkey.pem").write_bytes(certificate.keyPEM)
        [execStart] = unitValues(SERVICE, "ExecStart")
        execStart = execStart.replace("${CREDENTIALS_DIRECTORY}", str(work / "credentials"))
        execStart = execStart.replace("/var/lib/clientid-mail", str(work / "data"))
        command = shlex.split(execStart)
        self.assertEqual(command[0], INSTALLED_TWISTD)
        command[:1] = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        ports = []
        for _ in unitValues(SOCKET, "ListenStream"):
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
                ports.append(s.getsockname()[1])
        listen = [argument for port in ports for argument in ("-l", f"[::1]:{port}")]
        # systemd-socket-activate passes on only the environment it is told to.
        pythonPath = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
        listen += ["-E", f"PYTHONPATH={pythonPath}"]
        # As systemd names a socket unit's descriptors (after the unit);
        # Twisted ignores descriptors that come without names.
        listen += ["--fdname=" + ":".join(["clientid-mail"] * len(ports))]
        log = work / "server.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [activate, *listen, *command], cwd=work, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            # The ports are bound at once; the server starts on the first
            # connection, and answers it.
            imap = self.connect(ports[2])
            self.assertTrue(readUntil(imap, rb"\r\n").startswith(b"* OK"), log.read_text())
            imap.close()
            context = ssl.create_default_context(cadata=certificate.certificatePEM.decode())
            with context.wrap_socket(self.connect(ports[1]), server_hostname="localhost") as smtps:
                self.assertTrue(readUntil(smtps, rb"\r\n").startswith(b"220 "))
            smtp = self.connect(ports[0])
            self.assertTrue(readUntil(smtp, rb"\r\n").startswith(b"220 "))
            smtp.close()
            # --workers auto: every worker adopts the four sockets systemd
            # passed to the parent.
            workers = os.cpu_count() or 1
            expected = sorted(str(i) for i in range(1, workers + 1) for _ in range(4)) if workers > 1 else []
            deadline = time.monotonic() + 60
            while _adopted(log.read_text()) != expected and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(_adopted(log.read_text()), expected, log.read_text())
        finally:
            process.terminate()
            process.wait(timeout=60)
        self.assertNotIn("Traceback", log.read_text())

    def connect(self, port: int) -> socket.socket:
        deadline = time.monotonic() + 30
        while True:
            try:
                return socket.create_connection(("::1", port), timeout=30)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
