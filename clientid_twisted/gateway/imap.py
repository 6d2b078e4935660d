# -*- test-case-name: tests.test_gateway_imap -*-
"""
The IMAP gateway: our IMAP front (L{MailIMAP4Server}: TLS, STARTTLS,
CAPABILITY with CLIENTID, CLIENTID, LOGIN, AUTHENTICATE, limits, logging)
until the login, then the backend's session, relayed byte for byte.

The password is checked by the backend: L{IMAPBackendChecker} logs in
there with the user's credentials, under
L{clientid_twisted.policy.ClientIDChecker}, which asks the device
policy first (L{IPasswordForwardingChecker}).  The authenticated backend
connection is the avatar; L{GatewayIMAP4Server} answers the login with the
backend's capabilities, APPENDs pending notices on that connection, and
then relays.
"""

from __future__ import annotations

import email.utils
from typing import Any, Callable

from zope.interface import implementer

from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.mail import imap4
from twisted.python.failure import Failure

from clientid_twisted._authlog import escapeForLog
from clientid_twisted.gateway.backend import Backend
from clientid_twisted.gateway.checker import BackendPasswordChecker
from clientid_twisted.gateway.config import GatewayConfig
from clientid_twisted.gateway.imapbackend import BackendIMAPSession, loginToBackend
from clientid_twisted.interfaces import IAlertObserver, IClientIDPolicy, IClientIDStore
from clientid_twisted.policy import Alert, ClientIDChecker, accountName, asciiHost, messageLines, noticeLines
from clientid_twisted.server.imapserver import MailIMAP4Factory, MailIMAP4Server
from clientid_twisted.server.mailnotice import noticeLinks, noticeWanted

__all__ = [
    "GatewayIMAP4Factory",
    "GatewayIMAP4Server",
    "GatewayRealm",
    "IMAPBackendChecker",
    "PendingNotices",
    "gatewayIMAPFactory",
]

_log = Logger()


class IMAPBackendChecker(BackendPasswordChecker):
    """
    Checks a password by logging in to the IMAP backend with it; the
    avatar ID is the authenticated L{BackendIMAPSession}.  A login the
    device policy refused never reaches the backend
    (L{BackendPasswordChecker}).
    """

    def logIn(self, username: bytes, password: bytes, credentials: Any) -> defer.Deferred[Any]:
        return loginToBackend(
            self.backend,
            username,
            password,
            getattr(credentials, "peer", None),
            getattr(credentials, "host", None),
        )


@implementer(IRealm)
class GatewayRealm:
    """
    The avatar of a gateway login is the authenticated backend session
    (the checker's avatar ID); logging out closes it.
    """

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> tuple[Any, Any, Any]:
        if imap4.IAccount not in interfaces or not isinstance(avatarId, BackendIMAPSession):
            raise NotImplementedError("the IMAP gateway's realm gives IMAP backend sessions")
        return imap4.IAccount, avatarId, avatarId.close


@implementer(IAlertObserver)
class PendingNotices:
    """
    Holds the messages for an account's INBOX (notices, the self-service
    site's sign-in links) until the account's next gateway login, which
    APPENDs them on its backend connection (the gateway has no access to
    the backend's mailboxes otherwise).

    They wait in the CLIENTID store (L{IClientIDStore.keepMessage}), not
    in this process: they survive a restart, and with a store shared by
    several frontends (Redis) or worker processes, whichever sees the
    login takes them, in one step (L{IClientIDStore.takeMessages}), so a
    message is APPENDed once.  Bounded: at most C{perAccount} messages
    per account (login names come from the network; the oldest go first),
    each kept at most C{keepSeconds}.

    @ivar store: The CLIENTID store; set before the first alert (the
        server's assembly sets it once the store is open).
    """

    log = Logger()

    def __init__(
        self,
        hostname: str,
        store: IClientIDStore | None = None,
        perAccount: int = 5,
        keepSeconds: float = 7 * 86400,
        linksFor: Callable[[str, str], tuple[str, str]] | None = None,
        failureNotices: bool = False,
    ) -> None:
        """
        @param linksFor: C{linksFor(account, fingerprint)}: a device's
            approve and disown links on the self-service site, for the
            notices that list them (L{noticeLinks}); L{None} when the site
            is off.
        @param failureNotices: C{[alerts] notice_failures}: whether the
            alerts of failed logins without the right password
            (C{device-locked}, C{account-closed}) become notices.
        """
        self.hostname = hostname
        self.store = store
        self.linksFor = linksFor
        self.failureNotices = failureNotices
        self._perAccount = perAccount
        self._keepSeconds = keepSeconds

    def alertRaised(self, alert: Alert) -> None:
        if alert.account is None or not noticeWanted(alert, self.failureNotices):
            return
        messageID = email.utils.make_msgid("clientid", domain=asciiHost(self.hostname))
        links = noticeLinks(alert, alert.account, self.linksFor)
        lines = noticeLines(alert, self.hostname, messageID, links=links)
        self._keep(alert.account, [_message(lines)])

    def addMessage(self, account: str, subject: str, body: list[str], when: float) -> bool:
        """
        Keep a message of the server's own (the self-service site's
        sign-in link) for C{account}'s next login, like a notice.

        @return: Whether C{account} is a name a login could have.
        """
        key = accountName(account)
        if key is None:
            return False
        messageID = email.utils.make_msgid("clientid", domain=asciiHost(self.hostname))
        lines = messageLines(key, subject, body, self.hostname, messageID, when)
        self._keep(key, [_message(lines)])
        return True

    def _keep(self, account: str, messages: list[bytes]) -> defer.Deferred[None]:
        """
        Keep C{messages} in order; a store that fails is logged (the
        notices are lost, as a mail the server could not deliver).
        """
        assert self.store is not None, "PendingNotices.store is set before the first alert"
        store = self.store

        async def keepAll() -> None:
            for message in messages:
                await store.keepMessage(account, message, self._perAccount, self._keepSeconds)

        def failed(reason: Failure) -> None:
            self.log.warn(
                "could not keep {count} message(s) for {account}'s next login: {why}",
                count=len(messages),
                account=escapeForLog(account),
                why=reason.getErrorMessage(),
            )

        return defer.Deferred.fromCoroutine(keepAll()).addErrback(failed)

    def take(self, account: str) -> defer.Deferred[list[bytes]]:
        """
        Remove and return C{account}'s messages, oldest first.
        """
        key = accountName(account)
        if key is None:
            return defer.succeed([])
        assert self.store is not None, "PendingNotices.store is set before the first login"
        return self.store.takeMessages(key)

    def putBack(self, account: str, messages: list[bytes]) -> defer.Deferred[None]:
        """
        Keep messages that could not be APPENDed for the next login.
        """
        key = accountName(account)
        if key is None or not messages:
            return defer.succeed(None)
        return self._keep(key, messages)


def _message(lines: list[bytes]) -> bytes:
    """
    A message's bytes from its lines, each ended with CRLF as APPEND
    sends it.
    """
    return b"".join(line + b"\r\n" for line in lines)


class GatewayIMAP4Server(MailIMAP4Server):
    """
    The front of the IMAP gateway: the standalone server's front until a
    login succeeds, then a relay to the backend's authenticated session.

    @ivar notices: Where pending notices wait (L{PendingNotices}), or
        L{None}.
    """

    notices: PendingNotices | None = None
    _relay: BackendIMAPSession | None = None

    def isAuthenticated(self) -> bool:
        return self._relay is not None or super().isAuthenticated()

    def _cbClientIDLogin(
        self, result: Any, tag: bytes, fields: dict[str, Any], okMessage: bytes
    ) -> Any:
        iface, session, logout = result
        if self._connectionGone or not isinstance(session, BackendIMAPSession):
            logout()
            if not self._connectionGone:
                super()._cbClientIDLogin(result, tag, fields, okMessage)
            return None
        self.logoutHook = logout
        _log.info(
            "{command} succeeded for {username} from {peer} through the IMAP gateway "
            "({clientID})",
            authEvent="succeeded",
            **fields,
        )
        d = self._appendNotices(session)
        d.addCallback(lambda ignored: self._startRelay(session, tag, okMessage))
        return d

    def _appendNotices(self, session: BackendIMAPSession) -> defer.Deferred[None]:
        """
        APPEND the account's pending messages on the backend connection
        before the client sees it.  A failure is logged; the session goes
        on (what was not APPENDed waits for the next login).
        """
        if self.notices is None:
            return defer.succeed(None)
        notices = self.notices
        pending: list[bytes] = []

        async def appendAll() -> None:
            pending.extend(await notices.take(session.username))
            while pending:
                reply = await session.append(pending[0])
                if reply.status != b"OK":
                    raise RuntimeError(f"APPEND answered {reply.status!r}")
                pending.pop(0)

        def failed(reason: Failure) -> None:
            notices.putBack(session.username, pending)
            _log.warn(
                "could not APPEND a notice for {account}: {why}",
                account=escapeForLog(session.username),
                why=reason.getErrorMessage(),
            )

        return defer.Deferred.fromCoroutine(appendAll()).addErrback(failed)

    def _startRelay(self, session: BackendIMAPSession, tag: bytes, okMessage: bytes) -> None:
        if self._connectionGone or self.closing:
            session.close()
            return
        self._relay = session
        self.state = "auth"
        capabilities = b" ".join(session.capabilities)
        self.sendPositiveResponse(tag, b"[CAPABILITY " + capabilities + b"] " + okMessage)
        # What the client pipelined after its login is for the backend's
        # session: the lines queued while the login ran, then the rest.
        pending = b"".join(line + b"\r\n" for line in self.blocked or []) + self.unparsedInput
        self.blocked = [] if self.blocked is not None else None
        self.unparsedInput = b""
        session.protocol.startRelay(self.transport.write, self._backendClosed)
        # Backpressure both ways: a side whose outgoing buffer fills pauses
        # reading from the other.
        self.transport.registerProducer(session.transport, True)
        session.transport.registerProducer(self.transport, True)
        if pending:
            session.transport.write(pending)
        self.setTimeout(self.limits.imapIdleTimeout)

    def replayHeldLines(self) -> None:
        if self._relay is not None:
            self.blocked = None
            return
        super().replayHeldLines()

    def dataReceived(self, data: bytes) -> Any:
        if self._relay is not None:
            self.resetTimeout()
            self._relay.transport.write(data)
            return None
        return super().dataReceived(data)

    def _backendClosed(self, reason: Failure) -> None:
        """
        The backend ended the session (LOGOUT, BYE, a crash): end the
        client's connection too, once what the backend sent is written.
        """
        self.logoutHook = None
        if not self._connectionGone:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        if self._relay is not None:
            self._relay.end()


class GatewayIMAP4Factory(MailIMAP4Factory):
    """
    Builds L{GatewayIMAP4Server} fronts.

    @ivar notices: Given to every front (L{PendingNotices}), or L{None}.
    """

    protocol = GatewayIMAP4Server
    notices: PendingNotices | None = None

    def buildProtocol(self, addr: Any) -> Any:
        p = super().buildProtocol(addr)
        if p is not None and hasattr(p, "notices"):
            p.notices = self.notices
        return p


def gatewayIMAPFactory(
    config: GatewayConfig,
    policy: IClientIDPolicy,
    notices: PendingNotices | None = None,
    reactor: Any = None,
    **factoryArguments: Any,
) -> GatewayIMAP4Factory:
    """
    The IMAP gateway's factory: logins checked by C{config.imapBackend}
    under the device policy, sessions relayed to it.

    @param notices: Where the policy's account notices wait for the
        account's next login, to be APPENDed to its backend INBOX (give it
        to the policy builder as an application observer:
        L{clientid_twisted.server.assembly.assembleServer} does), or
        L{None}: no INBOX notices.
    @param factoryArguments: For L{GatewayIMAP4Factory} (C{context},
        C{limits}, C{limiter}, C{identityHasher}).
    @raise ValueError: If C{[gateway] backend_ca} cannot be read.
    """
    assert config.imapBackend is not None
    backend = Backend(config.imapBackend, config, reactor, "IMAP")
    checker = ClientIDChecker(IMAPBackendChecker(backend, reactor), policy)
    factory = GatewayIMAP4Factory(Portal(GatewayRealm(), [checker]), **factoryArguments)
    factory.notices = notices
    _log.info(
        "IMAP gateway: logins and sessions go to {endpoint}",
        endpoint=config.imapBackend.description,
    )
    return factory
