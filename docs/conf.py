"""
Sphinx configuration for the clientid-twisted documentation.

Build with C{python -m sphinx -W --keep-going -b html docs BUILDDIR}; the
test suite does so (C{tests/test_docs.py}) with warnings as errors.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Iterator

from zope.interface.interface import InterfaceClass

project = "clientid-twisted"
author = "clientid-twisted developers"
copyright = "clientid-twisted developers"
release = version = importlib.import_module("clientid_twisted._version").__version__

extensions = ["myst_parser", "pydoctor.sphinx_ext.build_apidocs"]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "build", "html", ".DS_Store", "Thumbs.db"]

# Page links such as [Limits](limits.md) and #anchors to headings.
myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "clientid-twisted"

# -- API reference ------------------------------------------------------------
#
# pydoctor renders the epytext docstrings into <outdir>/api; every problem it
# reports (a bad docstring, a link target it cannot find) becomes a Sphinx
# warning, so an error there fails the build like one in the pages.  Links to
# Python and Twisted go through an inventory made here from the installed
# modules, so the build needs no network.

_docs = Path(__file__).resolve().parent
_package = _docs.parent / "clientid_twisted"

# The public modules' names are documented where users import them from
# (docs/publicapi.py), not in the private modules that define them.
sys.path.insert(0, str(_docs))

pydoctor_args = [
    "--system-class=publicapi.PublicAPISystem",
    "--project-name=clientid-twisted",
    f"--project-version={release}",
    "--project-url=../index.html",
    "--docformat=epytext",
    "--html-viewsource-base=",
    "--html-output={outdir}/api",
    str(_package),
]

PYTHON_DOCS = "https://docs.python.org/3"
TWISTED_DOCS = "https://docs.twisted.org/en/stable/api"
TWISTED_LAZY = ["twisted.internet.testing", "twisted.web.client", "twisted.web.iweb"]


def _publicNames(module: ModuleType) -> Iterator[tuple[str, object]]:
    exported = getattr(module, "__all__", ())
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if name in exported or getattr(value, "__module__", None) == module.__name__:
            yield name, value


def _members(cls: object) -> Iterator[str]:
    names = cls.names() if isinstance(cls, InterfaceClass) else vars(cls)
    for name in names:
        if not name.startswith("_"):
            yield name


def _twistedEntries(module: ModuleType) -> Iterator[tuple[str, str, str]]:
    modname = module.__name__
    yield modname, "py:module", f"{modname}.html"
    for name, value in _publicNames(module):
        full = f"{modname}.{name}"
        if isinstance(value, (type, InterfaceClass)):
            yield full, "py:class", f"{full}.html"
            for member in _members(value):
                yield f"{full}.{member}", "py:attribute", f"{full}.html#{member}"
        else:
            yield full, "py:function", f"{modname}.html#{name}"


def _pythonEntries(module: ModuleType) -> Iterator[tuple[str, str, str]]:
    modname = module.__name__
    if modname == "builtins":
        for name, value in vars(module).items():
            if name.startswith("_"):
                continue
            if value is None or isinstance(value, bool):
                yield name, "py:data", f"library/constants.html#{name}"
            elif isinstance(value, type) and issubclass(value, BaseException):
                yield name, "py:exception", f"library/exceptions.html#{name}"
            elif isinstance(value, type) and name not in ("object", "type"):
                yield name, "py:class", f"library/stdtypes.html#{name}"
            else:
                yield name, "py:function", f"library/functions.html#{name}"
        return
    page = f"library/{modname}.html"
    yield modname, "py:module", f"{page}#module-{modname}"
    for name, value in _publicNames(module):
        yield f"{modname}.{name}", "py:attribute", f"{page}#{modname}.{name}"


def _writeInventory(path: Path, project: str, entries: Iterable[tuple[str, str, str]]) -> None:
    lines = sorted({f"{name} {role} 1 {uri} -" for name, role, uri in entries})
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    path.write_bytes(header.encode("ascii") + zlib.compress("\n".join(lines).encode("utf-8")))


def _makeInventories(app: Any) -> None:
    """
    Import the package and write inventories for the Python and Twisted
    modules it uses, then point pydoctor at them.
    """
    import clientid_twisted

    for info in pkgutil.walk_packages(clientid_twisted.__path__, "clientid_twisted."):
        importlib.import_module(info.name)
    # Modules the package imports only when it needs them.
    for name in TWISTED_LAZY:
        importlib.import_module(name)
    modules = [m for m in list(sys.modules.values()) if isinstance(m, ModuleType)]
    twisted = [m for m in modules if m.__name__.startswith("twisted.") and "test" not in m.__name__.split(".")]
    python = [
        m
        for m in modules
        if m.__name__.split(".")[0] in sys.stdlib_module_names
        and not any(part.startswith("_") for part in m.__name__.split("."))
    ]
    where = Path(app.doctreedir)
    where.mkdir(parents=True, exist_ok=True)
    inventories = {
        "python": (PYTHON_DOCS, [e for m in python for e in _pythonEntries(m)]),
        "twisted": (TWISTED_DOCS, [e for m in twisted for e in _twistedEntries(m)]),
    }
    extra = []
    for name, (url, entries) in inventories.items():
        path = where / f"{name}-objects.inv"
        _writeInventory(path, name, entries)
        extra.append(f"--intersphinx-file={path}::{url}")
    app.config.pydoctor_args = list(app.config.pydoctor_args) + extra


def setup(app: Any) -> None:
    # Before pydoctor's own builder-inited handler (priority 490).
    app.connect("builder-inited", _makeInventories, priority=400)
