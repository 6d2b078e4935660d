# -*- test-case-name: tests.test_probe -*-
"""
What a check is, how it is graded, and how a list of them runs.

A L{Check} is data: an identifier, a title, its L{Source} (a draft's MUST,
a draft's SHOULD, or this project's contract), where the rule is written,
and a function that talks to the server and returns an L{Outcome}.  Several
checks often grade one conversation (the reply to one CLIENTID can be both
"refused" and "refused like an unknown command"): L{Probe.observe} runs each
named conversation once per run and hands every check the same
L{Observations}.
"""

from __future__ import annotations

import enum
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from clientid_twisted.probe.connection import ProbeError, Target, Unreachable

__all__ = [
    "Source",
    "PASS",
    "FAIL",
    "NOT_APPLICABLE",
    "Outcome",
    "passed",
    "failed",
    "NotApplicable",
    "Check",
    "Result",
    "Observations",
    "Probe",
    "runChecks",
    "expand",
    "replaceIgnoringCase",
    "LIMITS",
    "MALFORMED",
]


class Source(enum.Enum):
    """
    Where a rule comes from, which decides what its failure means: a MUST
    fails the run (exit 1); a SHOULD or a contract rule is a warning.
    """

    MUST = "MUST"
    SHOULD = "SHOULD"
    CONTRACT = "contract"


PASS = "pass"
FAIL = "fail"
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class Outcome:
    """
    What one check found.

    @ivar result: L{PASS}, L{FAIL} or L{NOT_APPLICABLE}.
    @ivar reply: The server's reply the verdict rests on, as received.
    @ivar detail: Why, in words, for failures and n/a above all.
    @ivar focus: The part of C{reply} a shortened display must keep in
        view (C{CLIENTID} in a capability list), or empty.
    """

    result: str
    reply: bytes = b""
    detail: str = ""
    focus: str = ""


def passed(reply: bytes = b"", detail: str = "", focus: str = "") -> Outcome:
    return Outcome(PASS, reply, detail, focus)


def failed(reply: bytes = b"", detail: str = "", focus: str = "") -> Outcome:
    return Outcome(FAIL, reply, detail, focus)


class NotApplicable(Exception):
    """
    Raised by a check that cannot be run against this server or with these
    options; the message says why.
    """


@dataclass(frozen=True)
class Check:
    """
    One observable rule.

    @ivar id: Stable identifier, e.g. C{smtp-repeat} (for scripts reading
        the JSON).
    @ivar title: What is checked, in a few words.
    @ivar source: L{Source} of the rule.
    @ivar reference: Where the rule is written (draft section, design).
    @ivar run: Talks to the server and returns an L{Outcome}; may raise
        L{NotApplicable} or L{ProbeError}.
    """

    id: str
    title: str
    source: Source
    reference: str
    run: Callable[[Probe], Outcome] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Result:
    """
    A check and what it found.
    """

    check: Check
    outcome: Outcome

    @property
    def failed(self) -> bool:
        return self.outcome.result == FAIL

    @property
    def mustFailure(self) -> bool:
        return self.failed and self.check.source is Source.MUST

    @property
    def warning(self) -> bool:
        """
        A failed SHOULD or contract rule: reported, but the server still
        conforms to every MUST.
        """
        return self.failed and self.check.source is not Source.MUST


class Observations:
    """
    What one conversation saw, by name: replies, or the L{ProbeError} that
    stopped a step; and the error that ended the conversation early.
    """

    def __init__(self) -> None:
        self._seen: dict[str, Any] = {}
        self.error: ProbeError | None = None

    def __setitem__(self, name: str, value: Any) -> None:
        self._seen[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self._seen

    def get(self, name: str, default: Any = None) -> Any:
        value = self._seen.get(name, default)
        return default if isinstance(value, ProbeError) else value

    def need(self, name: str) -> Any:
        """
        The observation C{name}.

        @raise ProbeError: The error that kept it from being made.
        """
        if name in self._seen:
            value = self._seen[name]
            if isinstance(value, ProbeError):
                raise value
            return value
        if self.error is not None:
            raise self.error
        raise ProbeError(f"the conversation ended before {name!r} was seen")


class Probe:
    """
    One run against one server: the target, the random token, the optional
    credentials, and the conversations seen so far.

    @ivar token: A random token (a UUID), made for this run: the probe never
        sends anybody's real token.
    @ivar unknownVerb: A random command name no server knows, for the
        "refused like an unknown command" comparisons.
    @ivar credentials: C{(user, password)} for the checks that need a
        login, or L{None}.
    """

    def __init__(
        self,
        target: Target,
        credentials: tuple[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.token = token if token is not None else str(uuid.uuid4())
        letters = "".join(secrets.choice(string.ascii_uppercase) for _ in range(6))
        self.unknownVerb = "XPROBE" + letters
        self._conversations: dict[str, Observations] = {}

    @property
    def tokenBytes(self) -> bytes:
        return self.token.encode("ascii")

    @property
    def implicitTLS(self) -> bool:
        return self.target.implicitTLS

    def quietPeriod(self, roundTrip: float) -> float:
        """
        How long to wait for replies nobody asked for (the STARTTLS
        injection checks): three times a round trip measured on the same
        connection, at least 0.2 s, at most the timeout.
        """
        return min(self.target.timeout, max(0.2, 3 * roundTrip))

    def randomName(self, prefix: str) -> str:
        """
        A random name (for a login that must fail).
        """
        return f"{prefix}-{secrets.token_hex(6)}"

    def observe(
        self, name: str, conversation: Callable[[Probe, Observations], None]
    ) -> Observations:
        """
        Run the conversation C{name} once per run and return what it saw.
        A L{ProbeError} ends it early and is kept in C{error}.
        """
        observations = self._conversations.get(name)
        if observations is None:
            observations = Observations()
            try:
                conversation(self, observations)
            except ProbeError as e:
                observations.error = e
            self._conversations[name] = observations
        return observations


LIMITS = b"CLIENTID " + b"T" * 16 + b" $MAXTOKEN"
"""A CLIENTID with the longest valid type and token (for L{expand})."""

MALFORMED: list[tuple[str, str, bytes, Source]] = [
    ("missing-token", "no token", b"CLIENTID UUID", Source.MUST),
    ("double-space", "two spaces before the token", b"CLIENTID UUID  $TOKEN", Source.MUST),
    ("tab", "a tab instead of a space", b"CLIENTID UUID\t$TOKEN", Source.MUST),
    ("long-type", "a 17-character type", b"CLIENTID " + b"T" * 17 + b" $TOKEN", Source.MUST),
    ("long-token", "a 129-character token", b"CLIENTID UUID $LONGTOKEN", Source.MUST),
    (
        "underscore-type",
        "type DEVICE_ID, with an underscore",
        b"CLIENTID DEVICE_ID $TOKEN",
        Source.CONTRACT,
    ),
    ("non-ascii", "a non-ASCII token", b"CLIENTID UUID $TOKEN\xc3\xa9", Source.MUST),
]
"""The malformed variants, the same for both protocols: identifier,
description, command template (for L{expand}), and the source of the rule.
C{DEVICE_ID} is the drafts' own example type, but its underscore is outside
their grammar: refusing it is our reading (docs/spec-notes.md), so that
variant is graded as contract."""


def expand(probe: Probe, template: bytes) -> bytes:
    """
    Put the run's token into a command template: C{$TOKEN} is the token (a
    UUID), C{$MAXTOKEN} 128 characters made of it, C{$LONGTOKEN} 129.
    """
    token = probe.tokenBytes
    repeated = token * (1 + 129 // len(token))
    return (
        template.replace(b"$LONGTOKEN", repeated[:129])
        .replace(b"$MAXTOKEN", repeated[:128])
        .replace(b"$TOKEN", token)
    )


def replaceIgnoringCase(data: bytes, old: bytes, new: bytes) -> bytes:
    """
    C{data} with every occurrence of C{old}, in any case, replaced by
    C{new}: a reply that echoes an unknown command's name, read as if the
    command had been CLIENTID.
    """
    lower, target = data.lower(), old.lower()
    out, start = b"", 0
    while (found := lower.find(target, start)) >= 0:
        out += data[start:found] + new
        start = found + len(old)
    return out + data[start:]


def runChecks(probe: Probe, checks: Iterable[Check]) -> list[Result]:
    """
    Run each check and grade it.

    A check that cannot connect is not applicable (it saw nothing); one
    whose conversation broke (the server closed, did not answer, sent
    garbage) fails, with the error as its detail.
    """
    results = []
    for check in checks:
        try:
            outcome = check.run(probe)
        except NotApplicable as e:
            outcome = Outcome(NOT_APPLICABLE, b"", str(e))
        except Unreachable as e:
            outcome = Outcome(NOT_APPLICABLE, b"", f"could not connect: {e}")
        except ProbeError as e:
            outcome = Outcome(FAIL, b"", str(e))
        results.append(Result(check, outcome))
    return results
