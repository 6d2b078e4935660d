# -*- test-case-name: tests.test_layering -*-
"""
Package C{__init__} modules that name their public API without importing it
(PEP 562 module C{__getattr__}).

Why: C{twisted.mail.smtp} installs the default reactor when it is imported,
and the twistd and cred dropins import these packages just to describe
themselves; an eager re-export would pick the reactor before
C{twistd --reactor} could.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping

__all__ = ["lazyExports"]


def lazyExports(
    packageName: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """
    The C{__getattr__} and C{__dir__} of a package that re-exports C{names}.

    @param packageName: The package's C{__name__}.
    @param names: Each public name and the module that defines it.
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {packageName!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[packageName], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(names) | set(vars(sys.modules[packageName])))

    return __getattr__, __dir__
