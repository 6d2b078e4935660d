"""
The two server stacks the session benchmark compares, run as a child
process: C{python -m benchmarks._stacks --stack ours|bare --protocol smtp|imap
--data-dir D --port-file F}.

Both share everything but CLIENTID: the same TLS certificate, the same
checker, the same maildir delivery and mailbox, C{TCP_NODELAY}.  "ours" is
the runnable server's protocols with its device policy (C{learn} on the
SQLite store unless the data directory's C{clientid.toml} says otherwise)
in front of the checker;
"bare" is plain C{twisted.mail} ESMTP / IMAP4Server; "protocol" is ours
without the device policy (the CLIENTID protocols and the server's limits
alone), for the breakdown of where ours spends its time.
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
from twisted.mail import imap4, smtp
from twisted.protocols.tls import TLSMemoryBIOFactory

from clientid_twisted.policy.checker import ClientIDChecker
from clientid_twisted.server.assembly import assembleServer
from clientid_twisted.server.delivery import MailRealm
from clientid_twisted.server.net import setNoDelay

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
    """

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
        )
        p.portal = self.portal
        p.factory = self
        return p


def buildFactory(stack: str, protocol: str, dataDir: Path, checker: str) -> tuple[Any, Any]:
    """
    Build the listening factory for one stack.

    @return: (factory, the assembled server).
    """
    server = assembleServer(dataDir, hostname="bench.test")
    for user in USERS:
        if not server.users.exists(user):
            server.users.addUser(user, PASSWORD)
    inner = FastChecker() if checker == "fast" else server.portal.checkers[IUsernamePassword]
    if stack in ("ours", "protocol"):
        # The runnable server's policy (learn, SQLite store by default)
        # around the same password checker as bare; "protocol" leaves the
        # policy out, to show what the protocols alone cost.
        front = ClientIDChecker(inner, server.authentication.policy) if stack == "ours" else inner
        portal = Portal(server.portal.realm, [front])
        factory = server.smtpFactory if protocol == "smtp" else server.imapFactory
        factory.portal = portal
        return factory, server
    portal = Portal(MailRealm(dataDir, server.users, "bench.test"), [inner])
    if protocol == "smtp":
        bare: Any = BareESMTPFactory(portal, server.tlsOptions)
        bare.domain = b"bench.test"
    else:
        bare = BareIMAP4Factory(portal, server.tlsOptions)
    return bare, server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stack", choices=["ours", "protocol", "bare"], required=True)
    parser.add_argument("--protocol", choices=["smtp", "imap"], required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--checker", choices=["fast", "scrypt"], default="fast")
    parser.add_argument("--implicit-tls", action="store_true")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    factory, server = buildFactory(args.stack, args.protocol, args.data_dir, args.checker)
    if args.implicit_tls:
        factory = TLSMemoryBIOFactory(server.tlsOptions, False, factory)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=512)
    args.port_file.write_text(str(port.getHost().port))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
