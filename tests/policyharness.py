"""
A test harness for the policy: the real L{ClientIDChecker}, L{DevicePolicy}
and L{MemoryStore} on a L{Clock}, with a password checker that accepts the
password C{"right"}.
"""

from __future__ import annotations

from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.cred import identifyCredentials
from clientid_twisted._errors import TemporaryAuthenticationFailure
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._engine import policyFromConfig
from clientid_twisted.testing import MemoryStore, RecordingAlertObserver

START = 1_700_000_000.0
ALICE = "alice@example.test"
BOB = "bob@example.test"


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    Accepts the password C{right} for any user; counts its calls.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.calls = 0

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes]:
        self.calls += 1
        if credentials.password == b"right":
            return defer.succeed(credentials.username.lower())
        return defer.fail(UnauthorizedLogin())


@implementer(ICredentialsChecker)
class SlowChecker:
    """
    A password check that answers when the test says so (a KDF in a
    thread).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self.pending: list[defer.Deferred[bytes]] = []

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes]:
        d: defer.Deferred[bytes] = defer.Deferred()
        self.pending.append(d)
        return d


RecordingObserver = RecordingAlertObserver


class PolicyHarness:
    """
    Logins through the checker and the policy, synchronously.
    """

    def __init__(self, test: SynchronousTestCase, config: dict[str, Any] | None = None,
                 store: Any = None, clock: Clock | None = None) -> None:
        """
        @param clock: The store's clock, if C{store} is given (else a new
            one at L{START}).
        """
        self.test = test
        if clock is None:
            clock = Clock()
            clock.advance(START)
        self.clock = clock
        self.store = store if store is not None else MemoryStore(self.clock)
        self.hasher = IdentityHasher(b"k" * 32)
        self.observer = RecordingObserver()
        self.policy = policyFromConfig(
            config or {}, self.store, self.hasher, [self.observer], self.clock
        )
        self.inner = PasswordChecker()
        self.checker = ClientIDChecker(self.inner, self.policy)
        self.logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.logged.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def credentials(
        self,
        account: str = ALICE,
        token: str | None = "token-A",
        password: str = "right",
        typeName: str = "UUID",
        address: str = "192.0.2.1",
        protocol: str = "smtp",
    ) -> Any:
        identity = ClientIdentity(typeName, token) if token is not None else None
        return identifyCredentials(
            UsernamePassword(account.encode(), password.encode()),
            identity,
            IPv4Address("TCP", address, 40000),
            protocol,
            True,
        )

    def login(self, *args: Any, **kwargs: Any) -> str:
        """
        @return: C{"ok"}, C{"refused"} or C{"tempfail"}.
        """
        d = self.checker.requestAvatarId(self.credentials(*args, **kwargs))
        results: list[Any] = []
        d.addBoth(results.append)
        self.test.assertEqual(len(results), 1, "the login did not finish")
        result = results[0]
        if isinstance(result, bytes):
            return "ok"
        if result.check(UnauthorizedLogin):
            return "refused"
        if result.check(TemporaryAuthenticationFailure):
            return "tempfail"
        result.raiseException()
        raise AssertionError("unreachable")

    def digest(self, token: str = "token-A", typeName: str = "UUID") -> str:
        return self.hasher.digest(ClientIdentity(typeName, token))

    def fingerprint(self, token: str = "token-A", typeName: str = "UUID") -> str:
        return self.hasher.fingerprint(ClientIdentity(typeName, token))

    def devices(self, account: str = ALICE) -> dict[str, str]:
        """
        Fingerprint to state of the account's devices.
        """
        records = self.test.successResultOf(self.store.listDevices(account))
        return {d.fingerprint: d.state for d in records}

    def events(self, account: str | None = None) -> list[str]:
        return [e.kind for e in self.test.successResultOf(self.store.listEvents(account, 1000))]

    def refusals(self) -> list[dict[str, Any]]:
        return [e for e in self.logged if e.get("policyEvent") == "refused"]
