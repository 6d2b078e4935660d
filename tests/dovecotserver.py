"""
A throwaway Dovecot IMAP server for the gateway tests: its configuration,
users (a passwd-file passdb) and maildirs in a temporary directory, on a
free loopback port, trusting 127.0.0.1 for C{ID x-originating-ip}
(C{login_trusted_networks}), stopped and removed at the end.

Dovecot refuses to run its login processes as root: when the tests run as
root, logins run as Debian's C{dovenull} and the mail processes as
C{dovecot}, and the mail directory belongs to C{dovecot}; otherwise
everything runs as the current user.

Not a test module: the tests that use it are in C{test_gateway_imap}.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from clientid_twisted.testing import throwawayCertificate
from tests.services import freePort, requireProgram

__all__ = ["DovecotServer", "requireDovecot"]


def requireDovecot() -> str:
    """
    The path of C{dovecot}; skips (or, under CI, fails) without it.
    """
    return requireProgram("dovecot", "dovecot-imapd", "IMAP gateway")


def _users() -> tuple[str, str]:
    """
    (login user, mail user): who Dovecot's unprivileged processes run as.
    """
    if os.geteuid() != 0:
        name = pwd.getpwuid(os.geteuid()).pw_name
        return name, name
    return "dovenull", "dovecot"


class DovecotServer:
    """
    One Dovecot process (C{dovecot -F}) with an IMAP listener on loopback.

    @ivar port: The plaintext IMAP port (STARTTLS offered with C{ssl}).
    @ivar tlsPort: The implicit TLS port, or L{None} without C{ssl}.
    @ivar caFile: The PEM of Dovecot's certificate (for C{backend_ca}),
        or L{None} without C{ssl}.
    @ivar logPath: Dovecot's log.
    """

    def __init__(self, users: dict[str, str], ssl: bool = False, extra: str = "") -> None:
        """
        @param users: Account name to plaintext password.
        @param ssl: Serve STARTTLS and implicit TLS with a throwaway
            certificate.
        @param extra: More configuration lines.
        """
        self.program = requireDovecot()
        self.directory = Path(tempfile.mkdtemp(prefix="clientid-dovecot-"))
        # Dovecot's unprivileged processes must reach their files.
        self.directory.chmod(0o755)
        self.loginUser, self.mailUser = _users()
        self.mailDir = self.directory / "mail"
        self.mailDir.mkdir()
        self._chown(self.mailDir)
        self.logPath = self.directory / "dovecot.log"
        self.port = freePort()
        self.tlsPort: int | None = None
        self.caFile: Path | None = None
        passwd = self.directory / "passwd"
        passwd.write_text("".join(f"{user}:{{PLAIN}}{password}\n" for user, password in users.items()))
        sslLines = "ssl = no\n"
        tlsListener = "  inet_listener imaps {\n    port = 0\n  }\n"
        if ssl:
            certificate = throwawayCertificate()
            self.caFile = self.directory / "cert.pem"
            self.caFile.write_bytes(certificate.certificatePEM)
            keyFile = self.directory / "key.pem"
            keyFile.write_bytes(certificate.keyPEM)
            self.tlsPort = freePort()
            sslLines = f"ssl = yes\nssl_cert = <{self.caFile}\nssl_key = <{keyFile}\n"
            tlsListener = (
                f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.tlsPort}\n"
                "    ssl = yes\n  }\n"
            )
        d = self.directory
        self.configPath = d / "dovecot.conf"
        self.configPath.write_text(
            f"""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {self.logPath}
instance_name = clientid-test-{self.port}
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
mailbox_idle_check_interval = 1 secs
{sslLines}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
login_trusted_networks = 127.0.0.1/32
default_login_user = {self.loginUser}
default_internal_user = {self.mailUser}
default_internal_group = {self.mailUser}
mail_location = maildir:{self.mailDir}/%u
first_valid_uid = 1
login_log_format_elements = user=<%u> method=%m rip=%r rport=%b lip=%l mpid=%e %c
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={self.mailUser} gid={self.mailUser} home={self.mailDir}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
{tlsListener}  chroot =
}}
service anvil {{
  chroot =
}}
{extra}"""
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(self.mailUser)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> None:
        """
        Start Dovecot and wait until it accepts IMAP connections.
        """
        self._stderr = open(self.directory / "stderr.log", "ab")
        self.process = subprocess.Popen(
            [self.program, "-F", "-c", str(self.configPath)],
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        import socket

        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = (self.directory / "stderr.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"dovecot did not start:\n{output}\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.settimeout(5)
                    if s.recv(1024).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop Dovecot (keeping its files, for L{start} again).
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()

    def cleanUp(self) -> None:
        """
        Stop Dovecot and remove its directory.
        """
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.logPath.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def deliver(self, user: str, message: bytes) -> Path:
        """
        Put a message into C{user}'s INBOX (maildir C{new/}), as a delivery
        agent would.
        """
        home = self.mailDir / user
        for part in (home, home / "tmp", home / "new", home / "cur"):
            part.mkdir(exist_ok=True)
            self._chown(part)
        name = f"{time.time():.6f}.{os.getpid()}.{time.monotonic_ns()}.test"
        temporary = home / "tmp" / name
        temporary.write_bytes(message)
        self._chown(temporary)
        final = home / "new" / name
        temporary.rename(final)
        return final

    def inbox(self, user: str) -> list[bytes]:
        """
        The messages in C{user}'s INBOX, as stored.
        """
        home = self.mailDir / user
        return [
            path.read_bytes()
            for folder in ("new", "cur")
            if (home / folder).is_dir()
            for path in sorted((home / folder).iterdir())
        ]
