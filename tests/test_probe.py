"""
Tests for C{clientid-probe} (L{clientid_twisted.probe}): it passes against
our SMTP and IMAP servers over STARTTLS and implicit TLS on loopback, and
fails exactly the right checks against small servers that each break one
rule; an unreachable server is exit status 2; C{--json} lists every check.

The probe is synchronous, so each run goes to a thread (C{deferToThread})
while the reactor serves it.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from zope.interface import implementer

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.portal import IRealm, Portal
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.mail import imap4, smtp
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted._identity import ClientIdentity
from clientid_twisted.imap import ClientIDIMAP4Factory, ClientIDIMAP4Server
from clientid_twisted.probe import main
from clientid_twisted.probe import imapchecks, smtpchecks
from clientid_twisted.probe.checks import Source, replaceIgnoringCase
from clientid_twisted.probe.cli import parseAddress, UsageError
from clientid_twisted.probe.report import escape, truncate
from clientid_twisted.server.imapserver import _LITERAL_AT_END, MailIMAP4Factory, MailIMAP4Server
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.server.submission import SubmissionESMTP, SubmissionFactory
from clientid_twisted.smtp import ClientIDESMTPFactory
from clientid_twisted.testing import ConnectionTracker, throwawayCertificate
from tests.loginfakes import RefusingDelivery
from tests.services import freePort

USER = "alice@example.test"
PASSWORD = "correct horse"

SMTP_IDS = [check.id for check in smtpchecks.CHECKS]
IMAP_IDS = [check.id for check in imapchecks.CHECKS]

SMTP_PLAINTEXT_ONLY = {
    "smtp-plain-not-advertised",
    "smtp-plain-refused",
    "smtp-plain-like-unknown",
    "smtp-starttls-forgets-auth",
    "smtp-starttls-injection",
}
IMAP_PLAINTEXT_ONLY = {
    "imap-plain-greeting",
    "imap-plain-not-advertised",
    "imap-plain-refused",
    "imap-plain-like-unknown",
    "imap-starttls-injection",
}


# -- servers ------------------------------------------------------------------


@implementer(IRealm)
class _Realm:
    """
    SMTP logins get a delivery that takes nothing; IMAP logins an empty
    in-memory account.
    """

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        if imap4.IAccount in interfaces:
            return imap4.IAccount, imap4.MemoryAccount(avatarId), lambda: None
        return smtp.IMessageDelivery, RefusingDelivery(), lambda: None


def _portal() -> Portal:
    checker = InMemoryUsernamePasswordDatabaseDontUse(
        **{USER: PASSWORD.encode("utf-8")}
    )
    return Portal(_Realm(), [checker])


class AdvertisesInPlaintextESMTP(SubmissionESMTP):
    """
    Lists CLIENTID in plaintext EHLO replies too.
    """

    def extensions(self) -> dict[bytes, Any]:
        ext = super().extensions()
        if not self.isEncrypted():
            ext[b"CLIENTID"] = None
        return ext


class RunsInjectedPlaintextESMTP(SubmissionESMTP):
    """
    Runs the lines that followed STARTTLS in the same plaintext read, as
    Twisted's own ESMTP does.
    """

    def _forgetSession(self) -> None:
        super()._forgetSession()
        self._discardingPlaintext = False


class AcceptsMalformedESMTP(SubmissionESMTP):
    """
    Answers a malformed CLIENTID with 250.
    """

    def _refuseClientID(self, code: int, message: bytes, reason: str) -> None:
        if code == 501:
            self.clientIdentity = ClientIdentity("MALFORMED", "accepted-anyway")
            self.sendCode(250, b"OK")
            return
        super()._refuseClientID(code, message, reason)


class AdvertisesInPlaintextIMAP4Server(ClientIDIMAP4Server):
    """
    Lists CLIENTID in plaintext CAPABILITY replies (and greeting) too.
    """

    def capabilities(self) -> dict[bytes, Any]:
        cap = super().capabilities()
        if not self.isEncrypted():
            cap[b"CLIENTID"] = None
        return cap


class RunsInjectedPlaintextIMAP4Server(ClientIDIMAP4Server):
    """
    Runs the lines that followed STARTTLS in the same plaintext read, as
    Twisted's own IMAP4Server does.
    """

    def _forgetPlaintext(self) -> None:
        self.clientIdentity = None
        self.clientIDAdvertised = False


class AcceptsMalformedIMAP4Server(ClientIDIMAP4Server):
    """
    Answers a malformed CLIENTID with OK.
    """

    @staticmethod
    def _parseClientIDLine(line: bytes) -> ClientIdentity:
        try:
            return ClientIDIMAP4Server._parseClientIDLine(line)
        except ValueError:
            return ClientIdentity("MALFORMED", "accepted-anyway")


class ReadsTokenAsLiteralIMAP4Server(MailIMAP4Server):
    """
    The runnable server as it was: literal announcements are checked on
    every line, CLIENTID lines too, before the CLIENTID parser sees them.
    """

    def literalAnnounced(self, line: bytes) -> Any:
        return _LITERAL_AT_END.search(line)


# -- running the probe -----------------------------------------------------------


class _ProbeTestCase(TestCase):
    """
    Listen on 127.0.0.1 port 0 with a throwaway certificate, run the probe
    in a thread, and wait for every server connection to close.
    """

    timeout = 60

    def setUp(self) -> None:
        self.certificate = throwawayCertificate()
        self.cafile = Path(self.mktemp())
        self.cafile.write_bytes(self.certificate.certificatePEM)

    def listen(self, factory: Any, implicitTLS: bool = False) -> int:
        tracker = ConnectionTracker(factory)
        if implicitTLS:
            factory = TLSMemoryBIOFactory(self.certificate.options(), False, factory)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(tracker.whenClosed)
        self.addCleanup(port.stopListening)
        return port.getHost().port  # type: ignore[attr-defined,no-any-return]

    def smtpFactory(self, protocol: Any = None) -> Any:
        factory = SubmissionFactory(_portal(), context=self.certificate.options())
        if protocol is not None:
            factory.protocol = protocol
        return factory

    def imapFactory(self, protocol: Any = None) -> Any:
        factory = ClientIDIMAP4Factory(_portal(), context=self.certificate.options())
        if protocol is not None:
            factory.protocol = protocol
        return factory

    @defer.inlineCallbacks
    def probe(
        self, *argv: str, login: bool = True
    ) -> Any:
        """
        Run C{clientid-probe ARGV} in a thread.

        @return: A Deferred firing with C{(exit status, stdout, stderr)}.
        """
        arguments = [*argv, "--timeout", "5"]
        stdin = io.StringIO()
        if login:
            arguments += ["--user", USER, "--password-stdin"]
            stdin = io.StringIO(PASSWORD + "\n")
        stdout, stderr = io.StringIO(), io.StringIO()
        status = yield deferToThread(
            main, arguments, stdout=stdout, stdin=stdin, stderr=stderr
        )
        return status, stdout.getvalue(), stderr.getvalue()

    @defer.inlineCallbacks
    def probeJSON(self, protocol: str, port: int, *options: str, **kwargs: Any) -> Any:
        """
        Run the probe with C{--json} and C{--cafile}.

        @return: A Deferred firing with C{(exit status, {id: check})}.
        """
        status, out, err = yield self.probe(
            protocol, f"127.0.0.1:{port}", "--cafile", str(self.cafile), "--json",
            *options, **kwargs,
        )
        document = json.loads(out)
        self.assertEqual(document["exitStatus"], status, err)
        return status, {check["id"]: check for check in document["checks"]}

    def assertResults(
        self, checks: dict[str, Any], expectedIds: list[str], failing: set[str], notApplicable: set[str]
    ) -> None:
        """
        Every check ran, exactly C{failing} failed, exactly
        C{notApplicable} could not be run, every other one passed.
        """
        self.assertEqual(list(checks), expectedIds)
        byResult: dict[str, set[str]] = {"pass": set(), "fail": set(), "n/a": set()}
        for check in checks.values():
            byResult[check["result"]].add(check["id"])
        details = {i: (checks[i]["detail"], checks[i]["reply"]) for i in byResult["fail"] | byResult["n/a"]}
        self.assertEqual(byResult["fail"], failing, details)
        self.assertEqual(byResult["n/a"], notApplicable, details)


class OurServerTests(_ProbeTestCase):
    """
    Our servers pass every check the probe can run, over STARTTLS and over
    implicit TLS, logged in.
    """

    @defer.inlineCallbacks
    def test_smtpSTARTTLS(self) -> Any:
        port = self.listen(self.smtpFactory())
        status, checks = yield self.probeJSON("smtp", port, "--starttls")
        self.assertResults(checks, SMTP_IDS, set(), set())
        self.assertEqual(status, 0)

    @defer.inlineCallbacks
    def test_smtpImplicitTLS(self) -> Any:
        port = self.listen(self.smtpFactory(), implicitTLS=True)
        status, checks = yield self.probeJSON("smtp", port, "--tls")
        self.assertResults(checks, SMTP_IDS, set(), SMTP_PLAINTEXT_ONLY)
        self.assertEqual(status, 0)

    @defer.inlineCallbacks
    def test_smtpPlainClientIDESMTP(self) -> Any:
        """
        The embeddable L{ClientIDESMTP}, without the submission rules,
        passes too (it takes AUTH in plaintext: the probe's plaintext AUTH
        attempt is forgotten at STARTTLS all the same).
        """
        factory = ClientIDESMTPFactory(_portal(), context=self.certificate.options())
        port = self.listen(factory)
        status, checks = yield self.probeJSON("smtp", port)
        self.assertResults(checks, SMTP_IDS, set(), set())
        self.assertEqual(status, 0)

    @defer.inlineCallbacks
    def test_imapSTARTTLS(self) -> Any:
        port = self.listen(self.imapFactory())
        status, checks = yield self.probeJSON("imap", port, "--starttls")
        self.assertResults(checks, IMAP_IDS, set(), {"imap-tls-greeting"})
        self.assertEqual(status, 0)

    @defer.inlineCallbacks
    def test_imapImplicitTLS(self) -> Any:
        port = self.listen(self.imapFactory(), implicitTLS=True)
        status, checks = yield self.probeJSON("imap", port, "--tls")
        self.assertEqual(status, 0)
        # The greeting lists CLIENTID, so "before CAPABILITY" cannot happen.
        self.assertResults(
            checks,
            IMAP_IDS,
            set(),
            IMAP_PLAINTEXT_ONLY
            | {"imap-before-capability", "imap-before-capability-like-unknown"},
        )

    @defer.inlineCallbacks
    def test_errorBudget(self) -> Any:
        """
        The runnable server ends a session after too many errors (421 /
        BYE); the probe sends the malformed variants that met a closed
        session again on a fresh connection, so a small budget does not
        fail a conforming server.
        """
        limits = ServerLimits(maxErrorsPerSession=3, authFailureDelay=0)
        smtpPort = self.listen(
            SubmissionFactory(_portal(), context=self.certificate.options(), limits=limits)
        )
        imapPort = self.listen(
            MailIMAP4Factory(_portal(), context=self.certificate.options(), limits=limits)
        )
        status, checks = yield self.probeJSON("smtp", smtpPort)
        self.assertResults(checks, SMTP_IDS, set(), set())
        self.assertEqual(status, 0)
        status, checks = yield self.probeJSON("imap", imapPort)
        self.assertResults(checks, IMAP_IDS, set(), {"imap-tls-greeting"})
        self.assertEqual(status, 0)

    @defer.inlineCallbacks
    def test_withoutLogin(self) -> Any:
        """
        Without C{--user} the checks that need a login are not applicable;
        the run still conforms.
        """
        port = self.listen(self.imapFactory())
        status, checks = yield self.probeJSON("imap", port, login=False)
        self.assertEqual(status, 0)
        needLogin = {
            "imap-after-login",
            "imap-after-login-not-advertised",
            "imap-after-login-like-unknown",
        }
        self.assertResults(checks, IMAP_IDS, set(), needLogin | {"imap-tls-greeting"})
        self.assertIn("--user", checks["imap-after-login"]["detail"])

    @defer.inlineCallbacks
    def test_table(self) -> Any:
        """
        Without C{--json}: a table of check, source, result and reply (CR
        and LF escaped), then the verdict.
        """
        port = self.listen(self.smtpFactory())
        status, out, err = yield self.probe(
            "smtp", f"127.0.0.1:{port}", "--insecure", login=False
        )
        self.assertEqual(status, 0, err)
        lines = out.splitlines()
        self.assertIn("certificate not verified", lines[0])
        self.assertEqual(lines[2].split(), ["check", "source", "result", "reply", "seen"])
        rows = {line.split()[0]: line.split(None, 3) for line in lines[4 : 4 + len(SMTP_IDS)]}
        self.assertEqual(list(rows), SMTP_IDS)
        self.assertEqual(rows["smtp-repeat"][1:3], ["MUST", "pass"])
        self.assertTrue(rows["smtp-repeat"][3].startswith("503 "), rows["smtp-repeat"])
        self.assertTrue(rows["smtp-valid"][3].endswith("\\r\\n"))
        self.assertEqual(rows["smtp-no-pipelining"][1:3], ["SHOULD", "pass"])
        self.assertEqual(rows["smtp-after-auth"][1:], ["MUST", "n/a"])
        self.assertIn("n/a  smtp-after-auth: ", out)
        self.assertIn("CONFORMING: no MUST rule failed.", lines[-1])

    @defer.inlineCallbacks
    def test_json(self) -> Any:
        """
        C{--json} lists every check with its source and result.
        """
        port = self.listen(self.imapFactory())
        status, out, err = yield self.probe(
            "imap", f"127.0.0.1:{port}", "--insecure", "--json", login=False
        )
        document = json.loads(out)
        self.assertEqual(status, 0, err)
        self.assertEqual(document["protocol"], "imap")
        self.assertEqual(document["target"], f"127.0.0.1:{port}")
        self.assertEqual(document["tls"], "starttls")
        self.assertEqual([c["id"] for c in document["checks"]], IMAP_IDS)
        sources = {c.id: c.source.value for c in imapchecks.CHECKS}
        for check in document["checks"]:
            self.assertEqual(check["source"], sources[check["id"]])
            self.assertIn(check["result"], ("pass", "fail", "n/a"))
            self.assertTrue(check["title"])
            self.assertTrue(check["reference"])
        self.assertEqual(document["summary"]["fail"], 0)
        self.assertEqual(document["summary"]["n/a"], 4)
        self.assertEqual(document["exitStatus"], 0)

    @defer.inlineCallbacks
    def test_randomToken(self) -> Any:
        """
        Each run sends a fresh random token: what the server accepted
        differs between two runs.
        """
        seen: list[Any] = []

        class Recording(SubmissionESMTP):
            def clientIDCommand(self, line: bytes) -> None:
                super().clientIDCommand(line)
                if self.clientIdentity is not None:
                    seen.append(self.clientIdentity)

        port = self.listen(self.smtpFactory(Recording))
        for run in range(2):
            status, checks = yield self.probeJSON("smtp", port, login=False)
            self.assertEqual(status, 0)
        tokens = {identity.token for identity in seen if identity.type == "UUID"}
        self.assertEqual(len(tokens), 2, tokens)


class WrongServerTests(_ProbeTestCase):
    """
    Servers that each break one rule fail exactly the checks for it, and
    the run exits 1.
    """

    @defer.inlineCallbacks
    def test_smtpAdvertisesInPlaintext(self) -> Any:
        port = self.listen(self.smtpFactory(AdvertisesInPlaintextESMTP))
        status, checks = yield self.probeJSON("smtp", port)
        self.assertResults(checks, SMTP_IDS, {"smtp-plain-not-advertised"}, set())
        self.assertEqual(status, 1)

    @defer.inlineCallbacks
    def test_smtpRunsInjectedPlaintext(self) -> Any:
        port = self.listen(self.smtpFactory(RunsInjectedPlaintextESMTP))
        status, checks = yield self.probeJSON("smtp", port)
        self.assertResults(checks, SMTP_IDS, {"smtp-starttls-injection"}, set())
        self.assertEqual(status, 1)
        self.assertIn("CLIENTID", checks["smtp-starttls-injection"]["reply"])

    @defer.inlineCallbacks
    def test_smtpAcceptsMalformed(self) -> Any:
        port = self.listen(self.smtpFactory(AcceptsMalformedESMTP))
        status, checks = yield self.probeJSON("smtp", port)
        self.assertEqual(status, 1)
        malformed = {f"smtp-malformed-{name}" for name, _, _, _ in smtpchecks.MALFORMED}
        self.assertResults(checks, SMTP_IDS, malformed, set())
        self.assertEqual(checks["smtp-malformed-tab"]["reply"], "250 OK\r\n")

    @defer.inlineCallbacks
    def test_imapAdvertisesInPlaintext(self) -> Any:
        port = self.listen(self.imapFactory(AdvertisesInPlaintextIMAP4Server))
        status, checks = yield self.probeJSON("imap", port)
        self.assertResults(
            checks,
            IMAP_IDS,
            {"imap-plain-greeting", "imap-plain-not-advertised"},
            {"imap-tls-greeting"},
        )
        self.assertEqual(status, 1)

    @defer.inlineCallbacks
    def test_imapRunsInjectedPlaintext(self) -> Any:
        port = self.listen(self.imapFactory(RunsInjectedPlaintextIMAP4Server))
        status, checks = yield self.probeJSON("imap", port)
        self.assertResults(
            checks, IMAP_IDS, {"imap-starttls-injection"}, {"imap-tls-greeting"}
        )
        self.assertEqual(status, 1)
        self.assertIn("OK CLIENTID completed", checks["imap-starttls-injection"]["reply"])

    @defer.inlineCallbacks
    def test_imapAcceptsMalformed(self) -> Any:
        port = self.listen(self.imapFactory(AcceptsMalformedIMAP4Server))
        status, checks = yield self.probeJSON("imap", port)
        self.assertEqual(status, 1)
        malformed = {f"imap-malformed-{name}" for name, _, _, _ in imapchecks.MALFORMED}
        self.assertResults(checks, IMAP_IDS, malformed, {"imap-tls-greeting"})

    @defer.inlineCallbacks
    def test_imapReadsTokenAsLiteral(self) -> Any:
        """
        A server that checks literal announcements before it parses
        CLIENTID fails the literal-shaped token checks (BAD, NO [TOOBIG],
        BYE); ours passes them (L{OurServerTests.test_errorBudget}).
        """
        factory = MailIMAP4Factory(_portal(), context=self.certificate.options())
        factory.protocol = ReadsTokenAsLiteralIMAP4Server
        port = self.listen(factory)
        status, checks = yield self.probeJSON("imap", port)
        self.assertEqual(status, 1)
        shapes = {f"imap-{name}" for name, _, _ in imapchecks.LITERAL_SHAPES}
        self.assertResults(checks, IMAP_IDS, shapes, {"imap-tls-greeting"})
        self.assertIn("BAD Non-synchronizing", checks["imap-literal-plus-token"]["reply"])
        self.assertIn("NO [TOOBIG]", checks["imap-literal-toobig-token"]["reply"])

    @defer.inlineCallbacks
    def test_warningsOnlyExitZero(self) -> Any:
        """
        A server that breaks only a SHOULD (PIPELINING beside CLIENTID) is
        warned about but conforms: exit status 0.
        """

        class ListsPipelining(SubmissionESMTP):
            def extensions(self) -> dict[bytes, Any]:
                ext = super().extensions()
                ext[b"PIPELINING"] = None
                return ext

        port = self.listen(self.smtpFactory(ListsPipelining))
        status, out, err = yield self.probe(
            "smtp", f"127.0.0.1:{port}", "--cafile", str(self.cafile)
        )
        self.assertEqual(status, 0, err)
        self.assertIn("warning (SHOULD)  smtp-no-pipelining:", out)
        self.assertIn("1 warning(s)", out.splitlines()[-1])


class UnreachableTests(_ProbeTestCase):
    """
    When nothing can be checked, the exit status is 2.
    """

    @defer.inlineCallbacks
    def test_connectionRefused(self) -> Any:
        status, out, err = yield self.probe(
            "smtp", f"127.0.0.1:{freePort()}", login=False
        )
        self.assertEqual(status, 2)
        self.assertIn("cannot connect", err)
        self.assertEqual(out, "")

    @defer.inlineCallbacks
    def test_connectionRefusedJSON(self) -> Any:
        status, out, err = yield self.probe(
            "imap", f"127.0.0.1:{freePort()}", "--json", login=False
        )
        self.assertEqual(status, 2)
        document = json.loads(out)
        self.assertEqual(document["exitStatus"], 2)
        self.assertEqual(document["checks"], [])
        self.assertIn("cannot connect", document["error"])

    @defer.inlineCallbacks
    def test_untrustedCertificate(self) -> Any:
        """
        Without C{--insecure} or C{--cafile} a self-signed certificate is a
        TLS failure: nothing is checked.
        """
        port = self.listen(self.imapFactory())
        status, out, err = yield self.probe("imap", f"127.0.0.1:{port}", login=False)
        self.assertEqual(status, 2)
        self.assertIn("TLS handshake", err)
        self.assertIn("--insecure", err)

    @defer.inlineCallbacks
    def test_noSTARTTLS(self) -> Any:
        """
        A server that offers no STARTTLS cannot be checked.
        """
        factory = SubmissionFactory(_portal(), context=None)
        port = self.listen(factory)
        status, out, err = yield self.probe(
            "smtp", f"127.0.0.1:{port}", "--insecure", login=False
        )
        self.assertEqual(status, 2)
        self.assertIn("does not offer STARTTLS", err)


class CommandLineTests(SynchronousTestCase):
    """
    Usage errors, and the small pure helpers.
    """

    def runProbe(self, *argv: str, stdin: str = "") -> tuple[int, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = main(list(argv), stdout=stdout, stdin=io.StringIO(stdin), stderr=stderr)
        return status, stderr.getvalue()

    def test_userNeedsPassword(self) -> None:
        status, err = self.runProbe("smtp", "127.0.0.1:1", "--user", "alice")
        self.assertEqual(status, 2)
        self.assertIn("--user and --password-stdin go together", err)

    def test_emptyPassword(self) -> None:
        status, err = self.runProbe("smtp", "127.0.0.1:1", "--user", "a", "--password-stdin")
        self.assertEqual(status, 2)
        self.assertIn("no password", err)

    def test_startTLSAndTLSExclusive(self) -> None:
        status, err = self.runProbe("smtp", "127.0.0.1", "--tls", "--starttls")
        self.assertEqual(status, 2)
        self.assertIn("not allowed with", err)

    def test_missingCAFile(self) -> None:
        status, err = self.runProbe("imap", "127.0.0.1", "--cafile", "/nonexistent.pem")
        self.assertEqual(status, 2)
        self.assertIn("--cafile", err)

    def test_parseAddress(self) -> None:
        self.assertEqual(parseAddress("mail.example:465", 1), ("mail.example", 465))
        self.assertEqual(parseAddress("mail.example", 587), ("mail.example", 587))
        self.assertEqual(parseAddress("[::1]:993", 1), ("::1", 993))
        self.assertEqual(parseAddress("::1", 143), ("::1", 143))
        self.assertRaises(UsageError, parseAddress, "host:99999", 1)
        self.assertRaises(UsageError, parseAddress, "host:x", 1)

    def test_escapeAndTruncate(self) -> None:
        self.assertEqual(escape(b"250 OK\r\n\t\\\xc3"), "250 OK\\r\\n\\t\\\\\\xc3")
        self.assertEqual(truncate("abcdefghij", 8), "abcde...")
        self.assertEqual(truncate("abcdefghij", 10), "abcdefghij")
        # A capability list is cut so that CLIENTID stays in view.
        listing = "* CAPABILITY IMAP4rev1 STARTTLS CLIENTID SASL-IR IDLE"
        self.assertEqual(truncate(listing, 24, "CLIENTID"), "...CLIENTID SASL-IR IDLE")
        self.assertEqual(truncate(listing[:40], 20, "CLIENTID"), "...STARTTLS CLIENTID")
        longer = listing + " NAMESPACE ID UNSELECT"
        self.assertEqual(truncate(longer, 24, "CLIENTID"), "...TTLS CLIENTID SASL...")
        self.assertEqual(truncate(longer, 24, "NOTTHERE"), longer[:21] + "...")

    def test_replaceIgnoringCase(self) -> None:
        """
        A reply that echoes the unknown command's name is compared as if
        the command had been CLIENTID.
        """
        self.assertEqual(
            replaceIgnoringCase(b"500 xprobeAB: unknown, XPROBEAB!", b"XPROBEAB", b"CLIENTID"),
            b"500 CLIENTID: unknown, CLIENTID!",
        )

    def test_sources(self) -> None:
        """
        The checks the drafts do not make MUSTs are graded as such: the
        PIPELINING rule is a SHOULD, refusals "like an unknown command" and
        DEVICE_ID are our contract; IMAP has no after-AUTH rule.
        """
        sources = {c.id: c.source for c in smtpchecks.CHECKS + imapchecks.CHECKS}
        self.assertIs(sources["smtp-no-pipelining"], Source.SHOULD)
        self.assertIs(sources["smtp-plain-like-unknown"], Source.CONTRACT)
        self.assertIs(sources["smtp-malformed-underscore-type"], Source.CONTRACT)
        self.assertIs(sources["imap-malformed-underscore-type"], Source.CONTRACT)
        self.assertIs(sources["smtp-repeat"], Source.MUST)
        self.assertIs(sources["imap-failed-login"], Source.CONTRACT)
        self.assertNotIn("imap-after-failed-auth", sources)
        self.assertEqual(len(sources), len(smtpchecks.CHECKS) + len(imapchecks.CHECKS))
