# -*- test-case-name: tests.test_startup -*-
"""
Start-up as an operator meets it, with a real C{twistd clientid-mail}
child: a port in use or a bad endpoint is one line, not a traceback or the
whole usage text; C{twistd --uid/--gid} (Twisted's own privilege drop)
gives the data directory to that user before dropping, so logins work
after it.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted.server.users import UserDatabase
from tests.runningserver import canRunServer, readUntil

ROOT = Path(__file__).resolve().parent.parent


def twistd(*arguments: str, cwd: Path) -> list[str]:
    """
    The command line of this interpreter's twistd (it serves this tree).
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *arguments]


def environment() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


class OneLineErrorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.work = Path(self.mktemp()).absolute()
        self.work.mkdir(parents=True)

    def run_(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            twistd("-n", "--pidfile=", "clientid-mail", "--data-dir", str(self.work / "data"), *arguments, cwd=self.work),
            cwd=self.work, env=environment(), capture_output=True, text=True, timeout=60,
        )

    def errorLines(self, result: subprocess.CompletedProcess[str]) -> list[str]:
        text = result.stdout + result.stderr
        self.assertNotIn("Traceback", text)
        self.assertNotIn("Usage:", text)
        return [line for line in text.splitlines() if "clientid-mail:" in line]

    def test_portInUse(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = self.run_("--smtp", f"tcp:{port}:interface=127.0.0.1")
        self.assertNotEqual(result.returncode, 0)
        [line] = self.errorLines(result)
        self.assertIn(f"cannot listen for smtp tcp:{port}:interface=127.0.0.1: Address already in use", line)

    def test_badEndpoint(self) -> None:
        result = self.run_("--imap", "tcp:notaport")
        self.assertNotEqual(result.returncode, 0)
        self.assertEqual(self.errorLines(result), ["clientid-mail: --imap: invalid endpoint 'tcp:notaport': " + self.reason()])
        self.assertFalse((self.work / "data").exists())

    def reason(self) -> str:
        from twisted.internet import endpoints

        from clientid_twisted.server.tap import _ValidatingReactor

        try:
            endpoints.serverFromString(_ValidatingReactor(), "tcp:notaport")
        except ValueError as e:
            return str(e)
        raise AssertionError("tcp:notaport parsed")


def _readableByOthers(path: Path) -> bool:
    """
    Whether users other than the owner can reach C{path} (every parent
    searchable) and read it.
    """
    path = path.resolve()
    for parent in [*reversed(path.parents), path]:
        if not parent.stat().st_mode & 0o001:
            return False
    return bool(path.stat().st_mode & 0o004)


def privilegedPort() -> int:
    """
    A free TCP port below 1024 on 127.0.0.1 (the caller is root).
    """
    for port in range(1023, 900, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise SkipTest("no free port below 1024")


class PrivilegeDropTests(SynchronousTestCase):
    """
    C{twistd --uid 65534 --gid 65534 clientid-mail}, started as root: the
    port (below 1024) is bound before the drop, the process runs as that
    user, owns its data directory, and serves logins that write to the
    store.
    """

    def setUp(self) -> None:
        if os.getuid() != 0:
            raise SkipTest("needs root to drop privileges (CI runs as root)")
        why = canRunServer()
        if why is not None:
            raise SkipTest(why)
        try:
            self.nobody = pwd.getpwuid(65534)
        except KeyError:
            raise SkipTest("no user 65534 here")
        # After the drop the server still imports modules (lazily): the
        # code must be readable by that user.
        for tree in (ROOT / "clientid_twisted", Path(sys.prefix)):
            if not _readableByOthers(tree):
                raise SkipTest(f"{tree} is not readable by other users, so not by uid 65534 after the drop")
        # Under /tmp with a traversable parent: the user must reach it.
        self.work = Path(tempfile.mkdtemp(prefix="clientid-uid-"))
        self.addCleanup(shutil.rmtree, self.work, ignore_errors=True)
        self.work.chmod(0o755)

    def test_dropAndServe(self) -> None:
        self.dropAndServe()

    def test_dropAndServeWithWorkers(self) -> None:
        """
        With C{--workers 2} (and C{--metrics}) the parent binds the
        privileged port as root, then the workers run as the user too and
        count into a metrics directory that user owns.
        """
        interpreter = Path(sys.executable).resolve()
        if not (_readableByOthers(interpreter) and interpreter.stat().st_mode & 0o001):
            raise SkipTest(f"{interpreter} cannot be run by uid 65534, which starts the workers after the drop")
        log = self.dropAndServe("--workers", "2", "--metrics", "tcp:0:interface=127.0.0.1")
        pids = [int(pid) for pid in re.findall(r"worker \d started, pid (\d+)", log)]
        self.assertEqual(len(pids), 2, log)
        self.assertEqual(sorted(self.workerUids), [65534, 65534])
        self.assertIn("AUTH succeeded for alice@example.test", "".join(re.findall(r"\[worker=\d [^\n]*", log)))

    def dropAndServe(self, *extra: str) -> str:
        """
        Start the server as root with C{--uid}, log in once over the
        privileged port, stop it; check who owns what.

        @return: The server's log.
        """
        dataDir = self.work / "data"
        dataDir.mkdir(mode=0o700)
        UserDatabase(dataDir / "users.json").addUser("alice@example.test", "hunter2")
        # A privileged port: bound as root before the drop, as 465 would be.
        port = privilegedPort()
        log = self.work / "server.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                twistd(
                    "-n", "--pidfile=", "--uid", "65534", "--gid", "65534", "clientid-mail",
                    "--data-dir", str(dataDir), "--smtps", f"tcp:{port}:interface=127.0.0.1", *extra,
                    cwd=self.work,
                ),
                cwd=self.work, env=environment(), stdout=output, stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while "SubmissionFactory (TLS) starting on" not in log.read_text() and time.monotonic() < deadline:
                if process.poll() is not None:
                    self.fail("server exited:\n" + log.read_text())
                time.sleep(0.1)
            import ssl

            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as s:
                readUntil(s, rb"^220 [^\r\n]*\r\n")
                s.sendall(b"EHLO client.example\r\nCLIENTID UUID 0f6a2c1e-3b7d-4e55-8f0a-6d2b9c1e7a44\r\n")
                readUntil(s, rb"(?m)^250 OK\r\n")
                s.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice@example.test\0hunter2") + b"\r\n")
                reply = readUntil(s, rb"(?m)^\d{3} [^\r\n]*\r\n")
            self.assertTrue(reply.startswith(b"235 "), reply + log.read_bytes())
            # Read once it answers: twistd logs "starting on" when it binds,
            # before it drops privileges; it answers only after, once the
            # reactor runs.
            status = Path(f"/proc/{process.pid}/status").read_text()
            self.assertRegex(status, r"(?m)^Uid:\s+65534\s+65534\s+65534\s+65534$")
            self.assertRegex(status, r"(?m)^Gid:\s+65534\s+65534\s+65534\s+65534$")
            self.workerUids = []
            for pid in re.findall(r"worker \d started, pid (\d+)", log.read_text()):
                workerStatus = Path(f"/proc/{pid}/status").read_text()
                self.workerUids.append(int(re.search(r"(?m)^Uid:\s+(\d+)", workerStatus).group(1)))  # type: ignore[union-attr]
        finally:
            process.terminate()
            process.wait(timeout=30)
        text = log.read_text()
        self.assertNotIn("unable to open database file", text)
        self.assertNotIn("Traceback", text)
        self.assertIn("given to uid 65534 gid 65534", text)
        for path in [dataDir, *dataDir.rglob("*")]:
            self.assertEqual((path.stat().st_uid, path.stat().st_gid), (65534, 65534), path)
        self.assertTrue(re.search(r"AUTH succeeded for alice@example.test", text))
        return text
