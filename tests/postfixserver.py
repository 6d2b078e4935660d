# -*- test-case-name: tests.test_postfixserver -*-
"""
A private Postfix instance for tests: its own configuration, queue, data
and mail directories in a temporary directory, listening only on loopback
ports chosen at start, stopped and removed at the end.

The class is reusable: every L{PostfixServer} has its own directories,
ports and master process, so one test may run two at once (for instance a
submission backend for the gateway and a smarthost for the relay queue).

What the instance does:
  - an MTA port (L{PostfixServer.smtpPort}, C{smtpd} with no login) that
    accepts mail for L{PostfixServer.domain} and delivers it with Postfix's
    C{virtual} agent into one maildir per mailbox under
    L{PostfixServer.mailDirectory}; mail for any other domain is refused
    (C{reject_unauth_destination}) and nothing ever leaves the machine
    (C{default_transport = error});
  - when given a Dovecot authentication socket (C{saslSocket}), a
    submission port (L{PostfixServer.submissionPort}) set up as Postfix's
    own C{master.cf} example sets one up: STARTTLS required, AUTH through
    Dovecot SASL only under TLS, relaying only for logged-in clients, and
    a sender address only for the account that owns it
    (C{reject_sender_login_mismatch});
  - STARTTLS on both ports with a throwaway certificate
    (L{PostfixServer.certificate}, trusted by L{PostfixServer.context});
  - C{XCLIENT} for the hosts in C{xclientHosts}
    (C{smtpd_authorized_xclient_hosts});
  - its log in a file (C{maillog_file} through the C{postlog} service),
    read with L{PostfixServer.log}.

Postfix needs root to start (its master binds the ports and runs the
daemons as C{mail_owner}, the C{postfix} user the Debian package creates);
the test directories are made readable for that user.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from twisted.trial.unittest import SkipTest

from clientid_twisted.testing import throwawayCertificate
from tests.services import _SEARCH_PATH, freePort, requireProgram

__all__ = ["PostfixServer"]

_PURPOSE = "SMTP gateway (real Postfix)"

# Postfix's services, as its own master.cf.proto has them, but none
# chrooted (the test directory is not a chroot jail).
_MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixServer:
    """
    One private Postfix (see the module docstring).  Several may run at
    once; each keeps its ports across L{stop} and L{start}.

    @ivar directory: The temporary directory holding everything.
    @ivar domain: The mail domain it delivers locally.
    @ivar mailboxes: The local parts it has a maildir for.
    @ivar smtpPort: Its MTA port (no login).
    @ivar submissionPort: Its submission port (STARTTLS, then AUTH), or
        L{None} without a SASL socket.
    @ivar certificate: The certificate its STARTTLS presents.
    @ivar context: A client TLS context that trusts only L{certificate}.
    @ivar caFile: L{certificate} as a PEM file (for a C{backend_ca}).
    """

    def __init__(
        self,
        domain: str = "test.example",
        mailboxes: Sequence[str] = ("alice", "bob"),
        saslSocket: str | None = None,
        xclientHosts: Sequence[str] = ("127.0.0.1",),
        main: Mapping[str, str] = {},
        submissionTLS: bool = True,
        deliverInto: tuple[Path, str] | None = None,
    ) -> None:
        """
        @param deliverInto: Another server's mail directory and the user
            that owns it, to deliver into instead of this instance's own:
            each mailbox is the maildir C{DIRECTORY/local@domain/}, as
            Dovecot's C{mail_location = maildir:DIRECTORY/%u} reads it.
        @param saslSocket: The path of a Dovecot authentication socket
            (C{unix_listener}) for the submission port's AUTH; without
            one there is no submission port.
        @param submissionTLS: Whether the submission port requires
            STARTTLS before AUTH (as on a public port); L{False} offers
            AUTH in plaintext, as for a gateway on loopback.
        @param xclientHosts: The addresses allowed to send C{XCLIENT}.
        @param main: More C{main.cf} settings, applied last.
        """
        self.program = requireProgram("postfix", "postfix", _PURPOSE)
        _requireRoot()
        owner = pwd.getpwnam("postfix")
        self._uid, self._gid = owner.pw_uid, owner.pw_gid
        self._deliverInto = deliverInto
        mailOwner = pwd.getpwnam(deliverInto[1] if deliverInto else "postfix")
        self._mailUid, self._mailGid = mailOwner.pw_uid, mailOwner.pw_gid
        self.directory = Path(tempfile.mkdtemp(prefix="clientid-postfix-"))
        self.directory.chmod(0o755)
        self.domain = domain
        self.mailboxes = list(mailboxes)
        self.smtpPort = freePort()
        self.submissionPort = freePort() if saslSocket is not None else None
        self.certificate = throwawayCertificate()
        self.context = ssl.create_default_context(cadata=self.certificate.certificatePEM.decode())
        self.caFile = str(self.directory / "postfix.crt")
        self._running = False
        self._writeFiles(saslSocket, xclientHosts, main, submissionTLS)

    @property
    def configDirectory(self) -> Path:
        return self.directory / "etc"

    @property
    def mailDirectory(self) -> Path:
        return self._deliverInto[0] if self._deliverInto else self.directory / "mail"

    @property
    def logPath(self) -> Path:
        return self.directory / "maillog"

    def _writeFiles(
        self,
        saslSocket: str | None,
        xclientHosts: Sequence[str],
        main: Mapping[str, str],
        submissionTLS: bool,
    ) -> None:
        directory = self.directory
        for name, owner in [("etc", None), ("queue", None), ("data", True), ("mail", True)]:
            path = directory / name
            path.mkdir(mode=0o755)
            if owner:
                os.chown(path, self._uid, self._gid)
        Path(self.caFile).write_bytes(self.certificate.certificatePEM)
        key = directory / "etc" / "postfix.key"
        key.write_bytes(self.certificate.keyPEM)
        key.chmod(0o600)
        etc = self.configDirectory
        (etc / "vmailbox").write_text(
            "".join(
                f"{box}@{self.domain} {self.maildir(box).name}/\n" for box in self.mailboxes
            )
        )
        (etc / "senders").write_text(
            "".join(f"{box}@{self.domain} {box}@{self.domain}\n" for box in self.mailboxes)
        )
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(directory / "queue"),
            "data_directory": str(directory / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "mx." + self.domain,
            "mydomain": self.domain,
            "mydestination": "",
            "mynetworks": "127.0.0.1/32",
            "alias_maps": "",
            "alias_database": "",
            "maillog_file": str(self.logPath),
            "maillog_file_prefixes": str(directory),
            "smtpd_peername_lookup": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": str(self.mailDirectory),
            "virtual_mailbox_maps": f"texthash:{etc / 'vmailbox'}",
            "virtual_uid_maps": f"static:{self._mailUid}",
            "virtual_gid_maps": f"static:{self._mailGid}",
            "virtual_minimum_uid": "1",
            "default_transport": "error:no mail leaves a test",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination",
            "smtpd_authorized_xclient_hosts": ", ".join(xclientHosts),
            "smtpd_tls_cert_file": self.caFile,
            "smtpd_tls_key_file": str(key),
            "smtpd_tls_security_level": "may",
            "smtpd_sender_login_maps": f"texthash:{etc / 'senders'}",
        }
        services = [f"127.0.0.1:{self.smtpPort} inet n - n - - smtpd\n"]
        if saslSocket is not None:
            settings.update(
                {
                    "smtpd_sasl_type": "dovecot",
                    "smtpd_sasl_path": saslSocket,
                }
            )
            services.append(
                f"127.0.0.1:{self.submissionPort} inet n - n - - smtpd\n"
                "  -o syslog_name=postfix/submission\n"
                f"  -o smtpd_tls_security_level={'encrypt' if submissionTLS else 'none'}\n"
                "  -o smtpd_sasl_auth_enable=yes\n"
                f"  -o smtpd_tls_auth_only={'yes' if submissionTLS else 'no'}\n"
                "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
                "  -o smtpd_sender_restrictions=reject_sender_login_mismatch\n"
                "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
                "  -o smtpd_forbid_bare_newline=normalize\n"
            )
        settings.update(main)
        (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        (etc / "master.cf").write_text("".join(services) + _MASTER_SERVICES)
        # Postfix programs wait (up to two seconds, in 0.3 s naps) while
        # a configuration file looks freshly written; these are complete.
        past = time.time() - 60
        for path in etc.iterdir():
            os.utime(path, (past, past))

    def _postfix(self, *command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.program, "-c", str(self.configDirectory), *command],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def _makeQueue(self) -> None:
        """
        Create the queue directories that are missing, with the owner,
        group and mode Postfix's manifest (C{postfix-files}) gives them,
        and leave the C{quick-start} marker.
        """
        queue = self.directory / "queue"
        manifest = Path(self._postconf("meta_directory")) / "postfix-files"
        for line in manifest.read_text().splitlines():
            fields = line.split(":")
            if len(fields) < 5 or fields[1] != "d":
                continue
            name, _, owner, group, mode = fields[:5]
            if not name.startswith("$queue_directory/"):
                continue
            path = queue / name.split("/", 1)[1]
            path.mkdir(exist_ok=True)
            path.chmod(int(mode, 8))
            uid = self._uid if owner == "$mail_owner" else 0
            gid = grp.getgrnam("postdrop").gr_gid if group == "$setgid_group" else 0
            os.chown(path, uid, gid)
        (queue / "quick-start").touch()

    def _postconf(self, name: str) -> str:
        return subprocess.run(
            [
                shutil.which("postconf", path=_SEARCH_PATH) or "postconf",
                "-c",
                str(self.configDirectory),
                "-h",
                name,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()

    def isRunning(self) -> bool:
        """
        Whether its master process runs (C{postfix status}).
        """
        return self._postfix("status").returncode == 0

    def start(self) -> PostfixServer:
        """
        Start it: C{postfix start} returns once the master has bound the
        ports.

        Its integrity checks (C{check-fatal}, C{check-warn}: seconds of
        C{find} over the installed files on every start) are skipped with
        Postfix's own C{quick-start} marker, since L{_makeQueue} has just
        made the queue the way C{post-install} would.
        """
        self._makeQueue()
        started = self._postfix("start")
        if started.returncode != 0:
            message = f"postfix did not start:\n{started.stdout}{started.stderr}\n{self.log()}"
            # Leave nothing behind: the caller has no instance to clean up.
            self._running = True
            self.cleanUp()
            raise RuntimeError(message)
        self._running = True
        return self

    def stop(self) -> None:
        """
        Stop it and wait until its master and daemons are gone (C{postfix
        stop} waits, and kills them after five seconds).
        """
        if not self._running:
            return
        self._running = False
        self._postfix("stop")

    def cleanUp(self) -> None:
        """
        Stop it and remove its directory.
        """
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        """
        Its log so far.
        """
        try:
            return self.logPath.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def waitForLog(self, text: str, timeout: float = 10.0) -> str:
        """
        Wait until C{text} is in its log; the log.

        @raise AssertionError: If it is not there in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the Postfix log:\n{log}")
            time.sleep(0.05)

    def maildir(self, mailbox: str) -> Path:
        """
        The maildir that C{mailbox}'s mail is delivered to.
        """
        if self._deliverInto:
            return self.mailDirectory / f"{mailbox}@{self.domain}"
        return self.mailDirectory / mailbox

    def messages(self, mailbox: str) -> list[bytes]:
        """
        The messages delivered to C{mailbox} so far, oldest first, as
        stored (with the C{Return-Path} and C{Received} lines Postfix adds).
        """
        new = self.maildir(mailbox) / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda path: path.stat().st_mtime_ns)
        return [path.read_bytes() for path in files]

    def waitForMessages(self, mailbox: str, count: int = 1, timeout: float = 10.0) -> list[bytes]:
        """
        Wait until C{mailbox} has at least C{count} messages; them.

        @raise AssertionError: If it does not in time.
        """
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages(mailbox)
            if len(messages) >= count:
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{mailbox} has {len(messages)} messages, not {count}:\n{self.log()}"
                )
            time.sleep(0.05)


def _requireRoot() -> None:
    """
    Postfix's master starts only as root (it binds the ports, then runs
    its daemons as C{mail_owner}): skip otherwise, or fail under C{CI}.
    """
    if os.geteuid() == 0:
        return
    message = "Postfix's master must be started as root; these tests are not"
    if os.environ.get("CI"):
        raise AssertionError(f"{message} (CI is set: run the tests as root)")
    raise SkipTest(f"{message}: the {_PURPOSE} tests are skipped")
