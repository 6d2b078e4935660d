# -*- test-case-name: tests.test_examples -*-
"""
Embedding example: an existing Twisted IMAP4 server gains CLIENTID.

The server below is what a Twisted application already has: an
C{IMAP4Server} subclass, its own portal and realm, and accounts kept in
memory (C{imap4.MemoryAccount} with a small in-memory mailbox).  Two changes
give it CLIENTID (both marked C{CLIENTID:} below):

    1. C{ClientIDIMAP4ServerMixin} goes before C{imap4.IMAP4Server} in the
       protocol's bases;
    2. the portal's checker is wrapped in C{ClientIDChecker} with a policy:
       the built-in C{DevicePolicy} in allowlist mode, on a C{MemoryStore}
       holding one approved device.

Run it::

    python examples/imap_server.py [PORT]     # serve on 127.0.0.1:PORT (2143)
    python examples/imap_server.py --selftest # one imaplib session, prints OK

The server stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import email
import imaplib
import io
import os
import ssl as stdlibssl
import sys
from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, protocol, task, threads
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.mail import imap4

from clientid_twisted.cred import ClientIdentity, IdentityHasher
from clientid_twisted.imap import ClientIDIMAP4ServerMixin
from clientid_twisted.policy import ClientIDChecker, DevicePolicy, LogAlertObserver, PolicyConfig
from clientid_twisted.store import APPROVED, MemoryStore
from clientid_twisted.testing import throwawayCertificate

DEFAULT_PORT = 2143
ACCOUNT = "alice@example.test"
PASSWORD = "correct horse battery staple"
APPROVED_DEVICE = ClientIdentity("UUID", "5b0e0c1e-laptop-token-9f1d-7a44c0de")
UNKNOWN_DEVICE = ClientIdentity("UUID", "77aa01b2-stranger-token-c3d4e5f6")
WELCOME = (
    b"From: postmaster@example.test\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Welcome\r\n"
    b"\r\n"
    b"Your mailbox lives in memory.\r\n"
)


# -- the existing server: an in-memory mailbox, realm, protocol -----------------


@implementer(imap4.IMessage)
class MemoryMessage:
    def __init__(self, uid: int, data: bytes, flags: list[str]) -> None:
        self.uid, self.data, self.flags = uid, data, flags
        self.parsed = email.message_from_bytes(data)

    def getUID(self) -> int:
        return self.uid

    def getFlags(self) -> list[str]:
        return self.flags

    def getInternalDate(self) -> str:
        return "Mon, 23 Nov 2026 14:00:00 +0000"

    def getHeaders(self, negate: bool, *names: str) -> dict[str, str]:
        wanted = {
            (name.decode("ascii") if isinstance(name, bytes) else name).lower() for name in names
        }
        return {
            key.lower(): str(value)
            for key, value in self.parsed.items()
            if (key.lower() in wanted) != negate or not names
        }

    def getBodyFile(self) -> io.BytesIO:
        return io.BytesIO(self.data.split(b"\r\n\r\n", 1)[1])

    def getSize(self) -> int:
        return len(self.data)

    def isMultipart(self) -> bool:
        return False

    def getSubPart(self, part: int) -> Any:
        raise IndexError(part)


@implementer(imap4.IMailboxInfo, imap4.IMailbox)
class MemoryMailbox:
    """
    Just enough of a mailbox to SELECT, FETCH and APPEND.
    """

    def __init__(self) -> None:
        self.messages: list[MemoryMessage] = []
        self.listeners: list[Any] = []
        self.nextUID = 1

    def getFlags(self) -> list[str]:
        return ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]

    def getHierarchicalDelimiter(self) -> str:
        return "/"

    def getUIDValidity(self) -> int:
        return 1

    def getUIDNext(self) -> int:
        return self.nextUID

    def getUID(self, message: int) -> int:
        return self.messages[message - 1].uid

    def getMessageCount(self) -> int:
        return len(self.messages)

    def getRecentCount(self) -> int:
        return 0

    def getUnseenCount(self) -> int:
        return sum("\\Seen" not in m.flags for m in self.messages)

    def isWriteable(self) -> bool:
        return True

    def destroy(self) -> None:
        self.messages = []

    def requestStatus(self, names: list[str]) -> dict[str, int]:
        return imap4.statusRequestHelper(self, names)

    def addListener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def removeListener(self, listener: Any) -> None:
        self.listeners.remove(listener)

    def addMessage(self, message: Any, flags: Any = (), date: Any = None) -> Any:
        data = message.read() if hasattr(message, "read") else message
        self.messages.append(MemoryMessage(self.nextUID, data, list(flags)))
        self.nextUID += 1
        return defer.succeed(self.nextUID - 1)

    def expunge(self) -> list[int]:
        gone = [m.uid for m in self.messages if "\\Deleted" in m.flags]
        self.messages = [m for m in self.messages if "\\Deleted" not in m.flags]
        return gone

    def _matching(self, messages: Any, uid: bool) -> Any:
        try:
            messages.last = self.nextUID - 1 if uid else len(self.messages)
        except ValueError:
            pass
        for sequence, message in enumerate(self.messages, 1):
            if (message.uid if uid else sequence) in messages:
                yield sequence, message

    def fetch(self, messages: Any, uid: bool) -> Any:
        return list(self._matching(messages, uid))

    def store(self, messages: Any, flags: Any, mode: int, uid: bool) -> dict[int, list[str]]:
        result = {}
        for sequence, message in self._matching(messages, uid):
            if mode == 0:
                message.flags = list(flags)
            elif mode > 0:
                message.flags = sorted(set(message.flags) | set(flags))
            else:
                message.flags = [f for f in message.flags if f not in flags]
            result[sequence] = message.flags
        return result


class MemoryAccount(imap4.MemoryAccount):
    def _emptyMailbox(self, name: str, id: int) -> MemoryMailbox:
        return MemoryMailbox()


@implementer(IRealm)
class MemoryRealm:
    """
    One in-memory account per login name, made on first use.
    """

    def __init__(self) -> None:
        self.accounts: dict[bytes, MemoryAccount] = {}

    def account(self, avatarId: bytes) -> MemoryAccount:
        if avatarId not in self.accounts:
            account = self.accounts[avatarId] = MemoryAccount(avatarId.decode())
            account.addMailbox("INBOX")
            account.select("INBOX").addMessage(WELCOME, ())
        return self.accounts[avatarId]

    def requestAvatar(self, avatarId: bytes, mind: Any, *interfaces: Any) -> Any:
        if imap4.IAccount in interfaces:
            return imap4.IAccount, self.account(avatarId), lambda: None
        raise NotImplementedError()


# CLIENTID (1 of 2): the mixin goes first in the bases.
class MyIMAP4Server(ClientIDIMAP4ServerMixin, imap4.IMAP4Server):
    """
    The application's IMAP4 protocol, unchanged but for the mixin.
    """


class MyIMAP4Factory(protocol.ServerFactory):
    def __init__(self, portal: Portal, tlsOptions: Any, hasher: IdentityHasher) -> None:
        self.portal, self.tlsOptions, self.hasher = portal, tlsOptions, hasher

    def buildProtocol(self, addr: Any) -> MyIMAP4Server:
        p = MyIMAP4Server(
            chal={b"PLAIN": imap4.PLAINCredentials, b"LOGIN": imap4.LOGINCredentials},
            contextFactory=self.tlsOptions,
        )
        p.portal = self.portal
        p.identityHasher = self.hasher
        p.factory = self
        return p


def buildServer(reactor: Any) -> tuple[MyIMAP4Factory, MemoryRealm]:
    """
    The application's server, with the two CLIENTID changes.
    """
    realm = MemoryRealm()
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
    checker = ClientIDChecker(passwords, policy)

    portal = Portal(realm, [checker])
    tlsOptions = throwawayCertificate("localhost").options()
    return MyIMAP4Factory(portal, tlsOptions, hasher), realm


# -- running it ------------------------------------------------------------------


def _session(port: int, identity: ClientIdentity) -> str:
    """
    One blocking imaplib session over STARTTLS: the LOGIN result, and the
    INBOX's first subject when it is accepted.
    """
    imaplib.Commands.setdefault("CLIENTID", ("NONAUTH",))
    context = stdlibssl.create_default_context(
        cadata=throwawayCertificate("localhost").certificatePEM.decode("ascii")
    )
    client = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    try:
        client.starttls(context)
        assert "CLIENTID" in client.capabilities, client.capabilities
        typ, _ = client._simple_command("CLIENTID", f"{identity.type} {identity.token}")
        assert typ == "OK", typ
        try:
            client.login(ACCOUNT, PASSWORD)
        except imaplib.IMAP4.error:
            return "refused"
        client.select("INBOX")
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        return "accepted: " + data[0][1].decode().strip()
    finally:
        try:
            client.logout()
        except Exception:
            client.shutdown()


@defer.inlineCallbacks
def selftest(reactor: Any) -> Any:
    factory, realm = buildServer(reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    number = port.getHost().port
    pool = reactor.getThreadPool()
    try:
        refused = yield threads.deferToThreadPool(reactor, pool, _session, number, UNKNOWN_DEVICE)
        accepted = yield threads.deferToThreadPool(reactor, pool, _session, number, APPROVED_DEVICE)
    finally:
        yield port.stopListening()
    if refused != "refused" or accepted != "accepted: Subject: Welcome":
        print(f"FAILED: refused={refused!r} accepted={accepted!r}")
        raise SystemExit(1)
    print("OK")


def serve(reactor: Any, portNumber: int) -> defer.Deferred[None]:
    factory, realm = buildServer(reactor)
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
