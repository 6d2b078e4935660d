# -*- test-case-name: tests.test_packaging -*-
"""
The project's packaging hygiene, read from the source tree: the test tools
are pinned, and the README's set-up keeps its two commands, the second of
which runs the suite once, with pytest.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    path = ROOT / "pyproject.toml"
    if not path.exists():
        raise SkipTest("not running from a source checkout")
    return tomllib.loads(path.read_text())


def readmeTestCommand(readme: str) -> str:
    """
    The README's test command, the way C{.ci/run} extracts it.
    """
    match = re.search(r"<!-- test-command -->\s*```sh\n(.*?)```\s*<!-- /test-command -->", readme, re.S)
    if match is None:
        raise AssertionError("README.md has no test command between <!-- test-command --> markers")
    return match.group(1).strip()


class TestExtraTests(SynchronousTestCase):
    """
    The C{test} extra pins every tool the tests run.
    """

    def test_everyToolPinned(self) -> None:
        requirements = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["test"]]
        names = {r.name.lower() for r in requirements}
        for tool in ("pytest", "hypothesis", "build", "mypy", "mypy-zope", "sphinx", "myst-parser", "pydoctor"):
            self.assertIn(tool, names)
        for requirement in requirements:
            specifiers = list(requirement.specifier)
            self.assertEqual(
                [s.operator for s in specifiers], ["=="], f"{requirement} is not pinned to one version"
            )


class ReadmeSetUpTests(SynchronousTestCase):
    """
    The README's "Set up" section has exactly two commands: run the server,
    run the tests; the tests run once, with pytest, in a fresh C{.venv}.
    """

    def setUp(self) -> None:
        path = ROOT / "README.md"
        if not path.exists():
            raise SkipTest("not running from a source checkout")
        self.readme = path.read_text()

    def test_twoCommands(self) -> None:
        section = self.readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
        blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
        self.assertEqual(len(blocks), 2, blocks)
        server, tests = (b.strip() for b in blocks)
        self.assertEqual(server.count("\n"), 0)
        self.assertIn("twistd -n clientid-mail", server)
        self.assertEqual(tests, readmeTestCommand(self.readme))

    def test_suiteRunsOnce(self) -> None:
        command = readmeTestCommand(self.readme)
        self.assertEqual(command.count("\n"), 0, command)
        self.assertTrue(command.startswith("python3 -m venv .venv && .venv/bin/pip install '.[test]' && "), command)
        self.assertEqual(len(re.findall(r"-m pytest\b", command)), 1, command)
        self.assertNotIn("trial", command)
