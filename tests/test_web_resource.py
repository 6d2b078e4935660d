"""
Tests for L{clientid_twisted.web.resource}: the self-service site over real
HTTP on loopback (the TLS layer is the server's, tested end to end in
L{tests.test_web_browser}).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.client import FileBodyProducer
from io import BytesIO
from pathlib import Path

from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.store._memory import MemoryStore
from clientid_twisted.store._records import APPROVED, PENDING, REVOKED
from clientid_twisted.web.links import LinkMaker, LinkSigner, deriveLinkKey
from clientid_twisted.web.resource import SECURITY_HEADERS, SelfServiceSite
from clientid_twisted.web.selfservice import Notice, SelfService
from clientid_twisted.web.sessions import SessionStore

KEY = b"k" * 32
TOKEN = "23bf83be-aad7-46aa-9e0f-39191ccf402f"


class Response:
    def __init__(self, code: int, headers: Headers, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body
        self.text = body.decode("utf-8")

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def cookies(self) -> dict[str, str]:
        found = {}
        for line in self.headers.getRawHeaders("set-cookie") or []:
            name, _, rest = line.partition("=")
            found[name] = rest
        return found

    def field(self, name: str) -> str:
        m = re.search(rf'name="{name}" value="([^"]*)"', self.text)
        assert m is not None, f"no {name} field in {self.text}"
        return m.group(1)


class HTTPClientMixin:
    """
    Requests to the site at C{self.base}, with the cookies it set.
    """

    base: str
    agent: Agent
    cookie: dict[str, str]

    @defer.inlineCallbacks
    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Any:
        headers = Headers()
        if self.cookie:
            headers.addRawHeader("cookie", "; ".join(f"{k}={v}" for k, v in self.cookie.items()))
        body = None
        if form is not None:
            headers.addRawHeader("content-type", "application/x-www-form-urlencoded")
            body = FileBodyProducer(BytesIO(urlencode(form).encode("ascii")))
        path = path.replace("https://mail.example.test", "")
        response = yield self.agent.request(method.encode(), (self.base + path).encode(), headers, body)
        content = yield readBody(response)
        result = Response(response.code, response.headers, content)
        for name, rest in result.cookies().items():
            value = rest.split(";", 1)[0]
            if value:
                self.cookie[name] = value
            else:
                self.cookie.pop(name, None)
        return result


class SiteTests(HTTPClientMixin, TestCase):
    def setUp(self) -> None:
        self.store = MemoryStore(reactor)
        hasher = IdentityHasher(KEY)
        identity = ClientIdentity("UUID", TOKEN)
        self.fingerprint = hasher.fingerprint(identity)
        self.mailed: list[Notice] = []
        self.service = SelfService(
            self.store,
            LinkMaker(LinkSigner(deriveLinkKey(KEY)), "https://mail.example.test"),
            deliver=lambda n: defer.succeed(self.mailed.append(n)),
            accountExists=lambda a: a == "alice@example.test",
        )
        self.sessions = SessionStore()
        port = reactor.listenTCP(0, SelfServiceSite(self.service, self.sessions), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.agent = Agent(reactor)
        self.cookie: dict[str, str] = {}
        return self.store.setDeviceState(
            "alice@example.test", hasher.digest(identity), "UUID", self.fingerprint, PENDING, None
        )

    def state(self) -> str:
        return self.successResultOf(self.store.listDevices("alice@example.test"))[0].state

    def assertSecure(self, response: Response) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.assertEqual(response.header(name.decode()), value.decode(), name)

    @defer.inlineCallbacks
    def test_headersEverywhere(self) -> Any:
        for path in ["/devices", "/link/approve?t=x", "/nothing", "/link/other", "/signin?t=x"]:
            response = yield self.request("GET", path)
            self.assertSecure(response)
            self.assertNotIn("<script", response.text)
        css = yield self.request("GET", "/style.css")
        self.assertEqual(css.header("content-type"), "text/css; charset=utf-8")

    @defer.inlineCallbacks
    def test_approveLink(self) -> Any:
        """
        Opening the link only shows a confirmation; its POST approves, once.
        """
        approve, _ = self.service.deviceLinks("alice@example.test", self.fingerprint)
        page = yield self.request("GET", approve)
        self.assertEqual(page.code, 200)
        self.assertIn(self.fingerprint, page.text)
        self.assertNotIn(TOKEN, page.text)
        self.assertEqual(self.state(), PENDING)
        form = {"t": page.field("t"), "csrf": page.field("csrf")}
        refused = yield self.request("POST", "/link/approve", {"t": form["t"], "csrf": "wrong"})
        self.assertEqual(refused.code, 403)
        self.assertEqual(self.state(), PENDING)
        done = yield self.request("POST", "/link/approve", form)
        self.assertEqual(done.code, 200)
        self.assertIn("Device approved", done.text)
        self.assertEqual(self.state(), APPROVED)
        again = yield self.request("GET", approve)
        self.assertEqual(again.code, 410)
        self.assertIn("already been used", again.text)
        twice = yield self.request("POST", "/link/approve", form)
        self.assertEqual(twice.code, 410)

    @defer.inlineCallbacks
    def test_expiredLink(self) -> Any:
        """
        A link past its time shows a clear page, and its POST changes
        nothing.
        """
        import time

        old = LinkMaker(LinkSigner(deriveLinkKey(KEY), ttl=60), "https://mail.example.test", lambda: time.time() - 120)
        approve, _ = old.deviceLinks("alice@example.test", self.fingerprint)
        page = yield self.request("GET", approve)
        self.assertEqual(page.code, 410)
        self.assertIn("This link has expired", page.text)
        form = yield self.request("GET", "/devices")
        post = yield self.request(
            "POST", "/link/approve", {"t": approve.split("?t=")[1], "csrf": form.field("csrf")}
        )
        self.assertEqual(post.code, 410)
        self.assertEqual(self.state(), PENDING)

    @defer.inlineCallbacks
    def test_tamperedLink(self) -> Any:
        approve, _ = self.service.deviceLinks("alice@example.test", self.fingerprint)
        page = yield self.request("GET", approve[:-3] + "AAA")
        self.assertEqual(page.code, 400)
        self.assertIn("not valid", page.text)

    @defer.inlineCallbacks
    def test_disownLink(self) -> Any:
        _, disown = self.service.deviceLinks("alice@example.test", self.fingerprint)
        page = yield self.request("GET", disown)
        done = yield self.request("POST", "/link/disown", {"t": page.field("t"), "csrf": page.field("csrf")})
        self.assertIn("change it now", done.text)
        self.assertEqual(self.state(), REVOKED)

    @defer.inlineCallbacks
    def test_sameAnswerForUnknownAccounts(self) -> Any:
        form = yield self.request("GET", "/devices")
        csrf = form.field("csrf")
        known = yield self.request("POST", "/devices/signin", {"address": "alice@example.test", "csrf": csrf})
        unknown = yield self.request("POST", "/devices/signin", {"address": "nobody@example.test", "csrf": csrf})
        self.assertEqual((known.code, known.body), (unknown.code, unknown.body))
        self.assertEqual([n.account for n in self.mailed], ["alice@example.test"])

    @defer.inlineCallbacks
    def signIn(self) -> Any:
        """
        Sign in to the device page by the mailed link; the page.
        """
        form = yield self.request("GET", "/devices")
        yield self.request("POST", "/devices/signin", {"address": "alice@example.test", "csrf": form.field("csrf")})
        url = next(line for line in self.mailed[-1].lines if line.startswith("https://"))
        confirm = yield self.request("GET", url)
        yield self.request("POST", "/signin", {"t": confirm.field("t"), "csrf": confirm.field("csrf")})
        return (yield self.request("GET", "/devices"))

    def name(self) -> str | None:
        return self.successResultOf(self.store.listDevices("alice@example.test"))[0].name

    @defer.inlineCallbacks
    def test_rename(self) -> Any:
        """
        The owner names a device from the device page with the session's
        CSRF token: the name is kept, shown escaped in the table, in the
        rename field and in every action's aria-label, recorded as an
        event without the name, and logged escaped.
        """
        logged: list[str] = []

        def observe(event: Any) -> None:
            text = formatEvent(event) or ""
            if "renamed device" in text:
                logged.append(text)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        page = yield self.signIn()
        self.assertIn('<label for="device-name-0">Name', page.text)
        self.assertIn('id="device-name-0" name="name" value=""', page.text)
        csrf = page.field("csrf")
        name = "Anna's <b>ph\u00f6ne</b>"
        forged = yield self.request(
            "POST", "/devices/change", {"action": "rename", "fingerprint": self.fingerprint, "name": name, "csrf": "x"}
        )
        self.assertEqual(forged.code, 403)
        self.assertIsNone(self.name())
        renamed = yield self.request(
            "POST", "/devices/change",
            {"action": "rename", "fingerprint": self.fingerprint, "name": f"  {name} ", "csrf": csrf},
        )
        self.assertEqual(renamed.code, 200)
        self.assertEqual(self.name(), name)
        shown = "Anna&#x27;s &lt;b&gt;ph\u00f6ne&lt;/b&gt;"
        self.assertNotIn("<b>", renamed.text)
        self.assertIn(f"renamed to \u201c{shown}\u201d", renamed.text)
        self.assertIn(f"<td><strong>{shown}</strong><br><code>UUID {self.fingerprint}</code>", renamed.text)
        self.assertIn(f'name="name" value="{shown}"', renamed.text)
        for label in ("Approve", "Revoke", "Rename"):
            self.assertIn(f'aria-label="{label} {shown} (UUID {self.fingerprint})"', renamed.text)
        [event] = [e for e in self.successResultOf(self.store.listEvents("alice@example.test", 10))
                   if e.kind == "device-renamed"]
        self.assertEqual((event.fingerprint, event.detail, event.protocol), (self.fingerprint, "by owner (device page)", "web"))
        [line] = logged
        self.assertIn("to Anna's <b>ph\\xc3\\xb6ne</b> from 127.0.0.1", line)
        cleared = yield self.request(
            "POST", "/devices/change", {"action": "rename", "fingerprint": self.fingerprint, "name": " ", "csrf": csrf}
        )
        self.assertIn("no longer has a name", cleared.text)
        self.assertIsNone(self.name())

    @defer.inlineCallbacks
    def test_renameRefused(self) -> Any:
        """
        A name with control characters, or too long, is refused with a
        clear message and changes nothing; so is an unknown device.
        """
        page = yield self.signIn()
        csrf = page.field("csrf")
        yield self.request(
            "POST", "/devices/change", {"action": "rename", "fingerprint": self.fingerprint, "name": "kept", "csrf": csrf}
        )
        for bad, said in (
            ("line\r\nbreak", "cannot hold control characters"),
            ("\x1b[2Jclear", "cannot hold control characters"),
            ("x" * 65, "at most 64 characters"),
        ):
            refused = yield self.request(
                "POST", "/devices/change", {"action": "rename", "fingerprint": self.fingerprint, "name": bad, "csrf": csrf}
            )
            self.assertEqual(refused.code, 400)
            self.assertIn('<p role="status">Not renamed: A device name', refused.text)
            self.assertIn(said, refused.text)
            self.assertEqual(self.name(), "kept")
        unknown = yield self.request(
            "POST", "/devices/change", {"action": "rename", "fingerprint": "0" * 16, "name": "x", "csrf": csrf}
        )
        self.assertIn("No such device on this account.", unknown.text)
        kinds = [e.kind for e in self.successResultOf(self.store.listEvents("alice@example.test", 10))]
        self.assertEqual(kinds, ["web-sign-in", "device-renamed"])

    @defer.inlineCallbacks
    def test_deviceSession(self) -> Any:
        """
        Sign in by the mailed link, revoke and approve a device with the
        session's CSRF token, sign out.
        """
        form = yield self.request("GET", "/devices")
        yield self.request("POST", "/devices/signin", {"address": "alice@example.test", "csrf": form.field("csrf")})
        url = next(line for line in self.mailed[0].lines if line.startswith("https://"))
        confirm = yield self.request("GET", url)
        self.assertNotIn("__Host-clientid-session", self.cookie)
        signedIn = yield self.request("POST", "/signin", {"t": confirm.field("t"), "csrf": confirm.field("csrf")})
        self.assertEqual((signedIn.code, signedIn.header("location")), (303, "/devices"))
        flags = signedIn.cookies()["__Host-clientid-session"]
        attributes = {part.strip().lower() for part in flags.split(";")[1:]}
        self.assertEqual(attributes, {"secure", "httponly", "samesite=strict", "path=/"})
        page = yield self.request("GET", "/devices")
        self.assertIn("Signed in as <strong>alice@example.test</strong>", page.text)
        self.assertIn(self.fingerprint, page.text)
        self.assertNotIn(TOKEN, page.text)
        csrf = page.field("csrf")
        forged = yield self.request(
            "POST", "/devices/change", {"action": "revoke", "fingerprint": self.fingerprint, "csrf": "x"}
        )
        self.assertEqual(forged.code, 403)
        self.assertEqual(self.state(), PENDING)
        revoked = yield self.request(
            "POST", "/devices/change", {"action": "revoke", "fingerprint": self.fingerprint, "csrf": csrf}
        )
        self.assertIn("revoked", revoked.text)
        self.assertEqual(self.state(), REVOKED)
        yield self.request("POST", "/devices/change", {"action": "approve", "fingerprint": self.fingerprint, "csrf": csrf})
        self.assertEqual(self.state(), APPROVED)
        out = yield self.request("POST", "/signout", {"csrf": csrf})
        self.assertIn("signed out", out.text)
        after = yield self.request("GET", "/devices")
        self.assertIn("Mail me a sign-in link", after.text)
        kinds = [e.kind for e in self.successResultOf(self.store.listEvents("alice@example.test", 10))]
        self.assertEqual(kinds, ["web-sign-in", "device-revoked", "device-approved", "web-sign-out"])

    @defer.inlineCallbacks
    def test_changeWithoutSession(self) -> Any:
        response = yield self.request(
            "POST", "/devices/change", {"action": "approve", "fingerprint": self.fingerprint, "csrf": "x"}
        )
        self.assertEqual(response.code, 303)
        self.assertEqual(self.state(), PENDING)


class SessionStoreTests(SynchronousTestCase):
    def test_idleExpiry(self) -> None:
        clock = Clock()
        sessions = SessionStore(idle=60, clock=clock.seconds)
        session = sessions.create("alice@example.test")
        clock.advance(59)
        self.assertIs(sessions.get(session.sessionID), session)
        clock.advance(59)
        self.assertIs(sessions.get(session.sessionID), session)
        clock.advance(60)
        self.assertIsNone(sessions.get(session.sessionID))

    def test_endAccount(self) -> None:
        sessions = SessionStore()
        a = sessions.create("alice@example.test")
        b = sessions.create("bob@example.test")
        sessions.endAccount("alice@example.test")
        self.assertIsNone(sessions.get(a.sessionID))
        self.assertIs(sessions.get(b.sessionID), b)


class GatewaySignInTests(HTTPClientMixin, TestCase):
    """
    In IMAP gateway mode the accounts live on the backend: a sign-in link
    waits with the account's notices for its next login through the gateway
    (which APPENDs them to the backend INBOX).
    """

    def setUp(self) -> None:
        from clientid_twisted.gateway.imap import PendingNotices
        from clientid_twisted.web.config import WebConfig
        from clientid_twisted.web.service import selfServiceSite

        self.store = MemoryStore(reactor)
        self.pending = PendingNotices("mail.example.test", self.store)
        links = LinkMaker(LinkSigner(deriveLinkKey(KEY)), "https://mail.example.test")
        site = selfServiceSite(
            WebConfig(), links, self.store, Path(self.mktemp()), None,  # type: ignore[arg-type]
            "mail.example.test", gatewayNotices=self.pending,
        )
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.agent = Agent(reactor)
        self.cookie = {}

    @defer.inlineCallbacks
    def test_signInLinkWaitsForTheNextLogin(self) -> Any:
        form = yield self.request("GET", "/devices")
        csrf = form.field("csrf")
        known = yield self.request("POST", "/devices/signin", {"address": "Bob@Example.test", "csrf": csrf})
        other = yield self.request("POST", "/devices/signin", {"address": "not-an-address", "csrf": csrf})
        self.assertEqual((known.code, known.body), (other.code, other.body))
        [message] = yield self.pending.take("bob@example.test")
        self.assertIn(b"Subject: Sign-in link for your mail devices\r\n", message)
        url = re.search(rb"https://mail\.example\.test/signin\?t=\S+", message)
        assert url is not None
        confirm = yield self.request("GET", url.group(0).decode("ascii"))
        signedIn = yield self.request("POST", "/signin", {"t": confirm.field("t"), "csrf": confirm.field("csrf")})
        self.assertEqual(signedIn.code, 303)
        page = yield self.request("GET", "/devices")
        self.assertIn("Signed in as <strong>bob@example.test</strong>", page.text)
        self.assertEqual((yield self.pending.take("not-an-address")), [])
