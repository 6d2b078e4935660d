"""
The package's layering (docs/embedding.md, "Layers"): the library
(identity, fingerprint, credentials, interfaces, protocol mixins, policy,
stores, testing helpers) imports no application (C{server}, C{gateway},
C{admin}, C{probe}); no two parts import each other in a cycle; and
importing the dropins or the library's packages picks no reactor.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "clientid_twisted"

APPLICATIONS = frozenset({"server", "gateway", "admin", "probe", "web"})
"""The applications on top of the library: the standalone server, the
gateway, the admin command, the probe, and the server's self-service site."""

APPLICATION_IMPORTS = frozenset(
    {
        ("admin", "server"),
        ("admin", "gateway"),
        ("admin", "web"),
        ("server", "gateway"),
        ("gateway", "server"),
        ("server", "web"),
        ("web", "server"),
    }
)
"""Applications that use another's modules, each for a reason:

    - C{clientid-admin} manages the standalone server's data directory (its
      users, configuration) and the gateway's backend accounts;
    - the C{clientid-mail} twistd plugin (C{server/tap.py},
      C{server/assembly.py}) reads C{[gateway]} and runs in gateway mode;
    - the gateway's fronts subclass the server's hardened protocols
      (C{server/imapserver.py}, C{server/submission.py}: limits, line
      guard); known debt: those belong in the library, and then this pair
      goes;
    - the self-service site (C{web}) is the server's: it serves the
      server's users and mails through its INBOX delivery, and the server
      (and C{clientid-admin}) start it.

Any other pair fails L{LayeringTests.test_applicationsImportNotEachOther};
the cycle check leaves out only these pairs."""


def moduleName(path: Path) -> str:
    """
    The dotted name of a module file under the project root.
    """
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def importedModules(path: Path) -> set[str]:
    """
    Every C{clientid_twisted} module C{path} imports, anywhere in it
    (function bodies and C{TYPE_CHECKING} blocks too: a lazy import is a
    dependency all the same).
    """
    tree = ast.parse(path.read_text("utf-8"), str(path))
    package = moduleName(path) if path.name == "__init__.py" else moduleName(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "clientid_twisted"}


def part(module: str) -> str | None:
    """
    The part of the package a module belongs to: its subpackage or its
    top-level module (C{"policy"}, C{"smtp"}); L{None} for the package
    itself.
    """
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def dependencies() -> dict[str, set[str]]:
    """
    For each part of the package, the other parts it imports.
    """
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = part(moduleName(path))
        if source is None:
            continue
        targets = graph.setdefault(source, set())
        for imported in importedModules(path):
            target = part(imported)
            if target is not None and target != source:
                targets.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    The strongly connected components of more than one part (Tarjan).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


class LayeringTests(SynchronousTestCase):
    def test_libraryImportsNoApplication(self) -> None:
        """
        No library module imports an application module.
        """
        offences = []
        for path in sorted(PACKAGE.rglob("*.py")):
            if part(moduleName(path)) in APPLICATIONS:
                continue
            for imported in sorted(importedModules(path)):
                if part(imported) in APPLICATIONS:
                    offences.append(f"{path.relative_to(ROOT)} imports {imported}")
        self.assertEqual(offences, [])

    def test_applicationsImportNotEachOther(self) -> None:
        """
        An application uses the library, not another application's
        modules (except those in L{APPLICATION_IMPORTS}).
        """
        graph = dependencies()
        offences = sorted(
            (source, target)
            for source, targets in graph.items()
            for target in targets
            if source in APPLICATIONS
            and target in APPLICATIONS
            and (source, target) not in APPLICATION_IMPORTS
        )
        self.assertEqual(offences, [])

    def test_noCycles(self) -> None:
        """
        No two parts of the package (subpackages, top-level modules) import
        each other, directly or through others (application pairs of
        L{APPLICATION_IMPORTS} aside).
        """
        graph = {
            source: {t for t in targets if (source, t) not in APPLICATION_IMPORTS}
            for source, targets in dependencies().items()
        }
        self.assertEqual(cycles(graph), [])

    def test_checksSeeOffences(self) -> None:
        """
        The scan finds relative, lazy and C{from package import module}
        imports, and the cycle search finds a cycle.
        """
        module = PACKAGE / "policy" / "_layeringprobe.py"
        module.write_text(
            "def f():\n"
            "    from ..server import users\n"
            "    from clientid_twisted import gateway\n"
        )
        self.addCleanup(module.unlink)
        self.assertEqual(
            importedModules(module),
            {
                "clientid_twisted.server",
                "clientid_twisted.server.users",
                "clientid_twisted",
                "clientid_twisted.gateway",
            },
        )
        self.assertEqual(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}), [["a", "b", "c"]])


REACTOR_FREE = """
import sys
import twisted.plugins.clientid_mail, twisted.plugins.clientid_cred
import clientid_twisted, clientid_twisted.policy, clientid_twisted.store
import clientid_twisted.policy._credfactory
print(sorted(m for m in sys.modules if m in {"twisted.internet.reactor", "twisted.mail.smtp"}))
"""


class PluginImportTests(SynchronousTestCase):
    def test_noReactorOnImport(self) -> None:
        """
        Importing both dropins and the library's packages (what twistd
        does to list plugins, before C{--reactor} is applied) installs no
        reactor.
        """
        result = subprocess.run(
            [sys.executable, "-c", REACTOR_FREE],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        self.assertEqual((result.returncode, result.stderr), (0, ""))
        self.assertEqual(result.stdout.strip(), "[]")

    def test_lazyNames(self) -> None:
        """
        The packages' public names still resolve, to the defining modules'
        objects.
        """
        import clientid_twisted
        import clientid_twisted.policy
        from clientid_twisted.policy._builder import buildAuthentication
        from clientid_twisted.smtp import ClientIDESMTPMixin

        self.assertIs(clientid_twisted.ClientIDESMTPMixin, ClientIDESMTPMixin)
        self.assertIs(clientid_twisted.policy.buildAuthentication, buildAuthentication)
        self.assertIn("ClientIDIMAP4ServerMixin", dir(clientid_twisted))
        self.assertEqual(set(clientid_twisted.__all__) - {"__version__"}, set(clientid_twisted._PUBLIC))
        self.assertEqual(set(clientid_twisted.policy.__all__), set(clientid_twisted.policy._PUBLIC))
        for name in clientid_twisted.__all__:
            self.assertTrue(hasattr(clientid_twisted, name), name)
        for name in clientid_twisted.policy.__all__:
            self.assertTrue(hasattr(clientid_twisted.policy, name), name)
        self.assertRaises(AttributeError, getattr, clientid_twisted, "noSuchName")


class HeaderTests(SynchronousTestCase):
    def test_testCaseNamesExist(self) -> None:
        """
        Every module names its tests in a C{test-case-name} header, and
        each named test module exists.
        """
        problems = []
        for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "twisted" / "plugins").glob("*.py")]):
            head = "".join(path.read_text("utf-8").splitlines(keepends=True)[:2])
            match = re.search(r"test-case-name:\s*(\S+)\s*-\*-", head)
            if match is None:
                if path.stat().st_size and path.name != "_version.py":
                    problems.append(f"{path.relative_to(ROOT)}: no test-case-name header")
                continue
            for name in match.group(1).split(","):
                module = ROOT.joinpath(*name.split("."))
                if not (module.with_suffix(".py").exists() or (module / "__init__.py").exists()):
                    problems.append(f"{path.relative_to(ROOT)}: {name} does not exist")
        self.assertEqual(problems, [])
