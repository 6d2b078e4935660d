"""
The device policy end to end: the server built as
L{clientid_twisted.server.assembly} builds it, with the checker from
L{clientid_twisted.policy._builder.buildAuthentication} in its portal, driven
over real TLS on loopback by Python's C{smtplib} and C{imaplib}, and
managed with C{clientid-admin} (its C{main}).
"""

from __future__ import annotations

import base64
import imaplib
import inspect
import io
import json
import smtplib
import ssl
from pathlib import Path
from typing import Any

from twisted.cred.portal import Portal
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.mail import imap4
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from clientid_twisted.admin import main as admin
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted._keyfile import KEY_FILE
from clientid_twisted.policy._builder import Authentication, buildAuthentication
from clientid_twisted.server.delivery import MailRealm, maildirPath
from clientid_twisted.server.imapserver import MailIMAP4Factory
from clientid_twisted.server.assembly import mailboxNotices
from clientid_twisted.server.submission import SubmissionFactory
from clientid_twisted.server.users import ScryptChecker, UserDatabase
from clientid_twisted.store._errors import StoreError
from clientid_twisted.testing import ConnectionTracker, throwawayCertificate
from tests.test_imap_server import registerIMAPLibCommand

HOSTNAME = "mail.example.test"
ALICE, BOB, CAROL = "alice@example.test", "bob@example.test", "carol@example.test"
PASSWORDS = {ALICE: "alice password", BOB: "bob password", CAROL: "carol password"}
LAPTOP = "5b0e0c1e-laptop-token-9f1d-7a44c0de"
PHONE = "1c2d3e4f-phone-token-8a7b-6c5d4e3f"
SMTP_REFUSED = (535, b"5.7.8 Authentication credentials invalid")
IMAP_REFUSED = ("NO", b"[AUTHENTICATIONFAILED] Authentication failed")
IMAP_OK = ("OK", b"LOGIN succeeded")


def _quickLimits() -> dict[str, Any]:
    """
    Server limits without the delay before a failed login is answered
    (where the server has one): it would only slow these tests down, and a
    policy refusal is delayed exactly like a wrong password anyway.
    """
    if "limits" not in inspect.signature(SubmissionFactory.__init__).parameters:
        return {}  # pragma: no cover
    from clientid_twisted.server.limits import ServerLimits

    return {"limits": ServerLimits(authFailureDelay=0.0)}


def imapsLogin(
    port: int, context: Any, token: str | None, account: str, password: str, timeout: float = 20
) -> tuple[str, bytes]:
    """
    With imaplib over implicit TLS: CLIENTID UUID C{token} (unless
    L{None}), then LOGIN; the LOGIN reply's status and text.
    """
    connection = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=timeout)
    try:
        if token is not None:
            assert connection._simple_command("CLIENTID", "UUID", token)[0] == "OK"
        status, data = connection._simple_command("LOGIN", account, connection._quote(password))
        if status == "OK":
            connection.state = "AUTH"
        return status, data[-1]
    finally:
        connection.logout()


class PolicyServer:
    """
    The runnable server's parts, wired like assembly.py, with the CLIENTID
    checker in the portal, listening on loopback once the identity key is
    known (L{ready}: at once for a local store).

    @ivar ready: Fires with this server once it listens.
    @ivar stores: The store it opened (to close it, ready or not).
    """

    auth: Authentication
    hasher: IdentityHasher

    def __init__(self, test: TestCase, config: dict[str, Any]) -> None:
        self.dataDir = Path(test.mktemp())
        self.dataDir.mkdir(parents=True)
        self.certificate = throwawayCertificate()
        self.users = UserDatabase(self.dataDir / "users.json")
        for address, password in PASSWORDS.items():
            self.users.addUser(address, password)
        self.stores: list[Any] = []
        built = buildAuthentication(
            ScryptChecker(self.users),
            config,
            None,
            self.dataDir / KEY_FILE,
            dataDir=self.dataDir,
            applicationObservers=mailboxNotices(self.dataDir, self.users, HOSTNAME),
            reactor=reactor,
            wrapStore=lambda store: self.stores.append(store) or store,
        )
        for store in self.stores:
            test.addCleanup(store.close)
        self.context = ssl.create_default_context(
            cadata=self.certificate.certificatePEM.decode("ascii")
        )
        registerIMAPLibCommand(test, "CLIENTID")
        self.ready: defer.Deferred[PolicyServer] = built.addCallback(self._listen, test)

    def _listen(self, auth: Authentication, test: TestCase) -> PolicyServer:
        self.auth = auth
        self.hasher = auth.hasher
        tlsOptions = self.certificate.options()
        realm = MailRealm(self.dataDir, self.users, HOSTNAME)
        if imap4.IAccount not in realm.avatarFactories:  # pragma: no cover
            from clientid_twisted.server.mailbox import MaildirAccount

            realm.avatarFactories[imap4.IAccount] = lambda avatarId, mind: (
                MaildirAccount(maildirPath(self.dataDir, avatarId.decode("ascii"))),
                lambda: None,
            )
        portal = Portal(realm, [self.auth.checker])
        limits = _quickLimits()
        self.smtpFactory = SubmissionFactory(
            portal, context=tlsOptions, identityHasher=self.hasher, **limits
        )
        self.smtpFactory.domain = HOSTNAME.encode("idna")
        self.imapFactory = MailIMAP4Factory(
            portal, context=tlsOptions, identityHasher=self.hasher, **limits
        )

        trackers = [ConnectionTracker(self.smtpFactory), ConnectionTracker(self.imapFactory)]
        smtpPort = reactor.listenTCP(0, self.smtpFactory, interface="127.0.0.1")
        imapsPort = reactor.listenTCP(
            0, TLSMemoryBIOFactory(tlsOptions, False, self.imapFactory), interface="127.0.0.1"
        )
        for port in (smtpPort, imapsPort):
            test.addCleanup(port.stopListening)
        for tracker in trackers:
            test.addCleanup(tracker.whenClosed)
        self.smtpPort = smtpPort.getHost().port
        self.imapsPort = imapsPort.getHost().port
        return self

    # -- clients (blocking: run them with deferToThread) ----------------------

    def smtpLogin(self, token: str | None, account: str = ALICE, password: str | None = None) -> tuple[int, bytes]:
        """
        EHLO, STARTTLS, EHLO, CLIENTID, AUTH PLAIN: the AUTH reply.
        """
        password = PASSWORDS[account] if password is None else password
        with smtplib.SMTP("127.0.0.1", self.smtpPort, timeout=20) as client:
            client.ehlo("laptop.example.net")
            client.starttls(context=self.context)
            client.ehlo("laptop.example.net")
            if token is not None:
                assert client.docmd("CLIENTID", "UUID " + token)[0] == 250
            secret = base64.b64encode(f"\0{account}\0{password}".encode()).decode()
            return client.docmd("AUTH", "PLAIN " + secret)

    def imapLogin(
        self, token: str | None, account: str = ALICE, password: str | None = None
    ) -> tuple[str, bytes]:
        """
        Implicit TLS, CLIENTID, LOGIN: the LOGIN reply after its tag (its
        status, and its text).
        """
        password = PASSWORDS[account] if password is None else password
        return imapsLogin(self.imapsPort, self.context, token, account, password)

    def smtp(self, *args: Any, **kwargs: Any) -> defer.Deferred[tuple[int, bytes]]:
        return deferToThread(self.smtpLogin, *args, **kwargs)

    def imap(self, *args: Any, **kwargs: Any) -> defer.Deferred[tuple[str, bytes]]:
        return deferToThread(self.imapLogin, *args, **kwargs)

    # -- administration -------------------------------------------------------

    def admin(self, *arguments: str) -> tuple[int, str, str]:
        stdout, stderr = io.StringIO(), io.StringIO()
        status = admin(
            ["--data-dir", str(self.dataDir), *arguments], stdout=stdout, stderr=stderr
        )
        return status, stdout.getvalue(), stderr.getvalue()

    def devices(self, account: str = ALICE) -> dict[str, str]:
        status, out, err = self.admin("devices", "list", account, "--json")
        assert status == 0, err
        return {d["fingerprint"]: d["state"] for d in json.loads(out)}

    def fingerprint(self, token: str) -> str:
        return self.hasher.fingerprint(ClientIdentity("UUID", token))

    def inbox(self, account: str = ALICE) -> list[bytes]:
        new = maildirPath(self.dataDir, account) / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []

    @defer.inlineCallbacks
    def waitForMail(self, account: str = ALICE, count: int = 1) -> Any:
        for n in range(200):
            if len(self.inbox(account)) >= count:
                return self.inbox(account)
            yield deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"no notice arrived for {account}")


class PolicyServerTestCase(TestCase):
    timeout = 120

    def serve(self, **tables: Any) -> PolicyServer:
        return PolicyServer(self, tables)


class AllowlistTests(PolicyServerTestCase):
    @defer.inlineCallbacks
    def test_refusalLooksLikeAWrongPassword(self) -> Any:
        """
        An unknown device with the right password gets, byte for byte, the
        reply a wrong password gets, on SMTP and on IMAP.
        """
        s = self.serve(policy={"devices": "allowlist"})
        policyRefusal = yield s.smtp(LAPTOP)
        wrongPassword = yield s.smtp(LAPTOP, password="wrong")
        noClientID = yield s.smtp(None)
        self.assertEqual(policyRefusal, SMTP_REFUSED)
        self.assertEqual(wrongPassword, policyRefusal)
        self.assertEqual(noClientID, policyRefusal)
        imapRefusal = yield s.imap(LAPTOP)
        imapWrong = yield s.imap(LAPTOP, password="wrong")
        imapNoClientID = yield s.imap(None)
        self.assertEqual(imapRefusal, IMAP_REFUSED)
        self.assertEqual(imapWrong, imapRefusal)
        self.assertEqual(imapNoClientID, imapRefusal)

    @defer.inlineCallbacks
    def test_approveThenRevoke(self) -> Any:
        s = self.serve(policy={"devices": "allowlist"})
        self.assertEqual((yield s.smtp(LAPTOP)), SMTP_REFUSED)
        self.assertEqual(s.devices(), {s.fingerprint(LAPTOP): "pending"})

        # The pending device, by the fingerprint the listing shows.
        status, out, err = s.admin(
            "devices", "approve", ALICE, "--fingerprint", s.fingerprint(LAPTOP)
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual((yield s.smtp(LAPTOP))[0], 235)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_OK)

        # A device never seen, by its token.
        self.assertEqual(s.admin("devices", "approve", ALICE, "UUID", PHONE)[0], 0)
        self.assertEqual((yield s.imap(PHONE)), IMAP_OK)

        self.assertEqual(s.admin("devices", "revoke", ALICE, "UUID", LAPTOP)[0], 0)
        self.assertEqual((yield s.smtp(LAPTOP)), SMTP_REFUSED)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_REFUSED)
        self.assertEqual((yield s.imap(PHONE)), IMAP_OK)
        self.assertEqual(
            s.devices(), {s.fingerprint(LAPTOP): "revoked", s.fingerprint(PHONE): "approved"}
        )


class LimitTests(PolicyServerTestCase):
    @defer.inlineCallbacks
    def test_deviceLockoutSparesOtherDevices(self) -> Any:
        """
        A device that fails too often is locked, even with the right
        password, on both protocols; another device on the same address
        (127.0.0.1) keeps working on both.
        """
        s = self.serve(limits={"device_failures": 3})
        for n in range(3):
            self.assertEqual((yield s.smtp(LAPTOP, password="wrong")), SMTP_REFUSED)
        self.assertEqual((yield s.smtp(LAPTOP)), SMTP_REFUSED)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_REFUSED)
        self.assertEqual((yield s.smtp(PHONE))[0], 235)
        self.assertEqual((yield s.imap(PHONE)), IMAP_OK)
        # The operator lifts the lock; the next login works.
        self.assertEqual(s.admin("tokens", "unlock", "UUID", LAPTOP)[0], 0)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_OK)

    @defer.inlineCallbacks
    def test_tokenTriedOnTooManyAccounts(self) -> Any:
        s = self.serve(limits={"accounts_per_token": 2})
        self.assertEqual((yield s.smtp(LAPTOP, account=ALICE))[0], 235)
        self.assertEqual((yield s.smtp(LAPTOP, account=BOB))[0], 235)
        self.assertEqual((yield s.smtp(LAPTOP, account=CAROL)), SMTP_REFUSED)
        self.assertEqual((yield s.imap(LAPTOP, account=ALICE)), IMAP_REFUSED)
        status, out, err = s.admin("events", "--json")
        kinds = [e["event"] for e in json.loads(out)]
        self.assertIn("token-locked", kinds)
        self.assertEqual((yield s.imap(PHONE, account=CAROL)), IMAP_OK)


class ModeTests(PolicyServerTestCase):
    @defer.inlineCallbacks
    def test_tofu(self) -> Any:
        s = self.serve(policy={"devices": "tofu", "tofu_max_devices": 1})
        self.assertEqual((yield s.smtp(LAPTOP))[0], 235)
        self.assertEqual((yield s.smtp(PHONE)), SMTP_REFUSED)
        self.assertEqual((yield s.imap(PHONE)), IMAP_REFUSED)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_OK)
        self.assertEqual(
            s.devices(), {s.fingerprint(LAPTOP): "approved", s.fingerprint(PHONE): "pending"}
        )
        # The owner hears of both: the first device, and the refused one.
        notices = yield s.waitForMail(count=2)
        subjects = b"".join(notices)
        self.assertIn(b"Subject: New device logged in", subjects)
        self.assertIn(b"Subject: Your mail password was used from a refused device", subjects)
        self.assertIn(s.fingerprint(PHONE).encode(), subjects)

    @defer.inlineCallbacks
    def test_underAttack(self) -> Any:
        s = self.serve(policy={"under_attack": True})
        self.assertEqual(s.admin("devices", "approve", ALICE, "UUID", LAPTOP)[0], 0)
        self.assertEqual((yield s.smtp(LAPTOP))[0], 235)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_OK)
        self.assertEqual((yield s.smtp(PHONE)), SMTP_REFUSED)
        self.assertEqual((yield s.smtp(None)), SMTP_REFUSED)
        self.assertEqual((yield s.imap(None)), IMAP_REFUSED)


class AlertTests(PolicyServerTestCase):
    @defer.inlineCallbacks
    def test_alertMailLandsInInbox(self) -> Any:
        """
        A new device's notice is delivered to the account's INBOX, from
        postmaster, and the account reads it over IMAP.
        """
        s = self.serve()
        self.assertEqual((yield s.smtp(LAPTOP))[0], 235)
        [notice] = yield s.waitForMail()
        self.assertIn(f"From: Mail security <postmaster@{HOSTNAME}>".encode(), notice)
        self.assertIn(b"Subject: New device logged in to your mail account", notice)
        self.assertIn(s.fingerprint(LAPTOP).encode(), notice)
        self.assertNotIn(LAPTOP.encode(), notice)

        def read() -> Any:
            connection = imaplib.IMAP4_SSL("127.0.0.1", s.imapsPort, ssl_context=s.context, timeout=20)
            try:
                connection._simple_command("CLIENTID", "UUID", LAPTOP)
                connection.login(ALICE, PASSWORDS[ALICE])
                connection.select("INBOX")
                return connection.fetch("1", "(BODY.PEEK[])")
            finally:
                connection.logout()

        status, data = yield deferToThread(read)
        self.assertEqual(status, "OK")
        self.assertEqual(data[0][1], notice)


class WebhookRecorder(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request: Any) -> bytes:
        self.bodies.append(request.content.read())
        return b"ok"


class PrivacyTests(PolicyServerTestCase):
    @defer.inlineCallbacks
    def test_tokenNeverStoredNorLoggedNorSent(self) -> Any:
        """
        After logins of every kind (learned, refused, locked, approved,
        revoked), no file under the data directory (the SQLite store and its
        WAL included), no log event and no webhook body holds a token.
        """
        hook = WebhookRecorder()
        site = reactor.listenTCP(0, server.Site(hook), interface="127.0.0.1")
        self.addCleanup(site.stopListening)
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        s = self.serve(
            limits={"device_failures": 2},
            alerts={"webhook": f"http://127.0.0.1:{site.getHost().port}/hook"},
        )
        self.assertEqual((yield s.smtp(LAPTOP))[0], 235)
        self.assertEqual((yield s.imap(LAPTOP, account=BOB)), IMAP_OK)
        for n in range(2):
            yield s.smtp(PHONE, password="wrong")
        self.assertEqual((yield s.smtp(PHONE)), SMTP_REFUSED)
        self.assertEqual(s.admin("devices", "revoke", ALICE, "UUID", LAPTOP)[0], 0)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_REFUSED)
        self.assertEqual(s.admin("tokens", "revoke", "UUID", PHONE, "--for", "60")[0], 0)
        yield s.waitForMail(count=2)
        for n in range(200):
            if len(hook.bodies) >= 3 and s.auth.policy.alertObservers[-1].pending == 0:
                break
            yield deferLater(reactor, 0.05, lambda: None)

        def files() -> list[Path]:
            return [p for p in s.dataDir.rglob("*") if p.is_file()]

        tokens = [LAPTOP.encode(), PHONE.encode()]
        names = [str(p) for p in files()]
        self.assertTrue(any(n.endswith("clientid.sqlite3") for n in names), names)
        for path in files():
            content = path.read_bytes()
            for token in tokens:
                self.assertNotIn(token, content, f"token in {path}")
        yield s.auth.store.close()
        for path in files():
            for token in tokens:
                self.assertNotIn(token, path.read_bytes(), f"token in {path}")
        self.assertTrue(hook.bodies)
        kinds = set()
        for body in hook.bodies:
            alert = json.loads(body)
            kinds.add(alert["kind"])
            for token in tokens:
                self.assertNotIn(token, body)
        self.assertIn("device-new", kinds)
        self.assertIn("device-locked", kinds)
        self.assertTrue(logged)
        text = repr(logged).encode()
        for token in tokens:
            self.assertNotIn(token, text)
        self.assertIn(s.fingerprint(LAPTOP).encode(), text)


class OutageTests(PolicyServerTestCase):
    @defer.inlineCallbacks
    def test_tempfailThenRecovery(self) -> Any:
        """
        While the store fails, logins get a temporary failure (not a wrong
        password); when it comes back, logins work again by themselves.
        """
        s = self.serve()
        working = s.auth.store.loadState

        def broken(query: Any) -> Any:
            return defer.fail(StoreError("database is locked"))

        self.patch(s.auth.store, "loadState", broken)
        self.assertEqual((yield s.smtp(LAPTOP)), (454, b"4.7.0 Temporary authentication failure"))
        self.assertEqual(
            (yield s.imap(LAPTOP)), ("NO", b"[UNAVAILABLE] Temporary authentication failure")
        )
        self.patch(s.auth.store, "loadState", working)
        self.assertEqual((yield s.smtp(LAPTOP))[0], 235)
        self.assertEqual((yield s.imap(LAPTOP)), IMAP_OK)
