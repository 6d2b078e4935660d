# -*- test-case-name: tests.test_gateway_backend -*-
"""
Reaching a backend: connect with its endpoint, within the configured time,
over TLS (implicit, or STARTTLS driven by the protocol) with the configured
certificate checks, and log an outage once.

Everything that goes wrong on the way (refused, unreachable, no answer in
time, a TLS or certificate failure, a connection lost during the login)
becomes L{BackendUnavailable}: a temporary failure for the client
(C{NO [UNAVAILABLE]} / C{454 4.7.0}), never a refusal.  Its message says
why, in the same words for both backends: the IMAP and SMTP protocols
share how their connection ends (L{BackendConnection}).

Use::

    backend = Backend(config.imapBackend, config, reactor, "IMAP")
    d = backend.connect(factory)          # Deferred[protocol]
    ...  # the protocol's own exchange; after its STARTTLS reply:
    backend.startTLS(protocol.transport)
    d = backend.guard(loginDeferred)      # the same timeout and outage log
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, endpoints, ssl
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted.cred import TemporaryAuthenticationFailure
from clientid_twisted.gateway.config import BackendAddress, GatewayConfig

__all__ = [
    "Backend",
    "BackendConnection",
    "BackendSession",
    "BackendUnavailable",
    "clientTLSOptions",
    "printable",
]

_T = TypeVar("_T")


class BackendUnavailable(TemporaryAuthenticationFailure):
    """
    The backend cannot be reached or did not answer in time: the login is a
    temporary failure, not a refusal.
    """


def clientTLSOptions(host: str, config: GatewayConfig) -> Any:
    """
    The TLS client options for a backend called C{host}: its certificate
    must chain to C{backend_ca} (or the system's trust store) and name
    C{host}, unless C{backend_verify = false}.

    @raise ValueError: If C{backend_ca} cannot be read or holds no PEM
        certificate.
    """
    if not config.verify:
        return ssl.CertificateOptions(
            verify=False, raiseMinimumTo=ssl.TLSVersion.TLSv1_2
        )
    trustRoot: Any = None
    if config.caPath is not None:
        try:
            pem = Path(config.caPath).read_bytes()
            trustRoot = ssl.Certificate.loadPEM(pem)
        except OSError as e:
            raise ValueError(
                f"[gateway] backend_ca: cannot read {config.caPath}: {e.strerror}"
            ) from None
        except Exception:
            raise ValueError(
                f"[gateway] backend_ca: {config.caPath} holds no PEM certificate"
            ) from None
    return ssl.optionsForClientTLS(host, trustRoot=trustRoot)


class Backend:
    """
    One backend (IMAP or SMTP) and how to reach it.

    @ivar address: Where it listens.
    @ivar config: The C{[gateway]} settings (TLS, timeout).
    @ivar name: C{"IMAP"} or C{"SMTP"}, for the log.
    @ivar failing: Whether the backend is in an outage (the last attempt
        to reach it failed).
    """

    log = Logger()

    def __init__(
        self,
        address: BackendAddress,
        config: GatewayConfig,
        reactor: Any = None,
        name: str = "IMAP",
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        self.address = address
        self.config = config
        self.name = name
        self.failing = False
        self._reactor = reactor
        # Read the CA now: a bad backend_ca is an operator error at start-up,
        # not a temporary failure at each login.
        self._tlsOptions = clientTLSOptions(address.host, config)

    @property
    def starttls(self) -> bool:
        """
        Whether the protocol must upgrade the connection with STARTTLS
        before sending credentials.
        """
        return self.config.starttls and not self.address.implicitTLS

    def endpoint(self) -> Any:
        """
        The client endpoint that reaches the backend (TLS-wrapped for
        C{tls:}).
        """
        tcp = endpoints.clientFromString(self._reactor, self.address.tcpDescription)
        if self.address.implicitTLS:
            return endpoints.wrapClientTLS(self._tlsOptions, tcp)
        return tcp

    def connect(self, factory: IProtocolFactory) -> defer.Deferred[Any]:
        """
        Connect, within C{backend_timeout_seconds}.

        @return: A Deferred firing with the connected protocol, or failing
            with L{BackendUnavailable}.
        """
        return self.guard(self.endpoint().connect(factory))

    def startTLS(self, transport: Any) -> None:
        """
        Upgrade a plaintext backend connection once the backend has agreed
        to STARTTLS, with the configured certificate checks.  A failed
        handshake or a certificate the checks refuse closes the connection,
        which fails the exchange under way.
        """
        transport.startTLS(self._tlsOptions)

    def guard(self, d: defer.Deferred[_T]) -> defer.Deferred[_T]:
        """
        Bound one step of the exchange with the backend by
        C{backend_timeout_seconds} and turn its failures into
        L{BackendUnavailable} (a refusal, L{UnauthorizedLogin}, passes
        through).  The first failure of an outage is logged; the next
        success logs the recovery.
        """
        d.addTimeout(self.config.timeoutSeconds, self._reactor)
        d.addCallbacks(self._reached, self._unreachable)
        return d

    def _reached(self, result: _T) -> _T:
        if self.failing:
            self.failing = False
            self.log.info(
                "{name} backend {endpoint} is reachable again",
                name=self.name,
                endpoint=self.address.description,
                backendEvent="up",
            )
        return result

    def _unreachable(self, reason: Failure) -> Failure:
        if reason.check(UnauthorizedLogin):
            # The backend answered: it is up.
            self._reached(None)
            return reason
        why = reason.getErrorMessage() or reason.type.__name__  # type: ignore[union-attr]
        if reason.check(defer.TimeoutError, defer.CancelledError):
            why = f"no answer within {self.config.timeoutSeconds:g} s"
        if not self.failing:
            self.failing = True
            self.log.error(
                "{name} backend {endpoint} unavailable ({why}): logins get a "
                "temporary failure until it answers again",
                name=self.name,
                endpoint=self.address.description,
                why=why,
                backendEvent="down",
            )
        if reason.check(BackendUnavailable):
            return reason
        return Failure(BackendUnavailable(f"{self.name} backend unavailable: {why}"))


class BackendConnection:
    """
    How a backend protocol's connection ends, the same for IMAP and SMTP:
    whoever waits on it (the greeting, the replies L{takeWaiting} gives)
    fails with L{BackendUnavailable} saying why (the backend closed the
    connection; the connection failed, with TLS's or the socket's
    reason), then L{connectionEnded} runs, then C{closed} fires.  Mixed
    into the protocol class before Twisted's protocol base.

    @ivar greeting: Fires with the backend's greeting; fails if the
        connection ends first.
    @ivar closed: Fires once the connection is gone.
    """

    transport: Any
    greeting: defer.Deferred[Any]
    closed: defer.Deferred[None]

    def takeWaiting(self) -> list[defer.Deferred[Any]]:
        """
        The Deferreds of replies still awaited, no longer awaited after
        this call.
        """
        return []

    def connectionEnded(self, reason: Failure) -> None:
        """
        The connection is gone, for a reason L{unavailableReason} gave;
        after the waiters were told, before C{closed} fires.
        """

    def _fail(self, error: BackendUnavailable) -> None:
        """
        Give up on the backend (it sent what no server sends): drop the
        connection at once, telling the waiters why.
        """
        self.transport.abortConnection()
        self.connectionLost(Failure(error))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.closed.called:
            return
        reason = unavailableReason(reason)
        if not self.greeting.called:
            self.greeting.errback(reason)
        for d in self.takeWaiting():
            if not d.called:  # not cancelled by a timeout
                d.errback(reason)
        self.connectionEnded(reason)
        self.closed.callback(None)


def unavailableReason(reason: Failure) -> Failure:
    """
    Why a backend connection ended, as a L{BackendUnavailable} whose
    message is fit for the outage log line: the backend closed it, or it
    failed (TLS says why: C{certificate verify failed}, ...).
    """
    if reason.check(BackendUnavailable):
        return reason
    if reason.check(ConnectionDone):
        return Failure(BackendUnavailable("the backend closed the connection"))
    why = printable(reason.getErrorMessage().encode("utf-8", "replace"))
    return Failure(BackendUnavailable(f"the connection failed: {why}"))


class BackendSession:
    """
    A backend connection logged in as the user: the avatar of a gateway
    login, closed when the client's session ends.

    @ivar protocol: The connection (with C{transport} and a C{closed}
        Deferred that fires when it is gone).
    @ivar username: The account it is logged in as.
    """

    def __init__(self, protocol: Any, username: str) -> None:
        self.protocol = protocol
        self.username = username

    @property
    def transport(self) -> Any:
        return self.protocol.transport

    def close(self) -> None:
        """
        End the backend session (the client has gone, or was refused).
        """
        transport = self.protocol.transport
        if transport is not None and not self.protocol.closed.called:
            transport.loseConnection()

    def end(self) -> None:
        """
        The client's connection is gone: stop taking its input as this
        connection's producer (unless this one is gone too: a TLS
        transport then has nothing left to unregister) and close.
        """
        if not self.protocol.closed.called:
            self.transport.unregisterProducer()
        self.close()


def printable(data: bytes) -> str:
    """
    The start of what a backend said, as one line of printable ASCII for a
    log or an error message.
    """
    return data[:200].decode("ascii", "replace").encode("unicode_escape").decode("ascii")
