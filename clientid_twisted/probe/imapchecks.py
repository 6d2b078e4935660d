# -*- test-case-name: tests.test_probe -*-
"""
The IMAP checks: each rule of the IMAP draft (draft-yu-imap-client-id; the
2026 revision wins where they differ, and its section numbers are used) and
of this project's reading of them (docs/spec-notes.md) that can be
seen from outside, as data in L{CHECKS}.

IMAP has its own rules, not SMTP's: no "after AUTH" rule (a failed LOGIN
leaves the connection not authenticated, where CLIENTID is allowed), BAD
rather than reply codes, and "advertised" means a CAPABILITY reply (or the
greeting's capability code) on this encrypted connection.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, ContextManager

from clientid_twisted.probe.checks import (
    Check,
    NotApplicable,
    Observations,
    Outcome,
    PASS,
    Probe,
    Source,
    LIMITS,
    MALFORMED,
    failed,
    passed,
    expand,
    replaceIgnoringCase,
)
from clientid_twisted.probe.conversations import (
    clientID,
    requireReachable,
    sendMalformed,
    singleCommand,
)
from clientid_twisted.probe.connection import ProbeError, ReplyTimeout, Unreachable
from clientid_twisted.probe.imap import (
    IMAPResponse,
    IMAPSession,
    greetingCapabilities,
    quoted,
)

__all__ = ["CHECKS", "MALFORMED", "preflight", "openSession", "session"]

DRAFT = "IMAP draft"
NOTES = "spec-notes.md, IMAP"

SPECIAL_TOKEN = b'$TOKEN"q(p)\\b%*'
"""A valid token with IMAP's quoting, list and escape characters."""

LITERAL_TOKEN = b"$TOKEN{5}"
"""A valid token that ends like a literal announcement."""

LITERAL_SHAPES: list[tuple[str, bytes, str]] = [
    ("literal-plus-token", b"{3+}", "a non-synchronizing literal ({3+})"),
    ("literal-toobig-token", b"x{36700161}", "a literal over a 35 MiB limit (x{36700161})"),
    ("literal-plus-huge-token", b"{99999999+}", "a huge non-synchronizing literal ({99999999+})"),
]
"""Valid tokens shaped like literal announcements a server with a literal
size limit or without LITERAL+ refuses: identifier, token, description.
A server that checks literals before parsing CLIENTID answers them BAD, NO
[TOOBIG] or BYE, and may swallow the next command."""


# -- conversations ---------------------------------------------------------


def _offersSTARTTLS(s: IMAPSession) -> bool:
    capabilities = s.greetingCapabilities
    if capabilities is None:
        capabilities = s.capability().capabilities or frozenset()
    return b"STARTTLS" in capabilities


def openSession(probe: Probe, tls: bool = True, capability: bool = True) -> IMAPSession:
    """
    A fresh connection: over TLS (STARTTLS, or implicit) unless C{tls} is
    false, then CAPABILITY unless C{capability} is false (the reply is kept
    as C{s.lastCapability}).

    @raise Unreachable: When the server cannot be reached or TLS cannot be
        had.
    """
    s = IMAPSession.open(probe.target)
    try:
        if tls and not s.encrypted:
            if not _offersSTARTTLS(s):
                raise Unreachable("the server does not offer STARTTLS")
            response = s.startTLS()
            if response.status != b"OK":
                raise Unreachable(f"STARTTLS refused: {response.raw!r}")
        if capability:
            s.capability()
    except BaseException:
        s.close()
        raise
    return s


def session(probe: Probe, tls: bool = True, capability: bool = True) -> ContextManager[IMAPSession]:
    """
    L{openSession}, closed (LOGOUT) at the end of the block.
    """
    return contextlib.closing(openSession(probe, tls, capability))


def preflight(probe: Probe) -> None:
    """
    Make sure the server can be reached over TLS at all.

    @raise Unreachable: When it cannot (the run ends with exit status 2).
    """
    requireReachable(lambda: openSession(probe, capability=False))


def _unknown(probe: Probe) -> bytes:
    return probe.unknownVerb.encode("ascii") + b" UUID " + probe.tokenBytes


def _plaintext(probe: Probe, seen: Observations) -> None:
    with session(probe, tls=False, capability=False) as s:
        seen["greeting"] = s.greeting
        seen["capability"] = s.capability()
        seen["unknown"] = s.command(_unknown(probe))
        seen["clientid"] = s.command(clientID(probe))


def _beforeCapability(probe: Probe, seen: Observations) -> None:
    """
    CAPABILITY in plaintext, STARTTLS, then CLIENTID before any CAPABILITY
    over TLS (with implicit TLS: right after the greeting).
    """
    with session(probe, tls=False, capability=False) as s:
        if not s.encrypted:
            s.capability()
            if s.startTLS().status != b"OK":
                raise Unreachable("STARTTLS refused")
        seen["greeting"] = s.greeting
        seen["unknown"] = s.command(_unknown(probe))
        seen["clientid"] = s.command(clientID(probe))


def _afterTLS(probe: Probe, seen: Observations) -> None:
    """
    CAPABILITY, CLIENTID, CAPABILITY, CLIENTID: advertisement, a valid
    CLIENTID, advertisement after it, and the repeat.
    """
    with session(probe, capability=False) as s:
        seen["greeting"] = s.greeting
        seen["capability"] = s.capability()
        seen["clientid"] = s.command(clientID(probe))
        seen["capability2"] = s.capability()
        seen["repeat"] = s.command(clientID(probe))


def _failedLogin(probe: Probe, seen: Observations) -> None:
    with session(probe) as s:
        seen["login"] = s.login(probe.randomName("probe"), probe.randomName("wrong"))
        seen["clientid"] = s.command(clientID(probe))


def _afterLogin(probe: Probe, seen: Observations) -> None:
    assert probe.credentials is not None
    with session(probe) as s:
        seen["login"] = login = s.login(*probe.credentials)
        if login.status != b"OK":
            return
        seen["capability"] = s.capability()
        seen["unknown"] = s.command(_unknown(probe))
        seen["clientid"] = s.command(clientID(probe))


def _injection(probe: Probe, seen: Observations) -> None:
    """
    C{STARTTLS}, C{CAPABILITY} and C{CLIENTID} in one write.  The last two
    were sent in plaintext, before the handshake: a server must discard
    them.  After the handshake the probe waits for replies it did not ask
    for, then sends NOOP and reads up to its result: nothing tagged for the
    plaintext commands may come.
    """
    with session(probe, tls=False, capability=False) as s:
        started = time.monotonic()
        capabilities = s.capability().capabilities or frozenset()
        quiet = probe.quietPeriod(time.monotonic() - started)
        if b"STARTTLS" not in capabilities:
            raise Unreachable("the server does not offer STARTTLS")
        first, second, third = s.nextTag(), s.nextTag(), s.nextTag()
        s.send(
            first + b" STARTTLS\r\n"
            + second + b" CAPABILITY\r\n"
            + third + b" " + clientID(probe) + b"\r\n"
        )
        seen["injected"] = (second, third)
        seen["starttls"] = response = s.readResponse(first)
        if response.status != b"OK":
            return
        s.connection.startTLS()
        seen["unasked"] = s.connection.unsolicited(quiet)
        if s.connection.closed:
            seen["closed"] = True
            return
        tag = s.nextTag()
        s.send(tag + b" NOOP\r\n")
        received = []
        while True:
            line = s.connection.readLine()
            received.append(line)
            if line.startswith(tag + b" "):
                break
        seen["afterTLS"] = received


# -- grading ------------------------------------------------------------------


def _advertised(probe: Probe) -> IMAPResponse:
    """
    The first CAPABILITY reply after TLS; not applicable when it does not
    list CLIENTID.
    """
    capability: IMAPResponse = probe.observe("afterTLS", _afterTLS).need("capability")
    if b"CLIENTID" not in (capability.capabilities or ()):
        raise NotApplicable("the server does not advertise CLIENTID after TLS")
    return capability


def _plaintextOnly(probe: Probe) -> None:
    if probe.implicitTLS:
        raise NotApplicable("implicit TLS: there is no plaintext phase to test")


def _expect(response: IMAPResponse, status: bytes, what: str) -> Outcome:
    if response.continuation:
        return failed(
            response.raw,
            f"expected {status.decode()} ({what}), got a continuation request: "
            "the server parsed the line as IMAP syntax",
        )
    if response.status == status:
        return passed(response.raw)
    return failed(
        response.raw,
        f"expected {status.decode()} ({what}), got {response.status.decode()}",  # type: ignore[union-attr]
    )


def _accepted(response: IMAPResponse, step: str) -> None:
    if response.status != b"OK":
        raise NotApplicable(
            f"{step}: a valid CLIENTID got {response.afterTag.decode('ascii', 'replace')}, "
            "not OK, so there is nothing to build on"
        )


def _likeUnknown(probe: Probe, seen: Observations, where: str) -> Outcome:
    reply: IMAPResponse = seen.need("clientid")
    unknown: IMAPResponse = seen.need("unknown")
    verb = probe.unknownVerb.encode("ascii")
    same = reply.afterTag == unknown.afterTag or reply.afterTag == replaceIgnoringCase(
        unknown.afterTag, verb, b"CLIENTID"
    )
    if same and reply.untagged == unknown.untagged:
        return passed(reply.raw)
    return failed(
        reply.raw,
        f"an unknown command got {unknown.raw!r}: the extension shows {where}",
    )


def checkPlaintextGreeting(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    greeting: bytes = probe.observe("plaintext", _plaintext).need("greeting")
    capabilities = greetingCapabilities(greeting)
    if capabilities is None:
        return passed(greeting, "the greeting carries no capability list")
    if b"CLIENTID" in capabilities:
        return failed(greeting, "CLIENTID listed in the plaintext greeting", "CLIENTID")
    return passed(greeting)


def checkPlaintextNotAdvertised(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    response: IMAPResponse = probe.observe("plaintext", _plaintext).need("capability")
    if b"CLIENTID" in (response.capabilities or ()):
        return failed(
            response.capabilityLine, "CLIENTID listed on an unencrypted connection", "CLIENTID"
        )
    return passed(response.capabilityLine)


def checkPlaintextRefused(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    response = probe.observe("plaintext", _plaintext).need("clientid")
    return _expect(response, b"BAD", "no CLIENTID before TLS")


def checkPlaintextLikeUnknown(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    return _likeUnknown(probe, probe.observe("plaintext", _plaintext), "in plaintext")


def _beforeCapabilitySeen(probe: Probe) -> Observations:
    _advertised(probe)
    seen = probe.observe("beforeCapability", _beforeCapability)
    if probe.implicitTLS and b"CLIENTID" in (
        greetingCapabilities(seen.need("greeting")) or ()
    ):
        raise NotApplicable("the implicit-TLS greeting already advertised CLIENTID")
    return seen


def checkBeforeCapability(probe: Probe) -> Outcome:
    seen = _beforeCapabilitySeen(probe)
    return _expect(seen.need("clientid"), b"BAD", "CLIENTID not yet advertised over TLS")


def checkBeforeCapabilityLikeUnknown(probe: Probe) -> Outcome:
    seen = _beforeCapabilitySeen(probe)
    return _likeUnknown(probe, seen, "before it is advertised")


def checkTLSGreeting(probe: Probe) -> Outcome:
    if not probe.implicitTLS:
        raise NotApplicable("STARTTLS: the greeting is sent before TLS")
    greeting: bytes = probe.observe("afterTLS", _afterTLS).need("greeting")
    capabilities = greetingCapabilities(greeting)
    if capabilities is None:
        raise NotApplicable("the greeting carries no capability list")
    if b"CLIENTID" not in capabilities:
        return failed(greeting, "CLIENTID missing from the implicit-TLS greeting's capabilities")
    return passed(greeting, focus="CLIENTID")


def checkAdvertised(probe: Probe) -> Outcome:
    seen = probe.observe("afterTLS", _afterTLS)
    capability: IMAPResponse = seen.need("capability")
    if b"CLIENTID" not in (capability.capabilities or ()):
        return failed(capability.capabilityLine, "CLIENTID not listed in CAPABILITY after TLS")
    again: IMAPResponse = seen.need("capability2")
    if b"CLIENTID" not in (again.capabilities or ()):
        return failed(
            again.capabilityLine,
            "CLIENTID not listed in CAPABILITY after an accepted CLIENTID",
        )
    return passed(capability.capabilityLine, focus="CLIENTID")


def checkValid(probe: Probe) -> Outcome:
    _advertised(probe)
    response = probe.observe("afterTLS", _afterTLS).need("clientid")
    return _expect(response, b"OK", "a valid CLIENTID is accepted, never NO")


def checkLimits(probe: Probe) -> Outcome:
    _advertised(probe)
    response = probe.observe("limits", singleCommand(session, LIMITS)).need("clientid")
    return _expect(response, b"OK", "a 16-character type and a 128-character token are valid")


def checkCaseInsensitive(probe: Probe) -> Outcome:
    _advertised(probe)
    response = probe.observe("lowercase", singleCommand(session, b"clientid uuid $TOKEN")).need("clientid")
    return _expect(response, b"OK", "command and type are case-insensitive")


def checkRepeat(probe: Probe) -> Outcome:
    _advertised(probe)
    seen = probe.observe("afterTLS", _afterTLS)
    _accepted(seen.need("clientid"), "first CLIENTID")
    return _expect(seen.need("repeat"), b"BAD", "one CLIENTID per connection")


def _thenNoop(line: bytes) -> Callable[[Probe, Observations], None]:
    """
    A CLIENTID line, then NOOP on the same connection: its reply is
    C{seen["next"]} (or the error that kept it from coming).
    """

    def conversation(probe: Probe, seen: Observations) -> None:
        with session(probe) as s:
            seen["clientid"] = s.command(expand(probe, line))
            try:
                seen["next"] = s.command(b"NOOP")
            except ProbeError as e:
                seen["next"] = e

    return conversation


def _tokenCheck(name: str, token: bytes, what: str) -> Callable[[Probe], Outcome]:
    """
    A CLIENTID with C{token} gets OK, and the NOOP after it is answered.
    """

    def run(probe: Probe) -> Outcome:
        _advertised(probe)
        try:
            seen = probe.observe(name, _thenNoop(b"CLIENTID UUID " + token))
            response: IMAPResponse = seen.need("clientid")
        except ReplyTimeout:
            return failed(
                b"",
                f"no reply within {probe.target.timeout:g} s: the server seems to "
                "wait for a literal",
            )
        except ProbeError as e:
            return failed(b"", f"the server read the token as a literal: {e}")
        outcome = _expect(response, b"OK", what)
        if outcome.result != PASS:
            return outcome
        try:
            following: IMAPResponse = seen.need("next")
        except ProbeError as e:
            return failed(response.raw, f"the NOOP after it got no answer: {e}")
        if following.status != b"OK":
            return failed(
                response.raw + following.raw,
                "the NOOP after it was not answered OK: the server read it as "
                "part of a literal",
            )
        return passed(response.raw + following.raw)

    return run


def checkFailedLogin(probe: Probe) -> Outcome:
    _advertised(probe)
    seen = probe.observe("failedLogin", _failedLogin)
    login: IMAPResponse = seen.need("login")
    if login.status != b"NO":
        raise NotApplicable(f"a random LOGIN did not get NO: {login.raw!r}")
    return _expect(seen.need("clientid"), b"OK", "a failed LOGIN does not end the time for CLIENTID")


def _afterLoginSeen(probe: Probe) -> Observations:
    _advertised(probe)
    if probe.credentials is None:
        raise NotApplicable("needs a login: --user USER --password-stdin")
    try:
        for value in probe.credentials:
            quoted(value)
    except ValueError as e:
        raise NotApplicable(f"cannot send the --user login: {e}") from None
    seen = probe.observe("afterLogin", _afterLogin)
    login: IMAPResponse = seen.need("login")
    if login.status != b"OK":
        raise NotApplicable(f"the LOGIN with --user was refused: {login.raw!r}")
    return seen


def checkAfterLogin(probe: Probe) -> Outcome:
    seen = _afterLoginSeen(probe)
    return _expect(seen.need("clientid"), b"BAD", "no CLIENTID once authenticated")


def checkAfterLoginNotAdvertised(probe: Probe) -> Outcome:
    seen = _afterLoginSeen(probe)
    login: IMAPResponse = seen.need("login")
    if b"CLIENTID" in (greetingCapabilities(login.text) or ()):
        return failed(login.raw, "CLIENTID listed in the LOGIN result's capabilities", "CLIENTID")
    capability: IMAPResponse = seen.need("capability")
    if b"CLIENTID" in (capability.capabilities or ()):
        return failed(capability.capabilityLine, "CLIENTID listed once authenticated", "CLIENTID")
    return passed(capability.capabilityLine)


def checkAfterLoginLikeUnknown(probe: Probe) -> Outcome:
    return _likeUnknown(probe, _afterLoginSeen(probe), "once authenticated")


def checkInjection(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    _advertised(probe)
    seen = probe.observe("injection", _injection)
    starttls: IMAPResponse = seen.need("starttls")
    if starttls.status != b"OK":
        raise NotApplicable(
            f"STARTTLS refused when followed by pipelined commands: {starttls.raw!r}"
        )
    unasked: bytes = seen.need("unasked")
    if unasked:
        return failed(unasked, "replies to commands sent in plaintext arrived over TLS")
    if seen.get("closed"):
        return passed(b"", "the server closed the connection after the handshake")
    received: list[bytes] = seen.need("afterTLS")
    second, third = seen.need("injected")
    foreign = [
        line
        for line in received
        if line.startswith((second + b" ", third + b" "))
        or line.upper().startswith(b"* CAPABILITY")
    ]
    if foreign:
        return failed(
            b"".join(received),
            "commands sent in plaintext before the handshake were answered over TLS",
        )
    return passed(b"".join(received), "nothing answered but the NOOP sent over TLS")


# -- malformed ------------------------------------------------------------------

def _malformed(probe: Probe, seen: Observations) -> None:
    sendMalformed(
        probe,
        seen,
        openSession,
        refused=lambda response: response.status == b"BAD",
        sessionEnded=lambda response: False,
    )


def _malformedCheck(name: str, description: str) -> Callable[[Probe], Outcome]:
    def run(probe: Probe) -> Outcome:
        _advertised(probe)
        response = probe.observe("malformed", _malformed).need(name)
        return _expect(response, b"BAD", f"malformed: {description}")

    return run


# -- the list -----------------------------------------------------------------------

CHECKS: list[Check] = [
    Check(
        "imap-plain-greeting",
        "Plaintext greeting does not list CLIENTID",
        Source.MUST,
        f"{DRAFT} §2.3 (1)",
        checkPlaintextGreeting,
    ),
    Check(
        "imap-plain-not-advertised",
        "Plaintext CAPABILITY does not list CLIENTID",
        Source.MUST,
        f"{DRAFT} §2.3 (1)",
        checkPlaintextNotAdvertised,
    ),
    Check(
        "imap-plain-refused",
        "Plaintext CLIENTID gets BAD",
        Source.MUST,
        f"{DRAFT} §2.1, §2.4 (1)",
        checkPlaintextRefused,
    ),
    Check(
        "imap-plain-like-unknown",
        "Plaintext CLIENTID reply identical to an unknown command's",
        Source.CONTRACT,
        f"{NOTES}",
        checkPlaintextLikeUnknown,
    ),
    Check(
        "imap-tls-greeting",
        "Implicit-TLS greeting lists CLIENTID",
        Source.CONTRACT,
        f"{NOTES}",
        checkTLSGreeting,
    ),
    Check(
        "imap-tls-advertised",
        "CAPABILITY after TLS lists CLIENTID (also after a CLIENTID)",
        Source.MUST,
        f"{DRAFT} §2.3",
        checkAdvertised,
    ),
    Check(
        "imap-before-capability",
        "CLIENTID after STARTTLS, before CAPABILITY, gets BAD",
        Source.MUST,
        f"{DRAFT} §2.4 (1)",
        checkBeforeCapability,
    ),
    Check(
        "imap-before-capability-like-unknown",
        "CLIENTID before CAPABILITY refused like an unknown command",
        Source.CONTRACT,
        f"{NOTES}",
        checkBeforeCapabilityLikeUnknown,
    ),
    Check(
        "imap-valid",
        "Valid CLIENTID gets OK",
        Source.MUST,
        f"{DRAFT} §2.1, §2.2",
        checkValid,
    ),
    Check(
        "imap-limits",
        "16-char type and 128-char token get OK",
        Source.MUST,
        f"{DRAFT} §2.2, §3",
        checkLimits,
    ),
    Check(
        "imap-case-insensitive",
        "Lower-case 'clientid uuid' gets OK",
        Source.MUST,
        f"{DRAFT} §3",
        checkCaseInsensitive,
    ),
    Check(
        "imap-repeat",
        "Second CLIENTID gets BAD",
        Source.MUST,
        f"{DRAFT} §2.4 (3)",
        checkRepeat,
    ),
    Check(
        "imap-special-characters",
        'Token with " ( ) \\ % * gets OK, verbatim',
        Source.MUST,
        f"{DRAFT} §2.2, §3 (VCHAR)",
        _tokenCheck("special", SPECIAL_TOKEN, "any VCHAR token"),
    ),
    Check(
        "imap-literal-token",
        "Token ending in {5} gets OK, no '+' wait",
        Source.MUST,
        f"{DRAFT} §2.2, §3 (VCHAR)",
        _tokenCheck("literal", LITERAL_TOKEN, "any VCHAR token"),
    ),
    *[
        Check(
            f"imap-{name}",
            f"Token {token.decode('ascii')} gets OK, next command answered",
            Source.MUST,
            f"{DRAFT} §2.1, §2.2, §3 (VCHAR; never NO)",
            _tokenCheck(name, b"$TOKEN" + token, f"any VCHAR token, also {description}"),
        )
        for name, token, description in LITERAL_SHAPES
    ],
    *[
        Check(
            f"imap-malformed-{name}",
            f"Malformed CLIENTID ({description}) gets BAD",
            source,
            f"{DRAFT} §2.2, §3" if source is Source.MUST else "spec-notes.md, Grammar (DEVICE_ID)",
            _malformedCheck(name, description),
        )
        for name, description, _, source in MALFORMED
    ],
    Check(
        "imap-failed-login",
        "CLIENTID after a failed LOGIN gets OK (no after-AUTH rule)",
        Source.CONTRACT,
        f"{NOTES}; {DRAFT} §2.4",
        checkFailedLogin,
    ),
    Check(
        "imap-after-login",
        "CLIENTID after a successful LOGIN gets BAD",
        Source.MUST,
        f"{DRAFT} §2.4 (2)",
        checkAfterLogin,
    ),
    Check(
        "imap-after-login-not-advertised",
        "CAPABILITY after LOGIN does not list CLIENTID",
        Source.MUST,
        f"{DRAFT} §2.3 (2)",
        checkAfterLoginNotAdvertised,
    ),
    Check(
        "imap-after-login-like-unknown",
        "CLIENTID after LOGIN refused like an unknown command",
        Source.CONTRACT,
        f"{NOTES}",
        checkAfterLoginLikeUnknown,
    ),
    Check(
        "imap-starttls-injection",
        "Commands pipelined after STARTTLS are not run",
        Source.MUST,
        f"{DRAFT} §2.3 (1), §2.4 (1); RFC 3501 §6.2.1",
        checkInjection,
    ),
]
"""Every IMAP check, in the order of the report."""
