"""
A pydoctor extension for the API reference: document each name of the
public modules' C{__all__} where users import it from.

The package keeps its implementation in private modules (C{_engine.py})
and lists the API in a few public ones (docs/embedding.md, "Public
modules").  pydoctor moves a re-exported name into the public module only
when the private module does not list it in its own C{__all__}; ours do
(they are what the package itself imports), so without this the public
modules' pages would be empty and the API would sit behind "private".
This post-processor moves every object a public module exports from a
private module into that public module, before pydoctor links anything
(links to the private path keep working: pydoctor leaves a forward), and
the names in the moved objects' docstrings still resolve in the module that
defines them.
"""

from __future__ import annotations

from typing import Any

PUBLIC_MODULES = (
    # Submodules first: the package re-exports some of their names again.
    "clientid_twisted.cred",
    "clientid_twisted.imap",
    "clientid_twisted.interfaces",
    "clientid_twisted.policy",
    "clientid_twisted.smtp",
    "clientid_twisted.store",
    "clientid_twisted.testing",
    "clientid_twisted",
)
"""The library's API (docs/embedding.md, "Public modules"), listed once,
here: tests/test_layering.py checks that every other library module is
private and that the applications, examples and docs import only these."""


def _isPrivate(fullName: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in fullName.split("."))


def movePublicNames(system: Any) -> None:
    """
    Reparent the objects the public modules export from private modules.
    """
    moved: dict[Any, list[Any]] = {}
    for moduleName in PUBLIC_MODULES:
        module = system.allobjects.get(moduleName)
        if module is None:
            continue
        for name in module.all or ():
            if name in module.contents:
                continue
            target = module.expandName(name)
            obj = system.objForFullName(target)
            if obj is None or obj.parent is None or not _isPrivate(obj.parent.fullName()):
                continue
            origin = obj.parent
            obj.reparent(module, name)
            _resolveNamesIn(obj, origin)
            moved.setdefault(origin, []).append(obj)
    for origin, objects in moved.items():
        _findMembersOf(origin, objects)


def _resolveNamesIn(obj: Any, origin: Any) -> None:
    """
    Resolve the names in a moved object's docstrings (L{UnauthorizedLogin})
    in the module that defines it, as before the move: the public module
    does not import what its implementation modules do.
    """
    own = obj._localNameToFullName

    def localNameToFullName(name: str) -> str:
        if name in obj.contents or name in getattr(obj, "_localNameToFullName_map", {}):
            return own(name)
        if origin.isNameDefined(name):
            return origin._localNameToFullName(name)
        return own(name)

    obj._localNameToFullName = localNameToFullName


def _findMembersOf(origin: Any, objects: list[Any]) -> None:
    """
    Let the defining module's own docstrings name the members of the
    classes it defined (L{loadState} for C{SQLiteStore.loadState}), as
    pydoctor lets them while the classes live there.
    """
    own = origin._localNameToFullName

    def localNameToFullName(name: str) -> str:
        if origin.isNameDefined(name):
            return own(name)
        found = [obj.contents[name].fullName() for obj in objects if name in obj.contents]
        return found[0] if len(found) == 1 else own(name)

    origin._localNameToFullName = localNameToFullName


def setup_pydoctor_extension(registrar: Any) -> None:
    # Before pydoctor's own post-processing (priority 200) computes MROs
    # and links.
    registrar.register_post_processor(movePublicNames, priority=300)


try:
    from pydoctor.model import System
except ImportError:  # pragma: no cover - only the docs build imports this
    pass
else:

    class PublicAPISystem(System):
        """
        pydoctor's system with L{movePublicNames}.
        """

        custom_extensions = ["publicapi"]
