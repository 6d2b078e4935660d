# -*- test-case-name: tests.test_probe -*-
"""
The SMTP checks: each rule of the SMTP draft
(draft-storey-smtp-client-id; the 2025 revision wins where they differ) and
of this project's reading of them (docs/spec-notes.md) that can be
seen from outside, as data in L{CHECKS}.

Conversations that several checks grade are named functions run once per
probe (L{Probe.observe}); every conversation that depends on session state
has a connection of its own.
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
    Probe,
    Source,
    LIMITS,
    MALFORMED,
    failed,
    passed,
    replaceIgnoringCase,
)
from clientid_twisted.probe.conversations import (
    clientID,
    requireReachable,
    sendMalformed,
    singleCommand,
)
from clientid_twisted.probe.connection import Unreachable
from clientid_twisted.probe.smtp import SMTPReply, SMTPSession

__all__ = ["CHECKS", "MALFORMED", "preflight", "openSession", "session"]

DRAFT = "SMTP draft"
NOTES = "spec-notes.md, SMTP"


# -- conversations ---------------------------------------------------------


def openSession(probe: Probe, tls: bool = True, ehlo: bool = True) -> SMTPSession:
    """
    A fresh connection: over TLS (STARTTLS after a plaintext EHLO, or
    implicit) unless C{tls} is false, then EHLO unless C{ehlo} is false.

    @raise Unreachable: When the server cannot be reached or TLS cannot be
        had (no STARTTLS offered, STARTTLS refused, handshake failure).
    """
    s = SMTPSession.open(probe.target)
    try:
        if tls and not s.encrypted:
            reply = s.ehlo()
            if reply.code != 250:
                raise Unreachable(f"EHLO refused: {reply.raw!r}")
            if not reply.lists(b"STARTTLS"):
                raise Unreachable("the server does not offer STARTTLS")
            reply = s.startTLS()
            if reply.code != 220:
                raise Unreachable(f"STARTTLS refused: {reply.raw!r}")
        if ehlo:
            s.ehlo()
    except BaseException:
        s.close()
        raise
    return s


def session(probe: Probe, tls: bool = True, ehlo: bool = True) -> ContextManager[SMTPSession]:
    """
    L{openSession}, closed (QUIT) at the end of the block.
    """
    return contextlib.closing(openSession(probe, tls, ehlo))


def preflight(probe: Probe) -> None:
    """
    Make sure the server can be reached over TLS at all.

    @raise Unreachable: When it cannot (the run ends with exit status 2).
    """
    requireReachable(lambda: openSession(probe, ehlo=False))


def _plaintext(probe: Probe, seen: Observations) -> None:
    with session(probe, tls=False, ehlo=False) as s:
        seen["ehlo"] = s.ehlo()
        seen["unknown"] = s.command(
            probe.unknownVerb.encode("ascii") + b" UUID " + probe.tokenBytes
        )
        seen["clientid"] = s.command(clientID(probe))


def _afterTLS(probe: Probe, seen: Observations) -> None:
    """
    EHLO, CLIENTID, EHLO, CLIENTID: advertisement, PIPELINING, a valid
    CLIENTID, and the reset on EHLO.
    """
    with session(probe, ehlo=False) as s:
        seen["ehlo"] = s.ehlo()
        seen["clientid"] = s.command(clientID(probe))
        seen["ehlo2"] = s.ehlo()
        seen["clientid2"] = s.command(clientID(probe))


def _repeat(probe: Probe, seen: Observations) -> None:
    with session(probe) as s:
        seen["clientid"] = s.command(clientID(probe))
        seen["repeat"] = s.command(clientID(probe))
        seen["rset"] = s.command(b"RSET")
        seen["afterRSET"] = s.command(clientID(probe))


def _beforeEHLO(probe: Probe, seen: Observations) -> None:
    with session(probe, ehlo=False) as s:
        seen["clientid"] = s.command(clientID(probe))


def _afterHELO(probe: Probe, seen: Observations) -> None:
    with session(probe) as s:
        seen["helo"] = s.command(b"HELO clientid-probe.invalid")
        seen["clientid"] = s.command(clientID(probe))


# -- grading ------------------------------------------------------------------


def _advertised(probe: Probe) -> SMTPReply:
    """
    The first EHLO reply after TLS; not applicable when it does not list
    CLIENTID (the server does not offer the extension: its own check says
    so, every other TLS check has nothing to test).
    """
    ehlo: SMTPReply = probe.observe("afterTLS", _afterTLS).need("ehlo")
    if not ehlo.lists(b"CLIENTID"):
        raise NotApplicable("the server does not advertise CLIENTID after TLS")
    return ehlo


def _plaintextOnly(probe: Probe) -> None:
    if probe.implicitTLS:
        raise NotApplicable("implicit TLS: there is no plaintext phase to test")


def _expect(reply: SMTPReply, codes: tuple[int, ...], what: str) -> Outcome:
    wanted = " or ".join(str(code) for code in codes)
    if reply.code in codes:
        return passed(reply.raw)
    return failed(reply.raw, f"expected {wanted} ({what}), got {reply.code}")


def _accepted(reply: SMTPReply, step: str) -> None:
    """
    Not applicable unless a valid CLIENTID that a check builds on got 250.
    """
    if reply.code != 250:
        raise NotApplicable(
            f"{step}: a valid CLIENTID got {reply.code}, not 250, so there is "
            "nothing to build on"
        )


def checkPlaintextNotAdvertised(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    ehlo: SMTPReply = probe.observe("plaintext", _plaintext).need("ehlo")
    if ehlo.lists(b"CLIENTID"):
        return failed(
            ehlo.extensionLines, "CLIENTID listed on an unencrypted connection", "CLIENTID"
        )
    return passed(ehlo.extensionLines)


def checkPlaintextRefused(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    reply = probe.observe("plaintext", _plaintext).need("clientid")
    return _expect(reply, (500, 502), "no CLIENTID before TLS")


def checkPlaintextLikeUnknown(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    seen = probe.observe("plaintext", _plaintext)
    reply: SMTPReply = seen.need("clientid")
    unknown: SMTPReply = seen.need("unknown")
    verb = probe.unknownVerb.encode("ascii")
    # A server may echo the command name; compare as if it had been ours.
    expected = replaceIgnoringCase(unknown.raw, verb, b"CLIENTID")
    if reply.raw == unknown.raw or reply.raw == expected:
        return passed(reply.raw)
    return failed(
        reply.raw,
        f"an unknown command got {unknown.raw!r}: the extension shows in plaintext",
    )


def _plaintextAuthThenTLS(probe: Probe, seen: Observations) -> None:
    with session(probe, tls=False, ehlo=False) as s:
        ehlo = s.ehlo()
        if not ehlo.lists(b"STARTTLS"):
            raise Unreachable("the server does not offer STARTTLS")
        auth = s.authPlain(probe.randomName("probe"), probe.randomName("wrong"))
        if auth.code == 334:
            auth = s.command(b"*")
        seen["auth"] = auth
        seen["starttls"] = starttls = s.startTLS()
        if starttls.code != 220:
            raise Unreachable(f"STARTTLS refused: {starttls.raw!r}")
        seen["ehlo"] = s.ehlo()
        seen["clientid"] = s.command(clientID(probe))


def checkSTARTTLSForgetsAUTH(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    _advertised(probe)
    seen = probe.observe("plaintextAuth", _plaintextAuthThenTLS)
    auth: SMTPReply = seen.need("auth")
    if auth.code == 235:
        raise NotApplicable(f"a random login was accepted in plaintext: {auth.raw!r}")
    return _expect(
        seen.need("clientid"), (250,), "an AUTH attempt in plaintext is forgotten at STARTTLS"
    )


def checkAdvertised(probe: Probe) -> Outcome:
    seen = probe.observe("afterTLS", _afterTLS)
    ehlo: SMTPReply = seen.need("ehlo")
    if not ehlo.lists(b"CLIENTID"):
        return failed(ehlo.extensionLines, "CLIENTID not listed in EHLO after TLS")
    again: SMTPReply = seen.need("ehlo2")
    if not again.lists(b"CLIENTID"):
        return failed(
            again.extensionLines,
            "CLIENTID not listed in an EHLO after an accepted CLIENTID",
        )
    return passed(ehlo.extensionLines, focus="CLIENTID")


def checkNoPipelining(probe: Probe) -> Outcome:
    ehlo = _advertised(probe)
    if ehlo.lists(b"PIPELINING"):
        return failed(ehlo.extensionLines, "PIPELINING listed beside CLIENTID", "PIPELINING")
    return passed(ehlo.extensionLines, focus="CLIENTID")


def checkValid(probe: Probe) -> Outcome:
    _advertised(probe)
    reply = probe.observe("afterTLS", _afterTLS).need("clientid")
    return _expect(reply, (250,), "a valid CLIENTID is not refused")


def checkLimits(probe: Probe) -> Outcome:
    _advertised(probe)
    reply = probe.observe("limits", singleCommand(session, LIMITS)).need("clientid")
    return _expect(reply, (250,), "a 16-character type and a 128-character token are valid")


def checkCaseInsensitive(probe: Probe) -> Outcome:
    _advertised(probe)
    reply = probe.observe("lowercase", singleCommand(session, b"clientid uuid $TOKEN")).need("clientid")
    return _expect(reply, (250,), "command and type are case-insensitive")


def checkRepeat(probe: Probe) -> Outcome:
    _advertised(probe)
    seen = probe.observe("repeat", _repeat)
    _accepted(seen.need("clientid"), "first CLIENTID")
    return _expect(seen.need("repeat"), (503,), "one CLIENTID per session")


def checkRSETKeeps(probe: Probe) -> Outcome:
    _advertised(probe)
    seen = probe.observe("repeat", _repeat)
    _accepted(seen.need("clientid"), "first CLIENTID")
    return _expect(seen.need("afterRSET"), (503,), "RSET does not discard the identity")


def checkResetOnEHLO(probe: Probe) -> Outcome:
    _advertised(probe)
    seen = probe.observe("afterTLS", _afterTLS)
    _accepted(seen.need("clientid"), "first CLIENTID")
    return _expect(seen.need("clientid2"), (250,), "EHLO discards the identity")


def _beforeEHLOReply(probe: Probe) -> SMTPReply:
    _advertised(probe)
    reply: SMTPReply = probe.observe("beforeEHLO", _beforeEHLO).need("clientid")
    return reply


def checkBeforeEHLO(probe: Probe) -> Outcome:
    reply = _beforeEHLOReply(probe)
    if reply.code >= 400:
        return passed(reply.raw)
    return failed(reply.raw, "accepted before any EHLO reply listed CLIENTID")


def checkBeforeEHLOCode(probe: Probe) -> Outcome:
    return _expect(_beforeEHLOReply(probe), (503,), "a sequence error")


def checkAfterHELO(probe: Probe) -> Outcome:
    _advertised(probe)
    seen = probe.observe("afterHELO", _afterHELO)
    helo: SMTPReply = seen.need("helo")
    if helo.code != 250:
        raise NotApplicable(f"HELO refused: {helo.raw!r}")
    return _expect(seen.need("clientid"), (503,), "no EHLO in force after HELO")


# -- malformed ------------------------------------------------------------------

def _malformed(probe: Probe, seen: Observations) -> None:
    sendMalformed(
        probe,
        seen,
        openSession,
        refused=lambda reply: reply.code == 501,
        sessionEnded=lambda reply: reply.code == 421,
    )


def _malformedCheck(name: str, description: str) -> Callable[[Probe], Outcome]:
    def run(probe: Probe) -> Outcome:
        _advertised(probe)
        reply = probe.observe("malformed", _malformed).need(name)
        return _expect(reply, (501,), f"malformed: {description}")

    return run


# -- AUTH -------------------------------------------------------------------------


def _authenticate(s: SMTPSession, user: str, password: str) -> SMTPReply:
    ehlo = s.lastEHLO
    mechanisms: set[bytes] = set()
    for line in ehlo.lines[1:] if ehlo is not None else ():
        words = line.upper().split()
        if words and words[0] == b"AUTH":
            mechanisms.update(words[1:])
        elif words and words[0].startswith(b"AUTH="):
            mechanisms.update([words[0][5:], *words[1:]])
    if b"PLAIN" in mechanisms:
        reply = s.authPlain(user, password)
        if reply.code == 334:
            reply = s.command(b"*")
        return reply
    if b"LOGIN" in mechanisms:
        return s.authLogin(user, password)
    raise NotApplicable("AUTH PLAIN or LOGIN is not offered after TLS")


def _afterAuth(probe: Probe, seen: Observations) -> None:
    assert probe.credentials is not None
    with session(probe) as s:
        seen["auth"] = _authenticate(s, *probe.credentials)
        seen["clientid"] = s.command(clientID(probe))


def _afterFailedAuth(probe: Probe, seen: Observations) -> None:
    with session(probe) as s:
        seen["auth"] = _authenticate(s, probe.randomName("probe"), probe.randomName("wrong"))
        seen["clientid"] = s.command(clientID(probe))


def checkAfterAuth(probe: Probe) -> Outcome:
    _advertised(probe)
    if probe.credentials is None:
        raise NotApplicable("needs a login: --user USER --password-stdin")
    seen = probe.observe("afterAuth", _afterAuth)
    auth: SMTPReply = seen.need("auth")
    if auth.code != 235:
        raise NotApplicable(f"the login with --user was refused: {auth.raw!r}")
    return _expect(seen.need("clientid"), (503,), "no CLIENTID after AUTH")


def checkAfterFailedAuth(probe: Probe) -> Outcome:
    _advertised(probe)
    seen = probe.observe("afterFailedAuth", _afterFailedAuth)
    auth: SMTPReply = seen.need("auth")
    if auth.code == 235:
        raise NotApplicable(f"a random login was accepted: {auth.raw!r}")
    return _expect(seen.need("clientid"), (503,), "no CLIENTID after an AUTH command")


# -- STARTTLS injection -------------------------------------------------------------


def _injection(probe: Probe, seen: Observations) -> None:
    """
    C{STARTTLS}, C{EHLO} and C{CLIENTID} in one write.  The last two were
    sent in plaintext, before the handshake: a server must discard them,
    never run them over TLS (RFC 3207 section 4.2).  After the handshake
    the probe waits for replies it did not ask for, then sends RSET (which
    every server implements, unlike NOOP in Twisted's ESMTP), which must get
    exactly one reply.
    """
    with session(probe, tls=False, ehlo=False) as s:
        started = time.monotonic()
        ehlo = s.ehlo()
        quiet = probe.quietPeriod(time.monotonic() - started)
        if not ehlo.lists(b"STARTTLS"):
            raise Unreachable("the server does not offer STARTTLS")
        s.send(b"STARTTLS\r\nEHLO clientid-probe.invalid\r\n" + clientID(probe) + b"\r\n")
        reply = s.readReply()
        seen["starttls"] = reply
        if reply.code != 220:
            return
        s.connection.startTLS()
        seen["unasked"] = s.connection.unsolicited(quiet)
        if s.connection.closed:
            seen["closed"] = True
            return
        seen["sentinel"] = s.command(b"RSET")
        seen["more"] = s.connection.unsolicited(quiet)


def checkInjection(probe: Probe) -> Outcome:
    _plaintextOnly(probe)
    _advertised(probe)
    seen = probe.observe("injection", _injection)
    starttls: SMTPReply = seen.need("starttls")
    if starttls.code != 220:
        raise NotApplicable(f"STARTTLS refused when followed by pipelined commands: {starttls.raw!r}")
    unasked: bytes = seen.need("unasked")
    if unasked:
        return failed(unasked, "replies to commands sent in plaintext arrived over TLS")
    if seen.get("closed"):
        return passed(b"", "the server closed the connection after the handshake")
    sentinel: SMTPReply = seen.need("sentinel")
    more: bytes = seen.need("more")
    # The first reply read is the RSET's unless the plaintext commands ran:
    # then it is EHLO's (several lines), and the RSET's comes after it.
    if more or len(sentinel.lines) > 1:
        return failed(
            sentinel.raw + more,
            "more replies than commands sent over TLS: the plaintext ones ran",
        )
    return passed(sentinel.raw, "nothing answered but the RSET sent over TLS")


# -- the list -----------------------------------------------------------------------


def _malformedChecks() -> list[Check]:
    return [
        Check(
            f"smtp-malformed-{name}",
            f"Malformed CLIENTID ({description}) gets 501",
            source,
            f"{DRAFT} §4, §5" if source is Source.MUST else "spec-notes.md, Grammar (DEVICE_ID)",
            _malformedCheck(name, description),
        )
        for name, description, _, source in MALFORMED
    ]


CHECKS: list[Check] = [
    Check(
        "smtp-plain-not-advertised",
        "Plaintext EHLO does not list CLIENTID",
        Source.MUST,
        f"{DRAFT} §3 (2)",
        checkPlaintextNotAdvertised,
    ),
    Check(
        "smtp-plain-refused",
        "Plaintext CLIENTID gets 500 or 502",
        Source.MUST,
        f"{DRAFT} (2025) §4",
        checkPlaintextRefused,
    ),
    Check(
        "smtp-plain-like-unknown",
        "Plaintext CLIENTID reply identical to an unknown command's",
        Source.CONTRACT,
        f"{NOTES} replies rule 1",
        checkPlaintextLikeUnknown,
    ),
    Check(
        "smtp-tls-advertised",
        "EHLO after TLS lists CLIENTID (also after a CLIENTID)",
        Source.MUST,
        f"{DRAFT} §3 (3)",
        checkAdvertised,
    ),
    Check(
        "smtp-no-pipelining",
        "PIPELINING not listed beside CLIENTID",
        Source.SHOULD,
        f"{DRAFT} (2025) §3 (4)",
        checkNoPipelining,
    ),
    Check(
        "smtp-valid",
        "Valid CLIENTID gets 250",
        Source.SHOULD,
        f"{DRAFT} §6.1",
        checkValid,
    ),
    Check(
        "smtp-limits",
        "16-char type and 128-char token get 250",
        Source.SHOULD,
        f"{DRAFT} §4, §5, §6.1",
        checkLimits,
    ),
    Check(
        "smtp-case-insensitive",
        "Lower-case 'clientid uuid' gets 250",
        Source.CONTRACT,
        f"{DRAFT} §5; spec-notes.md, Grammar",
        checkCaseInsensitive,
    ),
    Check(
        "smtp-repeat",
        "Second CLIENTID gets 503",
        Source.MUST,
        f"{DRAFT} §4",
        checkRepeat,
    ),
    Check(
        "smtp-rset-keeps",
        "CLIENTID after RSET still gets 503",
        Source.CONTRACT,
        f"{NOTES} resets",
        checkRSETKeeps,
    ),
    Check(
        "smtp-reset-ehlo",
        "New EHLO discards identity: CLIENTID gets 250 again",
        Source.MUST,
        f"{DRAFT} (2025) §4",
        checkResetOnEHLO,
    ),
    Check(
        "smtp-before-ehlo",
        "CLIENTID after TLS, before EHLO, is rejected",
        Source.MUST,
        f"{DRAFT} §4",
        checkBeforeEHLO,
    ),
    Check(
        "smtp-before-ehlo-503",
        "CLIENTID after TLS, before EHLO, gets 503",
        Source.CONTRACT,
        f"{NOTES} replies rule 3",
        checkBeforeEHLOCode,
    ),
    Check(
        "smtp-after-helo",
        "CLIENTID after HELO gets 503",
        Source.CONTRACT,
        f"{NOTES} replies rule 3",
        checkAfterHELO,
    ),
    *_malformedChecks(),
    Check(
        "smtp-after-auth",
        "CLIENTID after a successful AUTH gets 503",
        Source.MUST,
        f"{DRAFT} §4",
        checkAfterAuth,
    ),
    Check(
        "smtp-after-failed-auth",
        "CLIENTID after a failed AUTH gets 503",
        Source.MUST,
        f"{DRAFT} §4; {NOTES} replies rule 2",
        checkAfterFailedAuth,
    ),
    Check(
        "smtp-starttls-forgets-auth",
        "Plaintext AUTH attempt forgotten at STARTTLS",
        Source.CONTRACT,
        f"{NOTES} resets; RFC 3207 §4.2",
        checkSTARTTLSForgetsAUTH,
    ),
    Check(
        "smtp-starttls-injection",
        "Commands pipelined after STARTTLS are not run",
        Source.MUST,
        f"{DRAFT} §4 (reset); RFC 3207 §4.2",
        checkInjection,
    ),
]
"""Every SMTP check, in the order of the report."""
