# -*- test-case-name: tests.test_docs_code -*-
"""
Every code block in docs/ (and README.md) that is meant to run is run (the README's and
docs' session transcripts are replayed by L{tests.test_walkthroughs}):

 - C{toml}: parsed and checked by the server's own validator
   (L{clientid_twisted.server.config.checkConfig});
 - C{python}: executed, a document's blocks in order in one namespace, in
   an empty temporary directory, with stand-ins for the two names the
   docs leave to the reader (C{realm}, C{myChecker}); a block after an
   C{<!-- excerpt: PATH -->} comment is instead checked line by line
   against the file it quotes;
 - C{json}: parsed;
 - C{sh}: parsed by the POSIX shell (C{sh -n}; no bash-only C{<<<}).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse
from twisted.cred.credentials import UsernamePassword
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted.cred import identifyCredentials
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.server.config import checkConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

_BLOCK = re.compile(
    r"(?:<!-- excerpt: (?P<excerpt>\S+) -->\n)?^```(?P<language>[a-z]*)\n(?P<body>.*?)^```", re.S | re.M
)


def blocks(language: str) -> list[tuple[Path, int, str, str | None]]:
    """
    The C{language} blocks of every page: (page, line, body, excerpt path).
    """
    if not DOCS.is_dir():
        raise SkipTest("not running from a source checkout")
    found = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        for match in _BLOCK.finditer(text):
            if match.group("language") == language:
                line = text.count("\n", 0, match.start("body")) + 1
                found.append((page, line, match.group("body"), match.group("excerpt")))
    return found


class _Realm:
    """
    The reader's realm, for the snippets that name one.
    """

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        return interfaces[0], object(), lambda: None


class DocsCodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.work = Path(self.mktemp()).absolute()
        self.work.mkdir(parents=True)

    def test_toml(self) -> None:
        """
        Each TOML example is a configuration the server accepts.
        """
        found = blocks("toml")
        self.assertGreater(len(found), 5)
        for page, line, body, _ in found:
            with self.subTest(page=page.name, line=line):
                config = tomllib.loads(body)
                passwordFile = config.get("relay", {}).get("password_file")
                if passwordFile:
                    # The file the example names, where it says it is.
                    (self.work / passwordFile).write_text("secret\n")
                checkConfig(config, f"{page.name}:{line}", self.work)

    def test_json(self) -> None:
        for page, line, body, _ in blocks("json"):
            with self.subTest(page=page.name, line=line):
                json.loads(body)

    def test_sh(self) -> None:
        """
        Shell examples are POSIX sh: they parse with C{sh -n} and use no
        C{<<<} (bash only).
        """
        shell = shutil.which("dash") or shutil.which("sh")
        if shell is None:
            raise SkipTest("no sh")
        found = blocks("sh")
        self.assertTrue(found)
        for page, line, body, _ in found:
            with self.subTest(page=page.name, line=line):
                self.assertNotIn("<<<", body)
                result = subprocess.run([shell, "-n"], input=body, capture_output=True, text=True, timeout=30)
                self.assertEqual(result.returncode, 0, result.stderr)

    def test_python(self) -> None:
        """
        Each page's Python blocks run, in order, in one namespace.
        """
        pages: dict[Path, list[tuple[int, str, str | None]]] = {}
        for page, line, body, excerpt in blocks("python"):
            pages.setdefault(page, []).append((line, body, excerpt))
        self.assertTrue(pages)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.work)
        for page, pageBlocks in pages.items():
            namespace: dict[str, Any] = {
                "__name__": f"docs_{page.stem}",
                "realm": _Realm(),
                "myChecker": InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw"),
            }
            for line, body, excerpt in pageBlocks:
                with self.subTest(page=page.name, line=line):
                    if excerpt is not None:
                        self.assertExcerpt(ROOT / excerpt, body)
                    else:
                        exec(compile(body, f"{page.name}:{line}", "exec"), namespace)
            store = namespace.get("store")
            if store is not None:
                store.close()
            if page.name == "embedding.md":
                self.checkOnlyKnownDevices(namespace)

    def assertExcerpt(self, source: Path, body: str) -> None:
        """
        Every line of an excerpt (but C{...}) is a line of its source.
        """
        lines = {line.strip() for line in source.read_text().splitlines()}
        for line in body.splitlines():
            if line.strip() not in ("", "..."):
                self.assertIn(line.strip(), lines, f"not in {source.name}")

    def checkOnlyKnownDevices(self, namespace: dict[str, Any]) -> None:
        """
        embedding.md's checker, with its C{allowed} set, accepts the device
        whatever the case of its type, and refuses an unknown token.
        """
        checker = namespace["OnlyKnownDevices"](
            InMemoryUsernamePasswordDatabaseDontUse(**{"alice@example.test": b"hunter2"}), namespace["allowed"]
        )
        token = "23bf83be-aad7-46aa-9e0f-39191ccf402f"
        for typeName in ("uuid", "UUID"):
            credentials = identifyCredentials(
                UsernamePassword(b"alice@example.test", b"hunter2"), ClientIdentity(typeName, token), None, "smtp", True
            )
            self.assertEqual(self.successResultOf(checker.requestAvatarId(credentials)), b"alice@example.test")
        stranger = identifyCredentials(
            UsernamePassword(b"alice@example.test", b"hunter2"), ClientIdentity("UUID", "another-device"), None, "smtp", True
        )
        self.failureResultOf(checker.requestAvatarId(stranger))


class DocsTextTests(SynchronousTestCase):
    """
    Facts the docs must state, and references that must resolve.
    """

    def text(self, name: str) -> str:
        if not DOCS.is_dir():
            raise SkipTest("not running from a source checkout")
        return (DOCS / name).read_text()

    def test_thunderbirdSMTPPrefs(self) -> None:
        running = self.text("running.md")
        for pref in (
            "mail.server.serverN.clientidEnabled",
            "mail.server.serverN.clientid`",
            "mail.smtpserver.smtpN.clientidEnabled",
            "mail.smtpserver.smtpN.clientid`",
        ):
            self.assertIn(pref, running)

    def test_adminCommandNames(self) -> None:
        """
        The docs name C{clientid-admin}'s commands as it spells them.
        """
        from clientid_twisted.admin import _parser

        commands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
        for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
            for command in re.findall(r"clientid-admin (?:\[[^\]]*\] )*([a-z]+)", page.read_text()):
                self.assertIn(command, commands, f"{page.name}: clientid-admin {command}")

    def test_noDesignReferences(self) -> None:
        """
        The probe and the docs cite the drafts and docs/spec-notes.md, not
        a design file the repository does not have; a cited spec-notes
        section exists.
        """
        from clientid_twisted.probe.imapchecks import CHECKS as IMAP_CHECKS
        from clientid_twisted.probe.smtpchecks import CHECKS as SMTP_CHECKS

        notes = self.text("spec-notes.md")
        headings = {h.lower() for h in re.findall(r"(?m)^#+ (.+)$", notes)}
        for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
            self.assertNotIn("design.md", page.read_text(), page.name)
        for check in [*SMTP_CHECKS, *IMAP_CHECKS]:
            with self.subTest(check=check.id):
                self.assertNotIn("design", check.reference)
                for cited in re.findall(r"spec-notes\.md, ([A-Za-z]+)(?: ([a-z]+))?", check.reference):
                    for word in cited:
                        if word:
                            self.assertTrue(any(h.startswith(word.lower()) for h in headings), word)

    def test_performanceForReaders(self) -> None:
        """
        docs/performance.md reads as documentation, not a work log: no
        "this round", no issue numbers or goals by number.
        """
        text = self.text("performance.md")
        for phrase in (r"this round", r"\bissue\b", r"\bround's\b", r"goal \d", r"git archive"):
            self.assertIsNone(re.search(phrase, text, re.I), phrase)
