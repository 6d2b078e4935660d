# -*- test-case-name: tests.test_smtp_server,tests.test_imap_server,tests.test_loginafterdisconnect -*-
"""
What the SMTP and IMAP CLIENTID mixins ask of their connection alike:
whether it is encrypted, who is at the other end, and how their log
lines show an identity.

An accepted CLIENTID is not a log line of its own: the login that
follows names the device anyway, so its event carries the acceptance
(C{clientIDEvent="accepted"}) too, and a real server writes one line per
login.  A login claims the acceptance when it starts, so a client that
leaves before the decision does not leave it unlogged: the login's event,
written when the decision comes, carries it.  An identity no login used
is logged when it is dropped (a new EHLO, STARTTLS, the end of the
connection).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

from clientid_twisted._authlog import describeClientID, escapeForLog
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity

__all__ = ["ClientIDSessionMixin", "peerHost"]


class ClientIDSessionMixin:
    """
    @ivar identityHasher: Gives the keyed fingerprints that logs show
        instead of tokens; an ephemeral one is made on first use if none
        was given.
    @ivar identityLogPolicy: Whether log lines may show a (case-folded)
        type and its fingerprint (the policy's handling flags:
        L{PolicyConfig.showsInLog
        <clientid_twisted.policy._config.PolicyConfig.showsInLog>}); L{None}
        shows every identity.
    """

    identityHasher: IdentityHasher | None = None
    clientIdentity: ClientIdentity | None = None
    identityLogPolicy: Callable[[str], bool] | None = None
    transport: Any
    _encryptedTransport: Any = None
    _lastFingerprint: tuple[ClientIdentity, str] | None = None
    _unreportedIdentity: ClientIdentity | None = None
    _log: Logger
    protocolName: str

    def isEncrypted(self) -> bool:
        """
        Whether this connection runs over TLS (STARTTLS done, or implicit).

        Behind a protocol wrapper (the PROXY protocol's, C{haproxy:}
        endpoints) the wrapper copied its transport's interfaces when the
        connection was made, so a later STARTTLS shows only on the
        transport it wraps: look through it.

        The answer is asked of the transport until it is yes, then kept for
        that transport: a connection that is encrypted stays so, and the
        question is asked for every line.
        """
        transport = self.transport
        if transport is not None and transport is self._encryptedTransport:
            return True
        found = transport
        while isinstance(found, ProtocolWrapper) and not ISSLTransport.providedBy(found):
            found = found.transport
        if ISSLTransport.providedBy(found):
            self._encryptedTransport = transport
            return True
        return False

    def _fingerprint(self, identity: ClientIdentity) -> str:
        # One HMAC per identity a session accepts, however many log events
        # name it (its acceptance, each login with it).
        known = self._lastFingerprint
        if known is not None and known[0] is identity:
            return known[1]
        if self.identityHasher is None:
            self.identityHasher = IdentityHasher.ephemeral()
        fingerprint = self.identityHasher.fingerprint(identity)
        self._lastFingerprint = (identity, fingerprint)
        return fingerprint

    def _identityLogFields(self, identity: ClientIdentity | None) -> dict[str, Any]:
        """
        The C{clientIDType} and C{clientIDFingerprint} of a log event: both
        L{None} without an identity, or for a type whose handling keeps it
        out of the log (C{ignore}, or no C{system-log}); and C{clientID},
        the words a log line shows: C{CLIENTID type=T fingerprint=F},
        C{without CLIENTID}, or C{CLIENTID not logged} for such a type.
        """
        if identity is None:
            return {"clientIDType": None, "clientIDFingerprint": None, "clientID": describeClientID(None, None)}
        if self.identityLogPolicy is not None and not self.identityLogPolicy(identity.typeKey):
            return {
                "clientIDType": None,
                "clientIDFingerprint": None,
                "clientID": describeClientID(identity.type, None, logged=False),
            }
        fingerprint = self._fingerprint(identity)
        return {
            "clientIDType": escapeForLog(identity.type),
            "clientIDFingerprint": fingerprint,
            "clientID": describeClientID(identity.type, fingerprint),
        }

    def _identityAccepted(self, identity: ClientIdentity) -> None:
        """
        Keep C{identity} as the session's accepted one; its acceptance is
        logged with the login that uses it (L{_loginLogFields}), or when
        it is dropped unused (L{_identityDropped}).
        """
        self._identityDropped()
        self.clientIdentity = identity
        self._unreportedIdentity = identity

    def _loginLogFields(self, identity: ClientIdentity | None) -> dict[str, Any]:
        """
        L{_identityLogFields} for a login's event; the first login with an
        accepted identity also reports its acceptance
        (C{clientIDEvent="accepted"}).  Taken when the login starts: the
        event must then be logged whatever the decision and whenever it
        comes, even after the connection is gone.
        """
        fields = self._identityLogFields(identity)
        if identity is not None and identity is self._unreportedIdentity:
            self._unreportedIdentity = None
            fields["clientIDEvent"] = "accepted"
        return fields

    def _identityDropped(self) -> None:
        """
        The session forgets its identity (or ends): an acceptance no login
        reported is logged now.
        """
        identity, self._unreportedIdentity = self._unreportedIdentity, None
        if identity is None:
            return
        self._log.info(
            "CLIENTID accepted from {peer}, no login followed ({clientID})",
            clientIDEvent="accepted",
            protocol=self.protocolName,
            peer=self._peerHost(),
            **self._identityLogFields(identity),
        )

    def _peerHost(self) -> str:
        return peerHost(self.transport)


def peerHost(transport: Any) -> str:
    """
    The address at the other end of C{transport}, as text for log lines
    (C{"-"} when the transport can no longer say): the one place the
    protocols, their guards and the connection limiter read it.
    """
    try:
        peer = transport.getPeer()
    except Exception:
        return "-"
    return str(getattr(peer, "host", peer))
