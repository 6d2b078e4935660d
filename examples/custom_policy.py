# -*- test-case-name: tests.test_examples -*-
"""
Embedding example: a custom L{IClientIDPolicy} plugged into C{twistd
clientid-mail} by a dotted name in the configuration.

The policy admits only devices of type C{UUID}: a login without CLIENTID or
with any other type is refused (exactly like a wrong password), and a right
password from such a device raises a C{device-refused} alert, which goes to
every configured alert observer: the log always, the webhook when
C{[alerts] webhook} is set.  Devices of type UUID are decided by the
built-in policy configured from the same file (learn mode by default), so
the custom rule adds to the built-in ones rather than replacing them.

Plug it in with C{clientid.toml}::

    [policy]
    custom = "custom_policy:uuidOnly"   # package.module:factory
    devices = "learn"                   # the built-in rules UUID devices pass

    [alerts]
    webhook = "https://alerts.example.net/clientid"   # optional

and run the server with this directory importable::

    PYTHONPATH=examples twistd -n clientid-mail --data-dir DIR --config clientid.toml

The factory is called with one
L{clientid_twisted.policy.PolicyFactoryContext} (the parsed
configuration, the whole TOML, the store, the hasher, the alert observers,
the clock, the data directory and the built-in policy) and returns an
L{IClientIDPolicy}.

This file also runs the server itself::

    python examples/custom_policy.py [PORT]     # twistd's service on 127.0.0.1:PORT (3587)
    python examples/custom_policy.py --selftest # two smtplib logins, prints OK
"""

from __future__ import annotations

import base64
import os
import shutil
import smtplib
import socket
import ssl as stdlibssl
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from zope.interface import implementer

from twisted.internet import defer, task, threads
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

from clientid_twisted.cred import IdentityHasher
from clientid_twisted.interfaces import IAlertObserver, IClientIDPolicy
from clientid_twisted.policy import Alert, Attempt, Decision, PolicyFactoryContext, Verdict, notifyAll

DEFAULT_PORT = 3587
ACCOUNT = "alice@example.test"
PASSWORD = "correct horse battery staple"


class _Refused:
    """
    Marks the decisions this policy made itself (a L{Decision}'s context is
    opaque to everyone but the policy that made it).
    """


_REFUSED = _Refused()


@implementer(IClientIDPolicy)
class UUIDOnlyPolicy:
    """
    Refuse every device whose CLIENTID type is not C{UUID}; hand UUID
    devices to C{inner}.

    @ivar decisions: How many attempts this policy decided, by verdict.
    """

    log = Logger()

    def __init__(
        self,
        inner: IClientIDPolicy,
        alertObservers: tuple[IAlertObserver, ...],
        clock: Any,
        hasher: Callable[[], IdentityHasher | None],
    ) -> None:
        self.inner = inner
        self.alertObservers = alertObservers
        self.clock = clock
        self.hasher = hasher
        self.decisions = {"refused": 0, "delegated": 0}

    def evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        identity = attempt.identity
        if identity is None or identity.typeKey != "UUID":
            self.decisions["refused"] += 1
            return defer.succeed(Decision(attempt, Verdict.REJECT, "not a UUID device", _REFUSED))
        self.decisions["delegated"] += 1
        return self.inner.evaluate(attempt)

    def outcome(self, decision: Decision, passwordAccepted: bool) -> defer.Deferred[None]:
        if decision.context is not _REFUSED:
            return self.inner.outcome(decision, passwordAccepted)
        attempt = decision.attempt
        identity, hasher = attempt.identity, self.hasher()
        self.log.info(
            "uuid-only policy refused {account} over {protocol} (type={clientIDType})",
            account=attempt.account,
            protocol=attempt.protocolName,
            clientIDType=identity.type if identity is not None else None,
        )
        if passwordAccepted:
            # The right password from a device of another type: tell the
            # owner and the operator (type and fingerprint, never the token).
            alert = Alert(
                kind="device-refused",
                time=self.clock.seconds(),
                account=attempt.account,
                typeName=identity.type if identity is not None else None,
                fingerprint=(
                    hasher.fingerprint(identity)
                    if identity is not None and hasher is not None
                    else None
                ),
                address=attempt.address,
                protocol=attempt.protocolName,
                detail="only UUID devices may log in",
            )
            notifyAll(self.alertObservers, alert, self.log)
        return defer.succeed(None)


def uuidOnly(context: PolicyFactoryContext) -> UUIDOnlyPolicy:
    """
    The factory C{[policy] custom = "custom_policy:uuidOnly"} names.
    """
    return UUIDOnlyPolicy(
        context.builtIn,
        context.alertObservers,
        context.clock,
        lambda: context.builtIn.hasher,
    )


# -- running it in twistd's service ---------------------------------------------

CONFIG = """\
[server]
auth_failure_delay_seconds = 0

[policy]
custom = "custom_policy:uuidOnly"
devices = "learn"

[alerts]
mail_account = false
"""


def makeServer(dataDir: Path, port: int) -> Any:
    """
    What C{twistd clientid-mail} runs, from the same options.
    """
    from clientid_twisted.server.tap import Options, makeService
    from clientid_twisted.server.users import UserDatabase

    # "custom_policy" must be importable by that name, as under twistd.
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    (dataDir / "clientid.toml").write_text(CONFIG)
    users = UserDatabase(dataDir / "users.json")
    if not users.exists(ACCOUNT):
        users.addUser(ACCOUNT, PASSWORD)
    options = Options()
    options.parseOptions(
        ["--data-dir", str(dataDir), "--smtp", f"tcp:{port}:interface=127.0.0.1"]
    )
    return makeService(options)


def _freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _login(port: int, dataDir: Path, clientID: str) -> int:
    """
    One blocking smtplib session over STARTTLS; the AUTH reply code.
    """
    # The development certificate the server made in its data directory.
    context = stdlibssl.create_default_context(cafile=str(dataDir / "tls" / "selfsigned.pem"))
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("laptop.example.net")
        client.starttls(context=context)
        client.ehlo("laptop.example.net")
        assert client.docmd("CLIENTID", clientID)[0] == 250
        secret = base64.b64encode(f"\0{ACCOUNT}\0{PASSWORD}".encode()).decode()
        return client.docmd("AUTH", "PLAIN " + secret)[0]


@defer.inlineCallbacks
def selftest(reactor: Any) -> Any:
    dataDir = Path(tempfile.mkdtemp(prefix="custom-policy-"))
    try:
        port = _freePort()
        top = makeServer(dataDir, port)
        top.startService()
        try:
            pool = reactor.getThreadPool()
            refused = yield threads.deferToThreadPool(
                reactor, pool, _login, port, dataDir, "TBIRD-UUID 4f1c0de2-other-type"
            )
            accepted = yield threads.deferToThreadPool(
                reactor, pool, _login, port, dataDir, "UUID 5b0e0c1e-laptop-token"
            )
        finally:
            yield top.stopService()
    finally:
        shutil.rmtree(dataDir, ignore_errors=True)
    if (refused, accepted) != (535, 235):
        print(f"FAILED: other type got {refused}, UUID got {accepted}")
        raise SystemExit(1)
    print("OK")


def serve(reactor: Any, port: int) -> defer.Deferred[None]:
    dataDir = Path(tempfile.mkdtemp(prefix="custom-policy-"))
    top = makeServer(dataDir, port)
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, dataDir, True)
    # Said once the reactor has installed its SIGINT/SIGTERM handlers.
    reactor.callLater(
        0,
        print,
        f"listening on 127.0.0.1:{port} (SMTP submission, STARTTLS); "
        f"log in as {ACCOUNT} / {PASSWORD!r}",
        flush=True,
    )
    return defer.Deferred()


def main(reactor: Any, *argv: str) -> Any:
    if "--selftest" in argv:
        return selftest(reactor)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    return serve(reactor, int(argv[0]) if argv else DEFAULT_PORT)


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
