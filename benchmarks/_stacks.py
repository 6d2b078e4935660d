"""
The two server stacks the session benchmark compares, run as a child
process: C{python -m benchmarks._stacks --stack ours|bare --protocol smtp|imap
--data-dir D --port-file F [--checker fast|scrypt] [--log-file PATH]
[--certificate rsa2048|ec256]}.

Both share everything but CLIENTID: the same TLS certificate, the same
password checker, the same maildir delivery and mailbox, C{TCP_NODELAY},
the same log observer.  "ours" is the runnable server's protocols with its
device policy (C{learn} on the SQLite store unless the data directory's
C{clientid.toml} says otherwise) in front of the password checker, once;
"bare" is plain C{twisted.mail} ESMTP / IMAP4Server with the password
checker alone; "protocol" is ours without the device policy (the CLIENTID
protocols and the server's limits alone), for the breakdown of where ours
spends its time.

The password checker is built here for every stack (L{passwordChecker}),
never taken from the assembled server's portal: that one is already the
device policy's L{ClientIDChecker}, so "bare" would run the policy and
"ours" would run it twice.

With C{--log-file}, events go where a real C{twistd --logfile} sends them:
Twisted's C{textFileLogObserver} on a L{LogFile} (without it they only fill
the in-memory buffer that the log beginner keeps until someone begins
logging, which costs next to nothing).  C{--certificate rsa2048} serves an
RSA-2048 certificate, as most operators have, instead of the development
certificate's P-256 key (cheaper per handshake).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.mail import imap4, smtp
from twisted.protocols.tls import TLSMemoryBIOFactory

from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._manage import resultOf
from clientid_twisted.server.assembly import assembleServer
from clientid_twisted.server.delivery import MailRealm
from clientid_twisted.server.net import setNoDelay
from clientid_twisted.server.tls import selfSignedCertificate
from clientid_twisted.server.users import ScryptChecker

PASSWORD = "bench password"
USERS = [f"user{n}@bench.test" for n in range(64)]


@implementer(ICredentialsChecker)
class FastChecker:
    """
    A checker that costs next to nothing, so protocol and policy cost are
    what the benchmark sees (the real scrypt checker is measured apart).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self._inner = InMemoryUsernamePasswordDatabaseDontUse(
            **{u: PASSWORD.encode() for u in USERS}
        )

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes]:
        return self._inner.requestAvatarId(credentials)


class BareESMTP(smtp.ESMTP):
    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        super().connectionMade()


class BareIMAP4Server(imap4.IMAP4Server):
    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        super().connectionMade()


class BareESMTPFactory(smtp.SMTPFactory):
    protocol = BareESMTP

    def __init__(self, portal: Portal, context: Any) -> None:
        super().__init__(portal)
        self.context = context

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        p.ctx = self.context
        p.challengers = {b"PLAIN": imap4.PLAINCredentials, b"LOGIN": smtp.LOGINCredentials}
        return p


class BareIMAP4Factory:
    """
    Twisted's IMAP4Server, as plainly as Twisted offers it.

    @ivar scheduler: How FETCH output is paced, as
        L{ClientIDIMAP4Factory.scheduler
        <clientid_twisted.imap.ClientIDIMAP4Factory>}; L{None} for
        Twisted's default.
    """

    scheduler: Any = None

    def __init__(self, portal: Portal, context: Any) -> None:
        self.portal = portal
        self.context = context

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def buildProtocol(self, addr: Any) -> Any:
        p = BareIMAP4Server(
            chal={b"PLAIN": imap4.PLAINCredentials, b"LOGIN": imap4.LOGINCredentials},
            contextFactory=self.context,
            scheduler=self.scheduler,
        )
        p.portal = self.portal
        p.factory = self
        return p


def passwordChecker(server: Any, checker: str) -> ICredentialsChecker:
    """
    The password check alone, the same for every stack: L{FastChecker}, or
    the runnable server's scrypt checker on its users file.
    """
    if checker == "fast":
        return FastChecker()
    return ScryptChecker(server.users)


def portalChecker(stack: str, server: Any, checker: str) -> ICredentialsChecker:
    """
    What a stack's portal checks logins with: the password checker,
    wrapped once in the device policy for "ours".
    """
    inner = passwordChecker(server, checker)
    if stack == "ours":
        return ClientIDChecker(inner, server.authentication.policy)
    return inner


def writeRSACertificate(dataDir: Path, hostname: str) -> None:
    """
    Put a self-signed RSA-2048 certificate where the server looks for its
    development certificate (C{tls/selfsigned.*}), unless one is there.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    directory = dataDir / "tls"
    if (directory / "selfsigned.pem").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificatePEM, keyPEM = selfSignedCertificate(hostname, key=key)
    (directory / "selfsigned.key").write_bytes(keyPEM)
    (directory / "selfsigned.pem").write_bytes(certificatePEM)


def buildFactory(
    stack: str, protocol: str, dataDir: Path, checker: str, imapBackend: str | None = None
) -> tuple[Any, Any]:
    """
    Build the listening factory for one stack.

    @param imapBackend: For the "gateway" stack: the IMAP backend's
        endpoint (C{--imap-backend}); its logins and sessions go there.
    @return: (factory, the assembled server).
    """
    if stack == "gateway":
        # The runnable server's IMAP gateway, exactly as twistd builds it.
        server = resultOf(
            assembleServer(dataDir, hostname="bench.test", imapBackend=imapBackend)
        )
        return server.imapFactory, server
    server = resultOf(assembleServer(dataDir, hostname="bench.test"))
    for user in USERS:
        if not server.users.exists(user):
            server.users.addUser(user, PASSWORD)
    front = portalChecker(stack, server, checker)
    if stack in ("ours", "protocol"):
        # The runnable server's protocols; "ours" with its policy (learn,
        # SQLite store by default) around the same password checker as
        # bare, "protocol" without it, to show what the protocols alone
        # cost.
        portal = Portal(server.portal.realm, [front])
        factory = server.smtpFactory if protocol == "smtp" else server.imapFactory
        factory.portal = portal
        return factory, server
    portal = Portal(MailRealm(dataDir, server.users, "bench.test"), [front])
    if protocol == "smtp":
        bare: Any = BareESMTPFactory(portal, server.tlsOptions)
        bare.domain = b"bench.test"
    else:
        bare = BareIMAP4Factory(portal, server.tlsOptions)
    return bare, server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", choices=["ours", "protocol", "bare", "gateway"], required=True)
    parser.add_argument("--imap-backend", default=None, help="the gateway stack's backend endpoint")
    parser.add_argument("--protocol", choices=["smtp", "imap"], required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--checker", choices=["fast", "scrypt"], default="fast")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--log-file", type=Path, default=None,
                        help="log as twistd --logfile does (default: no log)")
    parser.add_argument("--certificate", choices=["ec256", "rsa2048"], default="ec256")
    parser.add_argument("--adopt-fd", type=int, default=None,
                        help="serve on this inherited listening socket (several processes, one port)")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    if args.log_file is not None:
        logFile = LogFile.fromFullPath(str(args.log_file))
        globalLogBeginner.beginLoggingTo([textFileLogObserver(logFile)])
    if args.certificate == "rsa2048":
        writeRSACertificate(args.data_dir, "bench.test")
    factory, server = buildFactory(
        args.stack, args.protocol, args.data_dir, args.checker, args.imap_backend
    )
    if args.implicit_tls:
        factory = TLSMemoryBIOFactory(server.tlsOptions, False, factory)
    if args.adopt_fd is not None:
        import os
        import socket

        # adoptStreamPort wants it non-blocking (as the endpoint does).
        os.set_blocking(args.adopt_fd, False)
        port = reactor.adoptStreamPort(args.adopt_fd, socket.AF_INET, factory)
    else:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=512)
    args.port_file.write_text(str(port.getHost().port))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
