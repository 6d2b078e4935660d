# -*- test-case-name: tests.test_packaging -*-
"""
The project's packaging hygiene, read from the source tree: the test tools
are pinned; the README's set-up keeps its two commands, the second of which
runs the suite once, with pytest; the licence, the version, the changelog
fragments and the Python claim are each written once and hold; ruff finds
nothing.  (tests/test_plugin_wheel.py builds and installs the package.)
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tomllib
from contextlib import redirect_stdout
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from clientid_twisted import __version__
from tests.test_typing import requireModules

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
        for tool in (
            "pytest", "pytest-xdist", "hypothesis", "build", "mypy", "mypy-zope", "sphinx", "myst-parser", "pydoctor", "ruff",
            "towncrier", "trove-classifiers",
        ):
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

    def test_suiteRunsInParallel(self) -> None:
        """
        pytest runs the tests in four processes (pytest-xdist), a class or
        module to a process, so tests sharing a server within a class (or
        module) still share it.
        """
        pytestArguments = readmeTestCommand(self.readme).split("-m pytest", 1)[1].split()
        self.assertIn("-n", pytestArguments)
        self.assertEqual(int(pytestArguments[pytestArguments.index("-n") + 1]), 4)
        self.assertIn("--dist", pytestArguments)
        self.assertEqual(pytestArguments[pytestArguments.index("--dist") + 1], "loadscope")


class MetadataTests(SynchronousTestCase):
    """
    The licence, version and Python claim in C{pyproject.toml}.
    """

    def setUp(self) -> None:
        self.project = _pyproject()["project"]

    def test_license(self) -> None:
        """
        An SPDX expression and the licence file it ships (setuptools'
        C{license} table is deprecated); the file is the MIT licence.
        """
        self.assertEqual(self.project["license"], "MIT")
        self.assertEqual(self.project["license-files"], ["LICENSE"])
        self.assertTrue((ROOT / "LICENSE").read_text().startswith("MIT License\n"))
        self.assertFalse([c for c in self.project["classifiers"] if c.startswith("License ::")])

    def test_oneVersion(self) -> None:
        """
        The version is written once, in C{clientid_twisted/_version.py}:
        the build, the package and the docs read it from there.
        """
        self.assertNotIn("version", self.project)
        self.assertIn("version", self.project["dynamic"])
        self.assertEqual(
            _pyproject()["tool"]["setuptools"]["dynamic"]["version"],
            {"attr": "clientid_twisted._version.__version__"},
        )
        Version(__version__)
        written = re.compile(r"""(?<!\w)(version|release)\s*=\s*["']\d+\.\d+""")
        for path in [ROOT / "pyproject.toml", ROOT / "docs" / "conf.py", *(ROOT / "clientid_twisted").rglob("*.py")]:
            if path.name != "_version.py":
                self.assertIsNone(written.search(path.read_text()), path)

    def test_pythonClaim(self) -> None:
        """
        Only Pythons the tests run on are claimed: this one satisfies
        C{requires-python}, whose lower bound is the oldest version
        classifier (3.10 is not claimed: no job tests it).
        """
        requires = SpecifierSet(self.project["requires-python"])
        running = f"{sys.version_info.major}.{sys.version_info.minor}"
        self.assertIn(running, requires)
        self.assertNotIn("3.10", requires)
        versions = [
            c.rsplit(" ", 1)[1] for c in self.project["classifiers"]
            if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
        ]
        self.assertTrue(versions)
        for version in versions:
            self.assertIn(version, requires)

    def test_classifiers(self) -> None:
        """
        Every classifier is one PyPI knows and has not deprecated (an
        unknown one makes the upload fail), and none is repeated.
        """
        requireModules(self, "trove_classifiers")
        from trove_classifiers import classifiers, deprecated_classifiers

        ours = self.project["classifiers"]
        self.assertEqual(len(ours), len(set(ours)))
        self.assertEqual([c for c in ours if c not in classifiers], [])
        self.assertEqual([c for c in ours if c in deprecated_classifiers], [])

    def test_noObsoleteSetupCfg(self) -> None:
        """
        Tool settings live in C{pyproject.toml}; the C{setup.cfg} whose
        C{[flake8]} nothing ran and C{universal=0} wheel flag are gone.
        """
        self.assertFalse((ROOT / "setup.cfg").exists())
        tools = _pyproject()["tool"]
        self.assertIn("mypy", tools)
        self.assertIn("ruff", tools)


class VersionOptionTests(SynchronousTestCase):
    """
    C{twistd clientid-mail --version} and C{clientid-admin --version} print
    our version, not Twisted's alone.
    """

    def test_twistdPlugin(self) -> None:
        from clientid_twisted.server.tap import Options

        out = io.StringIO()
        with redirect_stdout(out):
            error = self.assertRaises(SystemExit, Options().parseOptions, ["--version"])
        self.assertEqual(error.code, 0)
        self.assertEqual(out.getvalue().splitlines()[0], f"clientid-mail (clientid-twisted) {__version__}")

    def test_admin(self) -> None:
        from clientid_twisted.admin import main

        out = io.StringIO()
        self.assertEqual(main(["--version"], stdout=out, stderr=io.StringIO()), 0)
        self.assertEqual(out.getvalue(), f"clientid-admin (clientid-twisted) {__version__}\n")


class ChangelogTests(SynchronousTestCase):
    """
    The CHANGELOG is kept with towncrier: every fragment is named
    C{ISSUE.TYPE.md} with a configured type, and a draft release renders
    them all.
    """

    def test_fragmentsRender(self) -> None:
        config = _pyproject()["tool"]["towncrier"]
        requireModules(self, "towncrier")
        types = {t["directory"] for t in config["type"]}
        fragments = sorted((ROOT / config["directory"]).iterdir())
        self.assertTrue(fragments)
        issues = set()
        for fragment in fragments:
            match = re.fullmatch(r"(\d+)\.([a-z]+)(\.\d+)?\.md", fragment.name)
            self.assertIsNotNone(match, fragment.name)
            assert match is not None
            self.assertIn(match.group(2), types, fragment.name)
            issues.add(match.group(1))
        self.assertIn(config["start_string"].strip(), (ROOT / config["filename"]).read_text())
        result = subprocess.run(
            [sys.executable, "-m", "towncrier", "build", "--draft", "--version", __version__],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"clientid-twisted {__version__}", result.stdout)
        for issue in issues:
            self.assertIn(f"#{issue}", result.stdout)


class RuffTests(SynchronousTestCase):
    """
    C{ruff check}, with the rules in C{pyproject.toml}, finds nothing.
    """

    def test_ruff(self) -> None:
        _pyproject()
        requireModules(self, "ruff")
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, NO_COLOR="1"),
        )
        self.assertEqual(result.returncode, 0, f"ruff check:\n{result.stdout}{result.stderr}")
