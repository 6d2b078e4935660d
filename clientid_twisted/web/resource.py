# -*- test-case-name: tests.test_web_resource -*-
"""
The self-service site as a C{twisted.web} resource tree.

    - C{GET /link/approve?t=...}, C{GET /link/disown?t=...}: a confirmation
      page; the change is made only by its C{POST} (a link preview or a
      mail scanner that follows links changes nothing);
    - C{GET /devices}: the signed-in owner's devices, or the sign-in form;
      C{POST /devices/signin} mails a sign-in link; C{GET /signin?t=...}
      confirms it and C{POST /signin} opens a session;
    - C{POST /devices/change} approves, revokes or renames a device;
      C{POST /signout} ends the session.

Every response carries a strict Content-Security-Policy, refuses framing,
is not cached and sends no Referer (the links carry capabilities); every
C{POST} carries a CSRF token (the session's, or a double-submit cookie's).
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server

from clientid_twisted.policy import BadDeviceName, ManagementError
from clientid_twisted.store import APPROVED, REVOKED
from clientid_twisted.web import pages
from clientid_twisted.web.links import APPROVE, DISOWN, InvalidLink
from clientid_twisted.web.selfservice import SelfService
from clientid_twisted.web.sessions import CSRF_COOKIE, SESSION_COOKIE, Session, SessionStore, tokensEqual

__all__ = ["SelfServiceSite", "SECURITY_HEADERS"]

SECURITY_HEADERS = {
    b"Content-Security-Policy": (
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'"
    ),
    b"X-Frame-Options": b"DENY",
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
    b"Cache-Control": b"no-store",
    b"Strict-Transport-Security": b"max-age=31536000",
}

_INVALID = {
    "expired": "This link has expired. Links work for a limited time: use the one in a newer notice, or sign in to the device page.",
    "used": "This link has already been used. Nothing was changed now.",
    "void": "This link no longer applies: the device was disowned, or is not on this account. Nothing was changed.",
}
_BAD_LINK = "This link is not valid. Check that it was copied whole. Nothing was changed."
_MAILED = (
    "If that address has an account here, a sign-in link is on its way to its INBOX. "
    "It works once and for a limited time."
)


class _Page(resource.Resource):
    """
    Shared plumbing: headers, CSRF, sessions, asynchronous answers.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, service: SelfService, sessions: SessionStore) -> None:
        resource.Resource.__init__(self)
        self.service = service
        self.sessions = sessions

    def render(self, request: Any) -> Any:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return resource.Resource.render(self, request)

    # Helpers

    def arg(self, request: Any, name: str) -> str:
        values = request.args.get(name.encode("ascii"), [b""])
        try:
            return values[0].decode("utf-8")[:4096]
        except UnicodeDecodeError:
            return ""

    def peer(self, request: Any) -> str:
        return str(getattr(request.getClientAddress(), "host", "") or "")

    def cookie(self, request: Any, name: bytes) -> str | None:
        value = request.getCookie(name)
        return value.decode("ascii", "replace") if value else None

    def session(self, request: Any) -> Session | None:
        return self.sessions.get(self.cookie(request, SESSION_COOKIE))

    def anonymousCSRF(self, request: Any) -> str:
        """
        The double-submit token of this browser, set as a cookie if new.
        """
        cookie = self.cookie(request, CSRF_COOKIE)
        if cookie:
            return cookie
        token = secrets.token_urlsafe(24)
        self.setCookie(request, CSRF_COOKIE, token)
        return token

    def setCookie(self, request: Any, name: bytes, value: str, maxAge: int | None = None) -> None:
        request.addCookie(
            name,
            value.encode("ascii"),
            path=b"/",
            secure=True,
            httpOnly=True,
            sameSite="strict",
            max_age=None if maxAge is None else str(maxAge).encode("ascii"),
        )

    def csrfOK(self, request: Any, session: Session | None = None) -> bool:
        sent = self.arg(request, "csrf")
        if session is not None:
            return tokensEqual(sent, session.csrf)
        return tokensEqual(sent, self.cookie(request, CSRF_COOKIE))

    def invalid(self, request: Any, f: Failure) -> bytes:
        f.trap(InvalidLink)
        reason = getattr(f.value, "reason", "malformed")
        request.setResponseCode(410 if reason in _INVALID else 400)
        return pages.message("Link not valid", _INVALID.get(reason, _BAD_LINK))

    def refuse(self, request: Any, code: int, title: str, text: str) -> bytes:
        request.setResponseCode(code)
        return pages.message(title, text)

    def answer(self, request: Any, d: "defer.Deferred[bytes]") -> Any:
        """
        Render later: the page C{d} fires with, or a temporary-failure page.
        """
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))

        def failed(f: Failure) -> bytes:
            self.log.failure("web: could not answer {path}", f, path=request.path.decode("ascii", "replace"))
            request.setResponseCode(503)
            return pages.message(
                "Temporarily unavailable", "Something went wrong on our side. Nothing was changed; try again in a minute."
            )

        def write(body: bytes) -> None:
            if not finished[0]:
                request.write(body)
                request.finish()

        d.addErrback(failed).addCallback(write)
        return server.NOT_DONE_YET


class LinkPage(_Page):
    """
    C{/link/approve} and C{/link/disown}.
    """

    def __init__(self, service: SelfService, sessions: SessionStore, action: str) -> None:
        _Page.__init__(self, service, sessions)
        self.action = action

    def render_GET(self, request: Any) -> Any:
        token = self.arg(request, "t")
        csrf = self.anonymousCSRF(request)

        def show(found: Any) -> bytes:
            claim, record = found
            return pages.confirmLink(
                self.action, claim.account, record.typeName, record.fingerprint, token, csrf,
                request.path.decode("ascii"),
            )

        d = self.service.checkLink(token, self.action)
        return self.answer(request, d.addCallbacks(show, lambda f: self.invalid(request, f)))

    def render_POST(self, request: Any) -> Any:
        if not self.csrfOK(request):
            return self.refuse(request, 403, "Form expired", "Open the link from the notice again.")
        token = self.arg(request, "t")

        def done(record: Any) -> bytes:
            if self.action == APPROVE:
                return pages.message(
                    "Device approved",
                    f"The device {record.typeName} {record.fingerprint} may now log in to {record.account}.",
                )
            self.sessions.endAccount(record.account)
            return pages.message(
                "Device revoked",
                f"The device {record.typeName} {record.fingerprint} is refused on {record.account}.",
                "Someone else knows your password: change it now.",
            )

        d = self.service.useLink(token, self.action, self.peer(request))
        return self.answer(request, d.addCallbacks(done, lambda f: self.invalid(request, f)))


class DevicesPage(_Page):
    """
    C{/devices}: the device list, or the sign-in form.
    """

    def render_GET(self, request: Any) -> Any:
        session = self.session(request)
        if session is None:
            return pages.signInForm(self.anonymousCSRF(request))
        return self.answer(request, self.renderDevices(session))

    @defer.inlineCallbacks
    def renderDevices(self, session: Session, notice: str = "") -> Any:
        devices = yield self.service.devices(session.account)
        events = yield self.service.events(session.account)
        return pages.devicePage(session.account, devices, events, session.csrf, notice)


class SignInRequest(_Page):
    """
    C{POST /devices/signin}: mail a sign-in link; the same answer always.
    """

    def render_POST(self, request: Any) -> Any:
        if not self.csrfOK(request):
            return self.refuse(request, 403, "Form expired", "Reload the page and try again.")
        csrf = self.anonymousCSRF(request)
        d = self.service.requestSignIn(self.arg(request, "address"), self.peer(request))
        # The answer does not wait for the mail: its timing must not tell
        # whether the account exists.
        d.addErrback(lambda f: None)
        return pages.signInForm(csrf, _MAILED)


class SignIn(_Page):
    """
    C{/signin?t=...}: confirm, then open a session.
    """

    def render_GET(self, request: Any) -> Any:
        token = self.arg(request, "t")
        csrf = self.anonymousCSRF(request)
        d = self.service.checkLink(token, "sign-in").addCallbacks(
            lambda _: pages.confirmSignIn(token, csrf), lambda f: self.invalid(request, f)
        )
        return self.answer(request, d)

    def render_POST(self, request: Any) -> Any:
        if not self.csrfOK(request):
            return self.refuse(request, 403, "Form expired", "Open the sign-in link again.")

        def signedIn(account: str) -> bytes:
            session = self.sessions.create(account)
            self.setCookie(request, SESSION_COOKIE, session.sessionID)
            request.setResponseCode(303)
            request.setHeader(b"Location", b"/devices")
            return pages.message("Signed in", "Continue to your devices.")

        d = self.service.signIn(self.arg(request, "t"), self.peer(request))
        return self.answer(request, d.addCallbacks(signedIn, lambda f: self.invalid(request, f)))


class DeviceChange(_Page):
    """
    C{POST /devices/change}: approve, revoke or rename one device.
    """

    def render_POST(self, request: Any) -> Any:
        session = self.session(request)
        if session is None:
            request.setResponseCode(303)
            request.setHeader(b"Location", b"/devices")
            return pages.message("Signed out", "Your session ended; sign in again.")
        if not self.csrfOK(request, session):
            return self.refuse(request, 403, "Form expired", "Reload the device page and try again.")
        action = self.arg(request, "action")
        if action == "rename":
            return self.answer(request, self.rename(request, session))
        if action not in ("approve", "revoke"):
            return self.refuse(request, 400, "Unknown action", "Reload the device page and try again.")
        state = APPROVED if action == "approve" else REVOKED
        page = DevicesPage(self.service, self.sessions)

        @defer.inlineCallbacks
        def change() -> Any:
            try:
                record = yield self.service.setState(
                    session.account, self.arg(request, "fingerprint"), state, self.peer(request), "device page"
                )
            except ManagementError:
                return (yield page.renderDevices(session, "No such device on this account."))
            verb = "approved" if state == APPROVED else "revoked"
            return (yield page.renderDevices(session, f"Device {record.typeName} {record.fingerprint} {verb}."))

        return self.answer(request, change())

    @defer.inlineCallbacks
    def rename(self, request: Any, session: Session) -> Any:
        page = DevicesPage(self.service, self.sessions)
        try:
            record = yield self.service.rename(
                session.account, self.arg(request, "fingerprint"), self.arg(request, "name"), self.peer(request)
            )
        except ManagementError:
            return (yield page.renderDevices(session, "No such device on this account."))
        except BadDeviceName as e:
            request.setResponseCode(400)
            return (yield page.renderDevices(session, f"Not renamed: {e}"))
        if record.name is None:
            said = f"Device {record.typeName} {record.fingerprint} no longer has a name."
        else:
            said = f"Device {record.typeName} {record.fingerprint} renamed to \u201c{record.name}\u201d."
        return (yield page.renderDevices(session, said))


class SignOut(_Page):
    def render_POST(self, request: Any) -> Any:
        session = self.session(request)
        if session is not None and self.csrfOK(request, session):
            self.sessions.end(session.sessionID)
            self.service.signedOut(session.account, self.peer(request)).addErrback(
                lambda f: self.log.failure("web: could not record a sign-out", f)
            )
        self.setCookie(request, SESSION_COOKIE, "", maxAge=0)
        return pages.signInForm(self.anonymousCSRF(request), "You are signed out.")


class Stylesheet(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Content-Type", b"text/css; charset=utf-8")
        request.setHeader(b"Cache-Control", b"max-age=3600")
        return pages.STYLESHEET


class _Redirect(resource.Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        for name, value in SECURITY_HEADERS.items():
            request.setHeader(name, value)
        request.setResponseCode(303)
        request.setHeader(b"Location", b"/devices")
        return b""


class _NotFound(_Page):
    def render_GET(self, request: Any) -> bytes:
        return self.refuse(request, 404, "Not found", "There is no such page.")

    render_POST = render_GET


class _Root(resource.Resource):
    """
    The site's root: its children, and a plain 404 page for anything else.
    """

    def __init__(self, service: SelfService, sessions: SessionStore) -> None:
        resource.Resource.__init__(self)
        self._notFound = _NotFound(service, sessions)

    def getChild(self, path: bytes, request: Any) -> resource.Resource:
        return self._notFound


def SelfServiceSite(service: SelfService, sessions: SessionStore | None = None) -> server.Site:
    """
    The self-service site: a L{server.Site} to put behind TLS.
    """
    sessions = sessions if sessions is not None else SessionStore()
    root = _Root(service, sessions)
    link = _Root(service, sessions)
    link.putChild(b"approve", LinkPage(service, sessions, APPROVE))
    link.putChild(b"disown", LinkPage(service, sessions, DISOWN))
    devices = DevicesPage(service, sessions)
    devices.isLeaf = False
    devices.putChild(b"", devices)
    devices.putChild(b"signin", SignInRequest(service, sessions))
    devices.putChild(b"change", DeviceChange(service, sessions))
    root.putChild(b"", _Redirect())
    root.putChild(b"link", link)
    root.putChild(b"devices", devices)
    root.putChild(b"signin", SignIn(service, sessions))
    root.putChild(b"signout", SignOut(service, sessions))
    root.putChild(b"style.css", Stylesheet())
    site = server.Site(root)
    site.displayTracebacks = False
    site.noisy = False
    return site
