# -*- test-case-name: tests.test_examples -*-
"""
Embedding example: an existing Twisted ESMTP server gains CLIENTID.

The server below is what a Twisted application already has: an C{ESMTP}
subclass, its own portal and realm, and a realm that keeps messages in
memory.  Two changes give it CLIENTID (both marked C{CLIENTID:} below):

    1. C{ClientIDESMTPMixin} goes before C{smtp.ESMTP} in the protocol's
       bases;
    2. the portal's checker is wrapped in C{ClientIDChecker} with a policy:
       here the built-in C{DevicePolicy} in allowlist mode, on a
       C{MemoryStore} holding one approved device.

Run it::

    python examples/esmtp_server.py [PORT]     # serve on 127.0.0.1:PORT (2587)
    python examples/esmtp_server.py --selftest # one smtplib session, prints OK

The server stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import base64
import os
import smtplib
import ssl as stdlibssl
import sys
from email.message import EmailMessage
from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker, InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, task, threads
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.mail import smtp
from twisted.mail.imap4 import PLAINCredentials

from clientid_twisted.cred import ClientIdentity, IdentityHasher
from clientid_twisted.interfaces import IClientIdentifiedCredentials
from clientid_twisted.policy import ClientIDChecker, DevicePolicy, LogAlertObserver, PolicyConfig
from clientid_twisted.smtp import ClientIDESMTPMixin
from clientid_twisted.store import APPROVED, MemoryStore
from clientid_twisted.testing import throwawayCertificate

DEFAULT_PORT = 2587
ACCOUNT = "alice@example.test"
PASSWORD = "correct horse battery staple"
APPROVED_DEVICE = ClientIdentity("UUID", "5b0e0c1e-laptop-token-9f1d-7a44c0de")
UNKNOWN_DEVICE = ClientIdentity("UUID", "77aa01b2-stranger-token-c3d4e5f6")

log = Logger(namespace="esmtp_server")


# -- the existing server: realm, message store, protocol ----------------------


class MemoryMessageStore:
    """
    Where delivered messages go: a list of (recipient, bytes) per process.
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []


@implementer(smtp.IMessage)
class _Message:
    def __init__(self, store: MemoryMessageStore, recipient: str) -> None:
        self.store, self.recipient, self.lines = store, recipient, []

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def eomReceived(self) -> defer.Deferred[bytes]:
        self.store.messages.append((self.recipient, b"\n".join(self.lines) + b"\n"))
        return defer.succeed(b"queued in memory")

    def connectionLost(self) -> None:
        self.lines = []


@implementer(smtp.IMessageDelivery)
class MemoryDelivery:
    """
    What an authenticated user may do: send to anyone in example.test.
    """

    def __init__(self, store: MemoryMessageStore, avatarId: bytes) -> None:
        self.store, self.avatarId = store, avatarId

    def receivedHeader(self, helo: Any, origin: Any, recipients: Any) -> bytes:
        return b"Received: from " + helo[0] + b" by esmtp_server example"

    def validateFrom(self, helo: Any, origin: smtp.Address) -> smtp.Address:
        return origin

    def validateTo(self, user: smtp.User) -> Any:
        if user.dest.domain != b"example.test":
            raise smtp.SMTPBadRcpt(user)
        recipient = str(user.dest)
        return lambda: _Message(self.store, recipient)


@implementer(IRealm)
class MemoryRealm:
    def __init__(self, store: MemoryMessageStore) -> None:
        self.store = store

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> Any:
        if smtp.IMessageDelivery in interfaces:
            return smtp.IMessageDelivery, MemoryDelivery(self.store, avatarId), lambda: None
        raise NotImplementedError()


# CLIENTID (1 of 2): the mixin goes first in the bases.
class MyESMTP(ClientIDESMTPMixin, smtp.ESMTP):
    """
    The application's ESMTP protocol, unchanged but for the mixin.
    """


class MyESMTPFactory(smtp.SMTPFactory):
    protocol = MyESMTP

    def __init__(self, portal: Portal, tlsOptions: Any, hasher: IdentityHasher) -> None:
        smtp.SMTPFactory.__init__(self, portal)
        self.tlsOptions = tlsOptions
        self.hasher = hasher

    def buildProtocol(self, addr: Any) -> Any:
        p = smtp.SMTPFactory.buildProtocol(self, addr)
        p.ctx = self.tlsOptions
        p.challengers = {b"PLAIN": PLAINCredentials, b"LOGIN": smtp.LOGINCredentials}
        # So the fingerprints in the protocol's log match the policy's.
        p.identityHasher = self.hasher
        return p


@implementer(ICredentialsChecker)
class ShowIdentity:
    """
    A pass-through checker that logs what reaches it: the credentials carry
    the CLIENTID (type and keyed fingerprint logged, never the token).
    """

    def __init__(self, inner: Any, hasher: IdentityHasher) -> None:
        self.inner, self.hasher = inner, hasher
        self.credentialInterfaces = inner.credentialInterfaces

    def requestAvatarId(self, credentials: Any) -> Any:
        identity = None
        if IClientIdentifiedCredentials.providedBy(credentials):
            identity = credentials.clientIdentity
        print(
            "checker sees {} with CLIENTID {}".format(
                credentials.username.decode("utf-8", "replace"),
                f"type={identity.type} fingerprint={self.hasher.fingerprint(identity)}"
                if identity is not None
                else "(none)",
            ),
            flush=True,
        )
        return self.inner.requestAvatarId(credentials)


def buildServer(reactor: Any) -> tuple[MyESMTPFactory, MemoryMessageStore]:
    """
    The application's server, with the two CLIENTID changes.
    """
    messages = MemoryMessageStore()
    passwords = InMemoryUsernamePasswordDatabaseDontUse()
    passwords.addUser(ACCOUNT.encode(), PASSWORD.encode())

    # CLIENTID (2 of 2): wrap the checker.  One approved device; any other
    # device is refused exactly like a wrong password.
    hasher = IdentityHasher(os.urandom(32))
    store = MemoryStore(reactor)
    store.setDeviceState(
        ACCOUNT,
        hasher.digest(APPROVED_DEVICE),
        APPROVED_DEVICE.type,
        hasher.fingerprint(APPROVED_DEVICE),
        APPROVED,
        None,
    )
    policy = DevicePolicy(
        PolicyConfig(devices="allowlist"), store, hasher, [LogAlertObserver()], reactor
    )
    checker = ClientIDChecker(ShowIdentity(passwords, hasher), policy)

    portal = Portal(MemoryRealm(messages), [checker])
    tlsOptions = throwawayCertificate("localhost").options()
    return MyESMTPFactory(portal, tlsOptions, hasher), messages


# -- running it ------------------------------------------------------------------


def _session(port: int, identity: ClientIdentity) -> int:
    """
    One blocking smtplib session over STARTTLS; the AUTH reply code (and the
    message sent when accepted).
    """
    context = stdlibssl.create_default_context(
        cadata=throwawayCertificate("localhost").certificatePEM.decode("ascii")
    )
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.net")
        client.starttls(context=context)
        code, reply = client.ehlo("laptop.example.net")
        assert b"CLIENTID" in reply, reply
        assert client.docmd("CLIENTID", f"{identity.type} {identity.token}")[0] == 250
        secret = base64.b64encode(f"\0{ACCOUNT}\0{PASSWORD}".encode()).decode()
        code = client.docmd("AUTH", "PLAIN " + secret)[0]
        if code == 235:
            client.ehlo_resp = None  # smtplib: authenticated by hand
            message = EmailMessage()
            message["From"], message["To"] = ACCOUNT, "bob@example.test"
            message["Subject"] = "sent with CLIENTID"
            message.set_content("Hello from an approved device.\n")
            client.send_message(message)
        return code


@defer.inlineCallbacks
def selftest(reactor: Any) -> Any:
    factory, messages = buildServer(reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    number = port.getHost().port
    try:
        refused = yield threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), _session, number, UNKNOWN_DEVICE
        )
        accepted = yield threads.deferToThreadPool(
            reactor, reactor.getThreadPool(), _session, number, APPROVED_DEVICE
        )
    finally:
        yield port.stopListening()
    if refused != 535 or accepted != 235 or len(messages.messages) != 1:
        print(f"FAILED: refused={refused} accepted={accepted} messages={messages.messages}")
        raise SystemExit(1)
    print("OK")


def serve(reactor: Any, portNumber: int) -> defer.Deferred[None]:
    factory, messages = buildServer(reactor)
    port = reactor.listenTCP(portNumber, factory, interface="127.0.0.1")
    # Said once the reactor has installed its SIGINT/SIGTERM handlers.
    reactor.callLater(0, print, f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
    # Never fires: the reactor stops on SIGINT or SIGTERM.
    return defer.Deferred()


def main(reactor: Any, *argv: str) -> Any:
    if "--selftest" in argv:
        return selftest(reactor)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    return serve(reactor, int(argv[0]) if argv else DEFAULT_PORT)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
