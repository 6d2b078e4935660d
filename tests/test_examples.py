"""
The embedding examples in C{examples/}: each runs its self-test (a real
session with Python's C{smtplib}/C{imaplib} over TLS against itself), and
serves until SIGINT or SIGTERM.  Also C{[policy] custom}: the assembled
server built with a custom policy factory uses it.
"""

from __future__ import annotations

import base64
import signal
import smtplib
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any


from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.policy._config import ConfigError
from clientid_twisted.policy._decision import Verdict
from clientid_twisted.policy._builder import PolicyFactoryContext
from clientid_twisted.policy._manage import resultOf
from clientid_twisted.server.assembly import assembleServer
from clientid_twisted.testing import ConnectionTracker, RecordingPolicy
from tests.services import freePort

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ACCOUNT, PASSWORD = "alice@example.test", "alice password"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=str(EXAMPLES.parent),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class SelfTestTests(SynchronousTestCase):
    """
    C{python examples/NAME.py --selftest} prints OK and exits 0.
    """

    def assertSelfTest(self, name: str) -> str:
        result = _run(str(EXAMPLES / name), "--selftest")
        self.assertEqual(
            (result.returncode, result.stdout.splitlines()[-1:]),
            (0, ["OK"]),
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}",
        )
        return result.stdout

    def test_esmtpServer(self) -> None:
        output = self.assertSelfTest("esmtp_server.py")
        # The identity reached the application's own checker.
        self.assertIn("checker sees alice@example.test with CLIENTID type=UUID fingerprint=", output)

    def test_imapServer(self) -> None:
        self.assertSelfTest("imap_server.py")

    def test_customPolicy(self) -> None:
        self.assertSelfTest("custom_policy.py")


def _defaultSIGINT() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class ServeTests(SynchronousTestCase):
    """
    C{python examples/NAME.py PORT} serves on loopback and exits cleanly on
    SIGINT and SIGTERM.
    """

    def assertServesAndStops(self, name: str, port: str, sig: int) -> None:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / name), port],
            cwd=str(EXAMPLES.parent),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A shell that runs the tests in the background starts them with
            # SIGINT ignored, which children inherit, and Twisted (rightly)
            # leaves an ignored SIGINT alone: give the child the default, as
            # a terminal would.
            preexec_fn=_defaultSIGINT,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith("listening on 127.0.0.1:"):
                    break
            else:
                self.fail(f"{name} never listened: {process.stderr.read()}")  # type: ignore[union-attr]
            process.send_signal(sig)
            # communicate() drains both pipes while waiting: a child whose
            # shutdown log filled a pipe nobody read would never exit.
            try:
                out, err = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                out, err = process.communicate()
                self.fail(f"{name} did not stop on signal {sig}:\n{out[-4000:]}\n{err[-4000:]}")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()  # type: ignore[union-attr]
            process.stderr.close()  # type: ignore[union-attr]
        self.assertEqual(process.returncode, 0, f"{out[-4000:]}\n{err[-4000:]}")

    def test_esmtpServerSIGTERM(self) -> None:
        self.assertServesAndStops("esmtp_server.py", "0", signal.SIGTERM)

    def test_imapServerSIGINT(self) -> None:
        self.assertServesAndStops("imap_server.py", "0", signal.SIGINT)

    def test_customPolicySIGTERM(self) -> None:
        self.assertServesAndStops("custom_policy.py", str(freePort()), signal.SIGTERM)


# -- [policy] custom ----------------------------------------------------------

FACTORY_CALLS: list[PolicyFactoryContext] = []


def recordingPolicyFactory(context: PolicyFactoryContext) -> RecordingPolicy:
    """
    A C{[policy] custom} factory: refuses everyone.
    """
    FACTORY_CALLS.append(context)
    return RecordingPolicy(Verdict.REJECT, "custom says no")


def notAPolicy(context: PolicyFactoryContext) -> object:
    return object()


class CustomPolicyServerTests(TestCase):
    """
    The assembled server with C{[policy] custom} uses the named factory's
    policy for every login.
    """

    def assemble(self, custom: str) -> Any:
        dataDir = Path(self.mktemp())
        dataDir.mkdir(parents=True)
        (dataDir / "clientid.toml").write_text(
            "[server]\nauth_failure_delay_seconds = 0\n"
            f'[policy]\ncustom = "{custom}"\n'
            "[alerts]\nmail_account = false\n"
        )
        # A local store: ready at once, or failed at once.
        return resultOf(assembleServer(dataDir, hostname="localhost", storeURL="memory:"))

    def test_customPolicyDecides(self) -> Any:
        del FACTORY_CALLS[:]
        server = self.assemble("tests.test_examples:recordingPolicyFactory")
        self.addCleanup(server.authentication.store.close)
        server.users.addUser(ACCOUNT, PASSWORD)
        policy = server.authentication.policy
        self.assertIsInstance(policy, RecordingPolicy)
        [context] = FACTORY_CALLS
        self.assertIs(context.store, server.authentication.store)
        self.assertEqual(context.rawConfig["policy"]["custom"], "tests.test_examples:recordingPolicyFactory")
        self.assertIs(context.builtIn.store, context.store)

        tracker = ConnectionTracker(server.smtpFactory)
        port = reactor.listenTCP(0, server.smtpFactory, interface="127.0.0.1")
        self.addCleanup(tracker.whenClosed)
        self.addCleanup(port.stopListening)
        context_ = ssl.create_default_context(cadata=server.certificate.certificatePEM.decode("ascii"))

        def login() -> int:
            with smtplib.SMTP("127.0.0.1", port.getHost().port, timeout=20) as client:
                client.ehlo("laptop")
                client.starttls(context=context_)
                client.ehlo("laptop")
                client.docmd("CLIENTID", "UUID 5b0e0c1e-laptop")
                secret = base64.b64encode(f"\0{ACCOUNT}\0{PASSWORD}".encode()).decode()
                return client.docmd("AUTH", "PLAIN " + secret)[0]

        d = deferToThread(login)

        def check(code: int) -> None:
            # The right password, refused by the custom policy.
            self.assertEqual(code, 535)
            [attempt] = policy.attempts
            self.assertEqual(attempt.account, ACCOUNT)
            self.assertEqual(attempt.identity.token, "5b0e0c1e-laptop")
            self.assertEqual(attempt.protocolName, "smtp")
            [(decision, passwordAccepted)] = policy.outcomes
            self.assertTrue(passwordAccepted)
            self.assertEqual(decision.reason, "custom says no")

        return d.addCallback(check)

    def test_unloadable(self) -> None:
        error = self.assertRaises(ConfigError, self.assemble, "tests.no_such_module:factory")
        self.assertIn("[policy] custom 'tests.no_such_module:factory' cannot be loaded", str(error))

    def test_notAPolicy(self) -> None:
        error = self.assertRaises(ConfigError, self.assemble, "tests.test_examples:notAPolicy")
        self.assertIn("does not provide IClientIDPolicy", str(error))

    def test_malformedName(self) -> None:
        error = self.assertRaises(ConfigError, self.assemble, "tests/test_examples.py")
        self.assertIn('[policy] custom must name a factory as "package.module:factory"', str(error))
