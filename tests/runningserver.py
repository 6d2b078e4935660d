"""
Run C{twistd -n clientid-mail} as a child process on loopback, for tests
that attack the real server over real sockets: its ports, its log, its
memory (RSS from /proc), and a SIGTERM.

The child runs this interpreter's twistd, so it serves the source tree the
tests import.  Not a test module: the tests that use it are in
C{test_hardening} and C{test_fuzz}.
"""

from __future__ import annotations

import base64
import imaplib
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from clientid_twisted.server.users import UserDatabase
from clientid_twisted.testing import throwawayCertificate

__all__ = [
    "RunningServer",
    "PASSWORD",
    "USERS",
    "connect",
    "readUntil",
    "readAll",
    "closedWithin",
    "canRunServer",
    "fetchInbox",
]

PASSWORD = "correct horse battery"
USERS = ("alice@example.test", "bob@example.test")

_FACTORIES = {
    "smtp": "SubmissionFactory",
    "smtps": "SubmissionFactory (TLS)",
    "imap": "IMAP4Factory",
    "imaps": "IMAP4Factory (TLS)",
}


class RunningServer:
    """
    One C{twistd clientid-mail} child process.

    @ivar ports: Listening port by protocol name (smtp, smtps, imap, imaps).
    @ivar dataDir: The server's data directory.
    @ivar context: Client TLS context that trusts the server's certificate.
    """

    def __init__(
        self,
        work: Path,
        config: str,
        protocols: tuple[str, ...] = ("smtp", "smtps", "imap", "imaps"),
        store: str | None = None,
        arguments: tuple[str, ...] = (),
        listen: str = "tcp:0:interface=127.0.0.1",
    ) -> None:
        """
        @param config: The server's C{clientid.toml}.
        @param store: Passed as C{--store} (a store URL), if given.
        @param arguments: More options for C{twistd clientid-mail}.
        @param listen: The endpoint every protocol listens on (its port 0),
            e.g. C{haproxy:tcp:0:interface=127.0.0.1} for the PROXY protocol.
        """
        work = Path(work).resolve()
        work.mkdir(parents=True, exist_ok=True)
        self.dataDir = work / "data"
        self.dataDir.mkdir(mode=0o700, exist_ok=True)
        (self.dataDir / "clientid.toml").write_text(config)
        certificate = throwawayCertificate()
        certificatePath = work / "cert.pem"
        keyPath = work / "key.pem"
        certificatePath.write_bytes(certificate.certificatePEM)
        keyPath.write_bytes(certificate.keyPEM)
        users = UserDatabase(self.dataDir / "users.json")
        for user in USERS:
            if not users.exists(user):
                users.addUser(user, PASSWORD)
        self.context = ssl.create_default_context(cadata=certificate.certificatePEM.decode())
        self.logPath = work / "server.log"
        self._logFile: IO[bytes] = open(self.logPath, "wb")
        command = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "clientid-mail",
            "--data-dir", str(self.dataDir),
            "--certificate", str(certificatePath), "--private-key", str(keyPath),
        ]
        if store is not None:
            command += ["--store", store]
        command += list(arguments)
        for name in protocols:
            command += [f"--{name}", listen]
        # The source tree first on the child's path, absolute: the child
        # runs in WORK, where a relative PYTHONPATH (".") means nothing.
        root = str(Path(__file__).resolve().parent.parent)
        path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            command,
            stdout=self._logFile,
            stderr=subprocess.STDOUT,
            cwd=work,
            env=dict(os.environ, PYTHONPATH=path),
        )
        self.ports: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while len(self.ports) < len(protocols):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("server did not start:\n" + self.log())
            log = self.log()
            for name in protocols:
                match = re.search(re.escape(_FACTORIES[name]) + r"(?: \(PROXY\))? starting on (\d+)", log)
                if match is not None:
                    self.ports[name] = int(match.group(1))
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.logPath.read_text(errors="replace")

    def rss(self) -> int:
        """
        The server's resident memory now, in bytes.
        """
        return self._status("VmRSS")

    def peakRSS(self) -> int:
        """
        The server's peak resident memory so far, in bytes.
        """
        return self._status("VmHWM")

    def _status(self, field: str) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(field + r":\s+(\d+) kB", status)
        assert match is not None, status
        return int(match.group(1)) * 1024

    def terminate(self) -> None:
        """
        Send SIGTERM, as an init system does to stop the server.
        """
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> str:
        """
        Stop the server (SIGTERM, then SIGKILL if it hangs) and return its
        log.
        """
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._logFile.close()
        return self.log()


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    """
    A TCP connection to the server from the loopback address C{source}
    (any of 127.0.0.0/8, so tests can play different clients).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def readUntil(s: socket.socket, pattern: bytes, limit: int = 1 << 20) -> bytes:
    """
    Read until the bytes read match the regular expression C{pattern} (or
    the connection closes, or the socket times out); return them.
    """
    data = b""
    while re.search(pattern, data) is None and len(data) < limit:
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def readAll(s: socket.socket) -> bytes:
    """
    Read until the server closes the connection (or the socket times out).
    """
    return readUntil(s, rb"(?!)")


def closedWithin(s: socket.socket, seconds: float) -> tuple[bytes, float]:
    """
    Read until the connection closes; return what was read and how long it
    took.
    """
    start = time.monotonic()
    s.settimeout(seconds)
    data = readAll(s)
    return data, time.monotonic() - start


def canRunServer() -> str | None:
    """
    Why these tests cannot run here (no /proc, or 127.0.0.0/8 not all
    loopback), or L{None}.
    """
    if not Path("/proc/self/status").exists():
        return "needs /proc"
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.2", 0))
    except OSError:
        return "needs 127.0.0.2 on loopback"
    return None


def smtpLogin(port: int, context: ssl.SSLContext, user: str, password: str, token: str, timeout: float = 30) -> int:
    """
    Log C{user} in with C{smtplib} (an independent SMTP client) over
    STARTTLS after C{CLIENTID UUID token}; the reply code to C{AUTH PLAIN}.
    """
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as client:
        client.ehlo("laptop")
        client.starttls(context=context)
        client.ehlo("laptop")
        assert client.docmd("CLIENTID", "UUID " + token)[0] == 250
        secret = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return client.docmd("AUTH", "PLAIN " + secret)[0]


def fetchInbox(port: int, context: ssl.SSLContext, user: str, password: str) -> list[bytes]:
    """
    Every message in C{user}'s INBOX, read with C{imaplib} over STARTTLS
    (an independent IMAP client), without setting C{\\Seen}.
    """
    client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        client.starttls(ssl_context=context)
        client.login(user, password)
        client.select("INBOX")
        _, numbers = client.search(None, "ALL")
        messages = []
        for number in numbers[0].split():
            _, data = client.fetch(number, "(BODY.PEEK[])")
            messages.append(data[0][1])
        return messages
    finally:
        client.logout()
