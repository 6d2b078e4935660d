"""
The package's layering (docs/embedding.md, "Layers"): the library
(identity, fingerprint, credentials, interfaces, protocol mixins, policy,
stores, testing helpers) imports no application (C{server}, C{gateway},
C{admin}, C{probe}); no two parts import each other in a cycle;
importing the dropins or the library's packages picks no reactor; and the
library's API is its public modules (L{PUBLIC_MODULES}), every other library
module being private (C{_name.py}), which the applications, the examples and
the docs' code do not import (L{SHARED_INTERNALS} aside).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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
      (C{MailIMAP4Server}/C{MailIMAP4Factory} of C{server/imapserver.py},
      C{SubmissionESMTP}/C{SubmissionFactory} of C{server/submission.py},
      built on C{server/guard.py}'s session guard, C{server/connections.py}'s
      connection limits and C{server/lines.py}) and share the server's
      notice rule (C{server/mailnotice.noticeWanted}, C{noticeLinks}); known
      debt: the hardened protocols belong in the library (about 1,700
      lines), and then this pair goes;
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
    package = moduleName(path) if path.name == "__init__.py" else moduleName(path).rpartition(".")[0]
    return importsIn(path.read_text("utf-8"), package, str(path))


def importsIn(source: str, package: str = "", filename: str = "<source>") -> set[str]:
    """
    Every C{clientid_twisted} module Python C{source} imports (see
    L{importedModules}); C{package} anchors its relative imports.
    """
    tree = ast.parse(source, filename)
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


def _publicAPIExtension() -> ModuleType:
    """
    docs/publicapi.py, the API reference's pydoctor extension, which lists
    the public modules once for it and for these tests.
    """
    spec = importlib.util.spec_from_file_location("publicapi", ROOT / "docs" / "publicapi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PUBLIC_MODULES: tuple[str, ...] = _publicAPIExtension().PUBLIC_MODULES
"""The library's API (docs/embedding.md, "Public modules"), as the API
reference lists it; every other library module is private (C{_name.py},
the layout Klein uses)."""

SHARED_INTERNALS = {
    "clientid_twisted._authlog": (
        "escapeForLog: every application logs client-chosen strings (user "
        "names, EHLO names, device names) by the one escaping rule the "
        "protocols and the policy use"
    ),
    "clientid_twisted._sessioninfo": (
        "peerHost: the peer's host is computed in one place (issue 13, item "
        "5), for the protocols, the server's line guard and connection limits"
    ),
    "clientid_twisted._configfile": (
        "one reader of clientid.toml (ConfigTable, getTable, ConfigError): "
        "the server, gateway, relay and web tables are checked like the "
        "policy's, in the same file"
    ),
    "clientid_twisted._certificate": (
        "one loader of TLS certificates and CA files, for the server's "
        "listeners (server/tls.py) and its relay sender"
    ),
    "clientid_twisted._keyfile": (
        "KEY_FILE: twistd clientid-mail and clientid-admin find the "
        "installation's identity key where the builder keeps it"
    ),
    "clientid_twisted._smtpfixes": (
        "the server's hardened ESMTP needs Twisted's SMTP workarounds; "
        "private Twisted names live in one module per Twisted module "
        "(tests/test_twistedprivate.py)"
    ),
    "clientid_twisted._imapfixes": "likewise, Twisted's IMAP4 workarounds, for the server's IMAP4",
    "clientid_twisted._linefixes": "likewise, LineReceiver's, for the server's line guard",
    "clientid_twisted._endpointfixes": (
        "likewise, endpoint string parsing, for the listeners the server "
        "hands to its workers and the gateway's backend endpoints"
    ),
}
"""Private library modules the bundled applications (never the examples or
the docs) may import, each with the reason; they ship and are tested with
the library, and are not API for embedders."""


def privateModule(imported: str) -> str | None:
    """
    The private library module an imported dotted name is in or under
    (C{"clientid_twisted.policy._engine"} for
    C{"clientid_twisted.policy._engine.DevicePolicy"}), or L{None} for a
    public one or an application's.
    """
    pieces = imported.split(".")
    if part(imported) in APPLICATIONS:
        return None
    for index, piece in enumerate(pieces[1:], 1):
        if piece.startswith("_") and not piece.startswith("__"):
            return ".".join(pieces[: index + 1])
    return None


def privateImports(imports: dict[str, set[str]], allowed: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """
    The imports of private library modules outside C{allowed}, as
    C{"where imports module"}.

    @param imports: The modules each place imports.
    """
    return sorted(
        f"{where} imports {module}"
        for where, modules in imports.items()
        for module in {privateModule(name) for name in modules} - {None} - set(allowed)
    )


def applicationImports() -> dict[str, set[str]]:
    """
    What each application module and dropin imports of the package.
    """
    paths = [p for p in sorted(PACKAGE.rglob("*.py")) if part(moduleName(p)) in APPLICATIONS]
    paths += sorted((ROOT / "twisted" / "plugins").glob("*.py"))
    return {str(p.relative_to(ROOT)): importedModules(p) for p in paths}


def exampleAndDocsImports() -> dict[str, set[str]]:
    """
    What each example and each Python block of the docs and README imports
    of the package.
    """
    from tests.test_docs_code import blocks

    found = {str(p.relative_to(ROOT)): importedModules(p) for p in sorted((ROOT / "examples").glob("*.py"))}
    for page, line, body, _ in blocks("python"):
        found[f"{page.relative_to(ROOT)}:{line}"] = importsIn(body)
    return found


_PRIVATE_NAME = re.compile(r"clientid_twisted(?:\.[A-Za-z]\w*)*\._[a-z]\w*")


class PublicAPITests(SynchronousTestCase):
    def test_implementationModulesPrivate(self) -> None:
        """
        Every library module is one of L{PUBLIC_MODULES} or private: a new
        public module is a decision to make here, not an accident.
        """
        public = []
        for path in sorted(PACKAGE.rglob("*.py")):
            name = moduleName(path)
            if part(name) in APPLICATIONS or name in PUBLIC_MODULES:
                continue
            if privateModule(name) is None:
                public.append(name)
        self.assertEqual(public, [])

    def test_applicationsUsePublicModules(self) -> None:
        """
        The applications (C{server}, C{gateway}, C{web}, C{admin},
        C{probe}) and the dropins import the library through its public
        modules, and of its private ones only L{SHARED_INTERNALS}.
        """
        self.assertEqual(privateImports(applicationImports(), set(SHARED_INTERNALS)), [])

    def test_sharedInternalsUsed(self) -> None:
        """
        Every exception in L{SHARED_INTERNALS} is still needed, so the list
        shrinks when an application stops using one.
        """
        used = {privateModule(name) for modules in applicationImports().values() for name in modules}
        self.assertEqual(set(SHARED_INTERNALS) - used, set())

    def test_examplesAndDocsUsePublicModules(self) -> None:
        """
        The examples and the Python in the docs and README import only
        public modules (no exception: they are what embedders copy), and
        the pages name no private module in their text.
        """
        self.assertEqual(privateImports(exampleAndDocsImports()), [])
        named = [
            f"{page.relative_to(ROOT)}: {match.group()}"
            for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
            for match in _PRIVATE_NAME.finditer(page.read_text("utf-8"))
        ]
        self.assertEqual(named, [])

    def test_checksSeePrivateImports(self) -> None:
        """
        The private-import check finds a private module imported by name,
        through its package, or as a name's module, allows what it is told
        to, and leaves public and application modules alone.
        """
        self.assertEqual(
            privateImports(
                {
                    "a": importsIn("from clientid_twisted.policy._engine import DevicePolicy"),
                    "b": importsIn("from clientid_twisted.store import _redis as redis"),
                    "c": importsIn("import clientid_twisted._identity"),
                    "d": importsIn("from clientid_twisted._authlog import escapeForLog"),
                    "e": importsIn(
                        "from clientid_twisted.policy import DevicePolicy\n"
                        "from clientid_twisted import __version__\n"
                        "from clientid_twisted.server.listening import _Listener\n"
                    ),
                },
                {"clientid_twisted._authlog"},
            ),
            [
                "a imports clientid_twisted.policy._engine",
                "b imports clientid_twisted.store._redis",
                "c imports clientid_twisted._identity",
            ],
        )
        self.assertTrue(_PRIVATE_NAME.search("see `clientid_twisted.policy._builder.buildAuthentication`"))
        self.assertIsNone(_PRIVATE_NAME.search("`clientid_twisted/store/_sentinel.py`, `clientid_twisted.__version__`"))

    def test_publicNamesResolve(self) -> None:
        """
        Each public module lists its API in C{__all__}, once each, and
        every name listed resolves (the lazy ones too, to the object of the
        module that defines it).
        """
        for name in PUBLIC_MODULES:
            module = importlib.import_module(name)
            exported = module.__all__
            self.assertEqual(len(exported), len(set(exported)), name)
            missing = [n for n in exported if not hasattr(module, n)]
            self.assertEqual(missing, [], name)
            lazy = getattr(module, "_PUBLIC", {})
            for attribute, source in lazy.items():
                self.assertIn(attribute, exported, name)
                self.assertIs(getattr(module, attribute), getattr(importlib.import_module(source), attribute))


REACTOR_FREE = """
import sys
import twisted.plugins.clientid_mail, twisted.plugins.clientid_cred
import clientid_twisted, clientid_twisted.policy, clientid_twisted.store, clientid_twisted.cred
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
