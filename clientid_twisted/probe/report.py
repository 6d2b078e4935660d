# -*- test-case-name: tests.test_probe -*-
"""
How a run is shown: a table for people, JSON for scripts, and the exit
status both get.
"""

from __future__ import annotations

import json
from typing import Any, Sequence, TextIO

from clientid_twisted.probe.checks import FAIL, NOT_APPLICABLE, PASS, Result

__all__ = [
    "EXIT_CONFORMS",
    "EXIT_MUST_FAILED",
    "EXIT_UNREACHABLE",
    "exitStatus",
    "escape",
    "truncate",
    "writeTable",
    "toJSON",
    "writeJSON",
    "unreachableJSON",
]

EXIT_CONFORMS = 0
"""No MUST failed (SHOULD and contract failures are warnings)."""

EXIT_MUST_FAILED = 1
"""At least one MUST failed."""

EXIT_UNREACHABLE = 2
"""The server could not be reached (or TLS could not be had), or the
command line was wrong: nothing was checked."""

REPLY_WIDTH = 52


def exitStatus(results: Sequence[Result]) -> int:
    """
    L{EXIT_MUST_FAILED} if any MUST failed, else L{EXIT_CONFORMS}.
    """
    return EXIT_MUST_FAILED if any(r.mustFailure for r in results) else EXIT_CONFORMS


def escape(data: bytes) -> str:
    """
    Bytes as one printable line: CR, LF and tab as C{\\r}, C{\\n}, C{\\t},
    other bytes outside printable ASCII as C{\\xNN}.
    """
    out = []
    for byte in data:
        if byte == 0x0D:
            out.append("\\r")
        elif byte == 0x0A:
            out.append("\\n")
        elif byte == 0x09:
            out.append("\\t")
        elif byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte < 0x7F:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def truncate(text: str, width: int, focus: str = "") -> str:
    """
    C{text} cut to C{width} characters, with C{...} where cut.  When
    C{focus} occurs in C{text} but would be cut off, the excerpt is taken
    around it instead of from the start (so a capability list shows
    whether CLIENTID is in it).
    """
    if len(text) <= width:
        return text
    at = text.find(focus) if focus else -1
    if at < 0 or at + len(focus) <= width - 3:
        return text[: width - 3] + "..."
    if at >= len(text) - (width - 3):
        return "..." + text[len(text) - (width - 3) :]
    start = max(0, at - (width - 6 - len(focus)) // 2)
    return "..." + text[start : start + width - 6] + "..."


def _counts(results: Sequence[Result]) -> dict[str, int]:
    return {
        PASS: sum(r.outcome.result == PASS for r in results),
        FAIL: sum(r.outcome.result == FAIL for r in results),
        NOT_APPLICABLE: sum(r.outcome.result == NOT_APPLICABLE for r in results),
        "mustFailures": sum(r.mustFailure for r in results),
        "warnings": sum(r.warning for r in results),
    }


def writeTable(
    stream: TextIO, heading: str, results: Sequence[Result], width: int = REPLY_WIDTH
) -> None:
    """
    The table (check, source, result, reply seen), then why each check
    that did not pass did not, then the verdict.
    """
    idWidth = max([len("check")] + [len(r.check.id) for r in results])
    print(heading, file=stream)
    print(file=stream)
    row = f"{{:<{idWidth}}}  {{:<8}}  {{:<6}}  {{}}"
    print(row.format("check", "source", "result", "reply seen"), file=stream)
    print(row.format("-" * idWidth, "-" * 8, "-" * 6, "-" * width), file=stream)
    for r in results:
        print(
            row.format(
                r.check.id,
                r.check.source.value,
                r.outcome.result,
                truncate(escape(r.outcome.reply), width, r.outcome.focus),
            ).rstrip(),
            file=stream,
        )
    notes = [r for r in results if r.outcome.result != PASS]
    if notes:
        print(file=stream)
        for r in notes:
            if r.mustFailure:
                grade = "FAIL (MUST)"
            elif r.warning:
                grade = f"warning ({r.check.source.value})"
            else:
                grade = r.outcome.result
            print(f"{grade}  {r.check.id}: {r.check.title}", file=stream)
            if r.outcome.detail:
                print(f"    {r.outcome.detail}", file=stream)
    counts = _counts(results)
    print(file=stream)
    print(
        f"{len(results)} checks: {counts[PASS]} pass, {counts[FAIL]} fail, "
        f"{counts[NOT_APPLICABLE]} n/a.",
        file=stream,
    )
    if counts["mustFailures"]:
        verdict = f"NOT CONFORMING: {counts['mustFailures']} MUST rule(s) failed"
    else:
        verdict = "CONFORMING: no MUST rule failed"
    if counts["warnings"]:
        verdict += f"; {counts['warnings']} warning(s) (SHOULD or contract)"
    print(verdict + ".", file=stream)


def toJSON(
    protocol: str, target: str, tls: str, results: Sequence[Result]
) -> dict[str, Any]:
    """
    A run as a JSON-ready dictionary: every check with its source,
    reference, result, full reply and detail; counts; the exit status.
    """
    return {
        "probe": "clientid-probe",
        "protocol": protocol,
        "target": target,
        "tls": tls,
        "checks": [
            {
                "id": r.check.id,
                "title": r.check.title,
                "source": r.check.source.value,
                "reference": r.check.reference,
                "result": r.outcome.result,
                "reply": r.outcome.reply.decode("utf-8", "backslashreplace"),
                "detail": r.outcome.detail,
            }
            for r in results
        ],
        "summary": _counts(results),
        "exitStatus": exitStatus(results),
    }


def writeJSON(stream: TextIO, document: dict[str, Any]) -> None:
    json.dump(document, stream, indent=2, ensure_ascii=False)
    stream.write("\n")


def unreachableJSON(protocol: str, target: str, tls: str, error: str) -> dict[str, Any]:
    """
    What C{--json} prints when nothing could be checked.
    """
    return {
        "probe": "clientid-probe",
        "protocol": protocol,
        "target": target,
        "tls": tls,
        "error": error,
        "checks": [],
        "exitStatus": EXIT_UNREACHABLE,
    }
