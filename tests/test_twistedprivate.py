"""
Twisted's private names (issue 13, finding 4): only the workaround modules
(L{WORKAROUND_MODULES}: C{clientid_twisted._imapfixes}, C{_smtpfixes},
C{_linefixes}, C{_endpointfixes}) use them, and L{KNOWN} lists every one
with the module that uses it; docs/twisted-fixes.md says for each why
(which Twisted bug or gap it works around).  A private name anywhere else
fails L{PrivateNameTests.test_onlyWorkaroundModules}; a new one in a
workaround module fails L{PrivateNameTests.test_noNewPrivateNames} until
it is listed and explained; a Twisted release that renames or drops one
fails L{PrivateNameTests.test_twistedStillHasThem}, naming it, instead of
an override silently no longer being called.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
from pathlib import Path

import twisted
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

KNOWN: dict[str, set[tuple[str, str]]] = {
    "clientid_twisted._endpointfixes": {
        ("twisted.internet.endpoints", "_parse"),
    },
    "clientid_twisted._imapfixes": {
        ("twisted.mail.imap4", "_FetchParser"),
        ("twisted.mail.imap4.IMAP4Client", "_capCache"),
        ("twisted.mail.imap4.IMAP4Client", "_startedTLS"),
        ("twisted.mail.imap4.IMAP4Server", "_IMAP4Server__ebFetch"),
        ("twisted.mail.imap4.IMAP4Server", "_IMAP4Server__ebSearch"),
        ("twisted.mail.imap4.IMAP4Server", "_IMAP4Server__ebSpewMessage"),
        ("twisted.mail.imap4.IMAP4Server", "_cbAppendGotMailbox"),
        ("twisted.mail.imap4.IMAP4Server", "_cbCopySelectedMailbox"),
        ("twisted.mail.imap4.IMAP4Server", "_cbSelectWork"),
        ("twisted.mail.imap4.IMAP4Server", "_cbStatusGotMailbox"),
        ("twisted.mail.imap4.IMAP4Server", "_fileLiteral"),
        ("twisted.mail.imap4.IMAP4Server", "_onLogout"),
        ("twisted.mail.imap4.IMAP4Server", "_pendingLiteral"),
        ("twisted.mail.imap4.IMAP4Server", "_unblock"),
        ("twisted.mail.imap4.LiteralFile", "_memoryFileLimit"),
        ("twisted.protocols.basic.LineReceiver", "_busyReceiving"),
    },
    "clientid_twisted._linefixes": {
        ("twisted.protocols.basic.LineReceiver", "_buffer"),
        ("twisted.protocols.basic.LineOnlyReceiver", "_buffer"),
    },
    "clientid_twisted._smtpfixes": {
        ("twisted.mail.smtp.ESMTP", "_cbAuthenticated"),
        ("twisted.mail.smtp.ESMTPClient", "_tlsMode"),
        ("twisted.mail.smtp.SMTP", "_messageHandled"),
        ("twisted.mail.smtp.SMTP", "_onLogout"),
    },
}
"""Every private Twisted name the package uses, by the module that uses
it: only the workaround modules (L{WORKAROUND_MODULES})."""

WORKAROUND_MODULES = {
    "clientid_twisted._endpointfixes": "twisted.internet.endpoints",
    "clientid_twisted._imapfixes": "twisted.mail.imap4",
    "clientid_twisted._linefixes": "twisted.protocols.basic",
    "clientid_twisted._smtpfixes": "twisted.mail.smtp",
}
"""The one module per Twisted module whose private names we use; nothing
else may use one."""


def moduleName(p: Path, root: Path = ROOT) -> str:
    parts = list(p.relative_to(root).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)

def private(n: str) -> bool:
    return n.startswith('_') and not (n.startswith('__') and n.endswith('__'))

def twistedPrivateOf(obj: type, allClasses: list[type]) -> dict[str, str]:
    """
    The private names Twisted's classes define in the MRO of C{obj} and of
    every class of ours that derives from it (a mixin's Twisted names are
    its users' bases'), each with the class that defines it.
    """
    names: dict[str, str] = {}
    related = [obj] + [c for c in allClasses if issubclass(c, obj) and c is not obj]
    for klass in related:
        for base in klass.__mro__[1:]:
            if (base.__module__ or '').startswith('twisted'):
                for n in vars(base):
                    if private(n):
                        names.setdefault(n, f'{base.__module__}.{base.__qualname__}')
    return names

def allOurClasses(root: Path = ROOT, package: str = "clientid_twisted") -> list[type]:
    out: list[type] = []
    for path in sorted((root / package).rglob('*.py')):
        try:
            module = importlib.import_module(moduleName(path, root))
        except Exception:
            continue
        for v in vars(module).values():
            if inspect.isclass(v) and (v.__module__ or '').startswith(package):
                out.append(v)
    return out

def scan(root: Path = ROOT, package: str = "clientid_twisted") -> dict[str, set[tuple[str, str]]]:
    """
    Every private Twisted name each module of the package uses, as
    C{(owner, name)}: imported (C{from twisted... import _x}), reached
    through a Twisted module or class (C{imap4._FetchParser}), name-mangled
    (C{_IMAP4Server__ebSearch}), or defined or used on C{self} in a class
    whose Twisted bases define it (an override or a read of Twisted's
    private state).
    """
    found: dict[str, set[tuple[str, str]]] = {}
    classes = allOurClasses(root, package)
    for path in sorted((root / package).rglob('*.py')):
        name = moduleName(path, root)
        tree = ast.parse(path.read_text())
        try:
            module = importlib.import_module(name)
        except Exception as e:  # pragma: no cover
            raise AssertionError(f'{name} cannot be imported: {e}')
        uses: set[tuple[str, str]] = set()
        # names bound to twisted objects at module level
        twistedNames: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split('.')[0] == 'twisted':
                for a in node.names:
                    if private(a.name):
                        uses.add((node.module, a.name))
                    twistedNames[a.asname or a.name] = f'{node.module}.{a.name}'
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split('.')[0] == 'twisted':
                        twistedNames[(a.asname or a.name).split('.')[0]] = a.name if a.asname else 'twisted'
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and private(node.attr):
                # chain root
                chain = [node.attr]
                v = node.value
                while isinstance(v, ast.Attribute):
                    chain.append(v.attr)
                    v = v.value
                if isinstance(v, ast.Name) and v.id in twistedNames:
                    uses.add((twistedNames[v.id] + ''.join('.' + c for c in reversed(chain[1:])), node.attr))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ('_IMAP4Server__' in node.value or '_SMTP__' in node.value or '_ESMTP__' in node.value):
                uses.add(('(mangled string)', node.value))
            if isinstance(node, ast.Attribute) and ('_IMAP4Server__' in node.attr):
                uses.add(('(mangled)', node.attr))
        # classes: private names of twisted bases used via self or overridden
        for cls in ast.walk(tree):
            if not isinstance(cls, ast.ClassDef):
                continue
            obj = getattr(module, cls.name, None)
            if not inspect.isclass(obj):
                continue
            twistedPrivate = twistedPrivateOf(obj, classes)
            for stmt in cls.body:
                # a class attribute replacing one of Twisted's
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(stmt, ast.AnnAssign) else []
                for t in targets:
                    if isinstance(t, ast.Name) and t.id in twistedPrivate:
                        uses.add((twistedPrivate[t.id], t.id))
            for node in ast.walk(cls):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in twistedPrivate:
                    uses.add((twistedPrivate[node.name], node.name))
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ('self', 'p', 'protocol') and node.attr in twistedPrivate:
                    uses.add((twistedPrivate[node.attr], node.attr))
        if uses:
            found[name] = uses
    return found


def missingNames(known: dict[str, set[tuple[str, str]]]) -> list[str]:
    """
    The names of C{known} the installed Twisted does not define, each as
    C{owner.name (used by module)}.
    """
    missing = []
    for module, uses in sorted(known.items()):
        for owner, name in sorted(uses):
            if not hasattr(namedAny(owner), name):
                missing.append(f"{owner}.{name} (used by {module})")
    return missing


def outsideWorkarounds(found: dict[str, set[tuple[str, str]]]) -> dict[str, list[tuple[str, str]]]:
    """
    The modules of C{found} (a L{scan}) that use a private Twisted name
    but are not workaround modules, each with the names it uses.
    """
    return {
        module: sorted(uses) for module, uses in found.items() if module not in WORKAROUND_MODULES
    }


class PrivateNameTests(SynchronousTestCase):
    def test_noNewPrivateNames(self) -> None:
        """
        The package uses no private Twisted name that L{KNOWN} does not
        list for that module.
        """
        found = scan()
        new = {
            module: sorted(uses - KNOWN.get(module, set()))
            for module, uses in found.items()
            if uses - KNOWN.get(module, set())
        }
        self.assertEqual(
            new, {}, "private Twisted names: list them in KNOWN and say why in docs/twisted-fixes.md"
        )

    def test_onlyWorkaroundModules(self) -> None:
        """
        No module but the workaround modules uses a private Twisted name
        (a protocol uses the public names those modules give them), and
        L{KNOWN} lists no other module.
        """
        self.assertEqual(
            outsideWorkarounds(scan()),
            {},
            "private Twisted names outside the workaround modules: move them into "
            + ", ".join(sorted(WORKAROUND_MODULES)),
        )
        self.assertLessEqual(set(KNOWN), set(WORKAROUND_MODULES))

    def test_privateNameOutsideIsFound(self) -> None:
        """
        A protocol module outside the workaround modules that overrides a
        private Twisted method, or reads private Twisted state on C{self},
        is reported with those names.
        """
        root = Path(self.mktemp())
        (root / "outsider").mkdir(parents=True)
        (root / "outsider" / "__init__.py").write_text("")
        (root / "outsider" / "proto.py").write_text(
            "from twisted.mail import imap4\n"
            "class Server(imap4.IMAP4Server):\n"
            "    def _unblock(self):\n"
            "        self._buffer = b''\n"
        )
        sys.path.insert(0, str(root))
        self.addCleanup(sys.path.remove, str(root))
        self.addCleanup(sys.modules.pop, "outsider.proto", None)
        self.addCleanup(sys.modules.pop, "outsider", None)
        self.assertEqual(
            outsideWorkarounds(scan(root, "outsider")),
            {
                "outsider.proto": [
                    ("twisted.mail.imap4.IMAP4Server", "_unblock"),
                    ("twisted.protocols.basic.LineReceiver", "_buffer"),
                ]
            },
        )

    def test_twistedStillHasThem(self) -> None:
        """
        The installed Twisted still defines every private name we use.
        """
        missing = missingNames(KNOWN)
        self.assertEqual(
            missing,
            [],
            f"Twisted {twisted.__version__} moved private names the workarounds in "
            "docs/twisted-fixes.md rely on",
        )

    def test_missingNameIsNamed(self) -> None:
        """
        A name a Twisted release dropped is reported with its owner and
        the module that uses it.
        """
        known = {"clientid_twisted.imap": {("twisted.mail.imap4.IMAP4Server", "_goneInThisRelease")}}
        self.assertEqual(
            missingNames(known),
            ["twisted.mail.imap4.IMAP4Server._goneInThisRelease (used by clientid_twisted.imap)"],
        )

    def test_scanSeesUses(self) -> None:
        """
        The scan finds an override, a read on C{self} and a name reached
        through a Twisted module (checked on the modules known to have
        them).
        """
        found = scan()
        self.assertIn(("twisted.mail.imap4", "_FetchParser"), found["clientid_twisted._imapfixes"])
        self.assertIn(
            ("twisted.mail.imap4.IMAP4Server", "_IMAP4Server__ebSearch"),
            found["clientid_twisted._imapfixes"],
        )
        self.assertIn(
            ("twisted.mail.imap4.LiteralFile", "_memoryFileLimit"), found["clientid_twisted._imapfixes"]
        )
        # LineReceiver and LineOnlyReceiver both define _buffer: which one
        # the scan names depends on which of our subclasses it meets first,
        # and that changes when a test has re-imported a module (the full
        # suite named LineOnlyReceiver, the file alone LineReceiver).
        self.assertTrue(
            {("twisted.protocols.basic.LineReceiver", "_buffer"), ("twisted.protocols.basic.LineOnlyReceiver", "_buffer")}
            & found["clientid_twisted._linefixes"],
            found["clientid_twisted._linefixes"],
        )
