# -*- test-case-name: tests.test_probe -*-
"""
C{clientid-probe}: check any SMTP or IMAP server's CLIENTID support against
the drafts, the way C{testssl.sh} checks TLS::

    clientid-probe smtp HOST[:PORT] [--starttls | --tls] [--insecure]
    clientid-probe imap HOST[:PORT] [--starttls | --tls] [--cafile PEM]
        [--user USER --password-stdin] [--json] [--timeout SECONDS]

Each rule of the protocol contract that can be seen from outside is a
L{Check}, graded by its source: a draft's MUST, a draft's SHOULD, or this
project's own contract (docs/spec-notes.md).  Exit status: 0 when no MUST
fails, 1 when one does, 2 when the server cannot be reached.

The probe is synchronous and uses only the standard library (C{socket},
C{ssl}): it talks to a server the way a plain client would, and can run
anywhere Python does.  It never sends a real user's token: each run makes a
random one.

Modules:
  - L{clientid_twisted.probe.connection}: a line-reading socket that can
    start TLS, and the errors a conversation can end in;
  - L{clientid_twisted.probe.smtp}, L{clientid_twisted.probe.imap}: the
    protocol conversations (L{SMTPSession}, L{IMAPSession});
  - L{clientid_twisted.probe.checks}: what a check is, how it is graded,
    and how they run;
  - L{clientid_twisted.probe.smtpchecks},
    L{clientid_twisted.probe.imapchecks}: the checks, as data;
  - L{clientid_twisted.probe.report}: the table and the JSON;
  - L{clientid_twisted.probe.cli}: the command line, L{main}.
"""

from clientid_twisted.probe.checks import Check, Outcome, Result, Source
from clientid_twisted.probe.cli import main
from clientid_twisted.probe.imap import IMAPSession
from clientid_twisted.probe.smtp import SMTPSession

__all__ = [
    "main",
    "Check",
    "Outcome",
    "Result",
    "Source",
    "SMTPSession",
    "IMAPSession",
]
