"""
Tests for the work a session does once rather than for every line or
event (docs/performance.md, "Session cost"): the TLS state asked of the
transport until it is known, one keyed fingerprint per accepted identity.
"""

from __future__ import annotations

import base64
from typing import Any

from zope.interface import directlyProvides

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import Portal
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import StringTransport
from twisted.mail import smtp
from twisted.protocols.policies import ProtocolWrapper
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.smtp import ClientIDESMTP, ClientIDESMTPFactory
from clientid_twisted.testing import LineExchange, connectedTransport

TOKEN = "23bf83be-aad7-46aa-9e0f-39191ccf402f"


class _LookCountingWrapper(ProtocolWrapper):
    """
    A protocol wrapper (as the PROXY protocol's) that counts how often the
    transport under it is looked at.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.looks = 0

    @property  # type: ignore[override]
    def transport(self) -> Any:
        self.looks += 1
        return self.inner


class EncryptedOnceTests(SynchronousTestCase):
    """
    C{isEncrypted} asks the transport until the answer is yes, then keeps
    it for that transport.
    """

    def test_keptOnceEncrypted(self) -> None:
        inner = StringTransport()
        wrapper = _LookCountingWrapper(inner)
        protocol = ClientIDESMTP()
        protocol.transport = wrapper
        self.assertFalse(protocol.isEncrypted())
        looks = wrapper.looks
        self.assertFalse(protocol.isEncrypted())
        self.assertEqual(wrapper.looks, 2 * looks)
        # STARTTLS: the transport under the wrapper now provides it.
        directlyProvides(inner, ISSLTransport)
        self.assertTrue(protocol.isEncrypted())
        looks = wrapper.looks
        for _ in range(5):
            self.assertTrue(protocol.isEncrypted())
        self.assertEqual(wrapper.looks, looks)

    def test_newTransportAskedAgain(self) -> None:
        protocol = ClientIDESMTP()
        encrypted = StringTransport()
        directlyProvides(encrypted, ISSLTransport)
        protocol.transport = encrypted
        self.assertTrue(protocol.isEncrypted())
        protocol.transport = StringTransport()
        self.assertFalse(protocol.isEncrypted())


class _CountingHasher:
    """
    An L{IdentityHasher} that counts the fingerprints it computes.
    """

    def __init__(self) -> None:
        self.inner = IdentityHasher.ephemeral()
        self.computed: list[ClientIdentity] = []

    def fingerprint(self, identity: ClientIdentity) -> str:
        self.computed.append(identity)
        return self.inner.fingerprint(identity)


class FingerprintOnceTests(SynchronousTestCase):
    """
    The log's fingerprint of an accepted identity is computed once per
    session, however many events name the device.
    """

    def test_smtp(self) -> None:
        hasher = _CountingHasher()
        portal = Portal(_Realm(), [InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")])
        factory = ClientIDESMTPFactory(portal, context=object(), identityHasher=hasher)  # type: ignore[arg-type]
        protocol = factory.buildProtocol(None)
        client = LineExchange(protocol, connectedTransport(protocol, secure=True))
        client.exchange(b"EHLO c")
        self.assertEqual(client.exchange(b"CLIENTID UUID " + TOKEN.encode()), b"250 OK\r\n")
        wrong = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong")
        self.assertTrue(client.exchange(wrong).startswith(b"535 "))
        right = b"AUTH PLAIN " + base64.b64encode(b"\0alice\0pw")
        self.assertTrue(client.exchange(right).startswith(b"235 "))
        self.assertEqual(len(hasher.computed), 1)


class _Realm:
    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return smtp.IMessageDelivery, object(), lambda: None
