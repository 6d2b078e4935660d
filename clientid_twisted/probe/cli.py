# -*- test-case-name: tests.test_probe -*-
"""
The C{clientid-probe} command line::

    clientid-probe {smtp,imap} HOST[:PORT] [--starttls | --tls]
                   [--insecure | --cafile PEM] [--servername NAME]
                   [--user USER --password-stdin] [--json] [--timeout SECONDS]

Exit status: 0 no MUST failed; 1 a MUST failed; 2 nothing could be checked
(server unreachable, no TLS, or a usage error).
"""

from __future__ import annotations

import argparse
import contextlib
import ssl
import sys
from types import ModuleType
from typing import Sequence, TextIO

from clientid_twisted.probe import imapchecks, smtpchecks
from clientid_twisted.probe.checks import Probe, runChecks
from clientid_twisted.probe.connection import Target, Unreachable
from clientid_twisted.probe.report import (
    EXIT_UNREACHABLE,
    exitStatus,
    toJSON,
    unreachableJSON,
    writeJSON,
    writeTable,
)

__all__ = ["main", "PROTOCOLS"]

PROTOCOLS: dict[str, tuple[ModuleType, int, int]] = {
    "smtp": (smtpchecks, 587, 465),
    "imap": (imapchecks, 143, 993),
}
"""Per protocol: the module with its C{CHECKS} and C{preflight}, the
default STARTTLS port, the default implicit-TLS port."""


class UsageError(Exception):
    """
    The command line cannot be acted on; the message says why.
    """


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clientid-probe",
        description=(
            "Check a server's CLIENTID support (SMTP: draft-storey-smtp-client-id, "
            "IMAP: draft-yu-imap-client-id) from outside. Each check is graded by "
            "its source: a draft MUST, a draft SHOULD, or the clientid-twisted "
            "contract. A random token is generated for each run."
        ),
        epilog=(
            "Exit status: 0 no MUST failed (SHOULD and contract failures are "
            "warnings); 1 a MUST failed; 2 the server could not be reached "
            "(connection refused, TLS failure, timeout) or a usage error."
        ),
    )
    parser.add_argument("protocol", choices=sorted(PROTOCOLS), help="smtp or imap")
    parser.add_argument(
        "address",
        metavar="HOST[:PORT]",
        help="server address; default port 587/465 (smtp) or 143/993 (imap)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--starttls",
        dest="implicitTLS",
        action="store_false",
        help="plaintext connection upgraded with STARTTLS (the default)",
    )
    mode.add_argument(
        "--tls",
        dest="implicitTLS",
        action="store_true",
        help="implicit TLS from the first byte (SMTPS, IMAPS)",
    )
    parser.set_defaults(implicitTLS=False)
    trust = parser.add_mutually_exclusive_group()
    trust.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the server's certificate (self-signed test servers)",
    )
    trust.add_argument(
        "--cafile",
        metavar="PEM",
        help="trust the certificates in this PEM file instead of the system's",
    )
    parser.add_argument(
        "--servername",
        metavar="NAME",
        help="name to send in SNI and to check the certificate against [default: HOST]",
    )
    parser.add_argument(
        "--user",
        metavar="USER",
        help="log in as USER for the checks that need a login (with --password-stdin)",
    )
    parser.add_argument(
        "--password-stdin",
        dest="passwordStdin",
        action="store_true",
        help="read the password for --user from the first line of standard input",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="for connecting and for each reply [default: 10]",
    )
    return parser


def parseAddress(address: str, defaultPort: int) -> tuple[str, int]:
    """
    C{HOST}, C{HOST:PORT}, C{[IPV6]:PORT} or a bare IPv6 address.

    @raise UsageError: For a port that is not a number in range.
    """
    host, port = address, ""
    if address.startswith("["):
        end = address.find("]")
        if end < 0:
            raise UsageError(f"unbalanced brackets in {address!r}")
        host, rest = address[1:end], address[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"expected [HOST]:PORT, got {address!r}")
            port = rest[1:]
    elif address.count(":") == 1:
        host, port = address.split(":")
    if not host:
        raise UsageError(f"no host in {address!r}")
    if not port:
        return host, defaultPort
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"invalid port {port!r}")
    return host, int(port)


def tlsContext(insecure: bool, cafile: str | None) -> ssl.SSLContext:
    """
    Client TLS settings: verify against the system's trust store, or
    C{cafile}'s certificates, or (C{insecure}) not at all.
    """
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"--cafile {cafile}: {e}") from None


def _credentials(
    options: argparse.Namespace, stdin: TextIO
) -> tuple[str, str] | None:
    if options.user is None and not options.passwordStdin:
        return None
    if options.user is None or not options.passwordStdin:
        raise UsageError("--user and --password-stdin go together")
    password = stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("--password-stdin: no password on standard input")
    return options.user, password


def main(
    argv: Sequence[str] | None = None,
    stdout: TextIO | None = None,
    stdin: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """
    Probe one server and report.

    @param argv: The arguments, without the program name; C{sys.argv[1:]}
        by default.
    @return: The exit status: 0 no MUST failed, 1 a MUST failed, 2 the
        server could not be reached or the command line was wrong.
    """
    stdout = sys.stdout if stdout is None else stdout
    stdin = sys.stdin if stdin is None else stdin
    stderr = sys.stderr if stderr is None else stderr
    parser = _parser()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            options = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_UNREACHABLE
    module, starttlsPort, tlsPort = PROTOCOLS[options.protocol]
    try:
        if not options.timeout > 0:
            raise UsageError("--timeout must be positive")
        host, port = parseAddress(
            options.address, tlsPort if options.implicitTLS else starttlsPort
        )
        target = Target(
            host=host,
            port=port,
            implicitTLS=options.implicitTLS,
            tlsContext=tlsContext(options.insecure, options.cafile),
            serverName=options.servername or host,
            timeout=options.timeout,
        )
        credentials = _credentials(options, stdin)
    except UsageError as e:
        print(f"clientid-probe: error: {e}", file=stderr)
        return EXIT_UNREACHABLE
    mode = "tls" if target.implicitTLS else "starttls"
    probe = Probe(target, credentials)
    try:
        module.preflight(probe)
    except Unreachable as e:
        if options.json:
            writeJSON(stdout, unreachableJSON(options.protocol, target.describe(), mode, str(e)))
        print(f"clientid-probe: cannot check {target.describe()}: {e}", file=stderr)
        return EXIT_UNREACHABLE
    results = runChecks(probe, module.CHECKS)
    if options.json:
        writeJSON(stdout, toJSON(options.protocol, target.describe(), mode, results))
    else:
        heading = (
            f"clientid-probe {options.protocol} {target.describe()} "
            f"({'implicit TLS' if target.implicitTLS else 'STARTTLS'}"
            f"{', certificate not verified' if options.insecure else ''}"
            f"{', logged-in checks as ' + credentials[0] if credentials else ''})"
        )
        writeTable(stdout, heading, results)
    return exitStatus(results)
