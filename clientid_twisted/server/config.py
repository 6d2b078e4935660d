# -*- test-case-name: tests.test_config -*-
"""
The server's optional configuration file, C{DATA_DIR/clientid.toml}.

This module only reads TOML and reports errors well; what each table means
(C{[server]}, C{[policy]}, C{[limits]}, ...) is checked by the part that uses
it, with L{getTable} to fetch a table and L{ConfigError} to complain.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "CONFIG_FILE", "configPath", "loadConfig", "getTable"]

CONFIG_FILE = "clientid.toml"
"""The name of the configuration file inside the data directory."""


class ConfigError(ValueError):
    """
    The configuration cannot be used.  The message names the file and, for
    syntax errors, the line and column.
    """


def configPath(dataDir: Path) -> Path:
    """
    Where the configuration of the data directory C{dataDir} lives.
    """
    return Path(dataDir) / CONFIG_FILE


def loadConfig(path: Path | None, required: bool = False) -> dict[str, Any]:
    """
    Read a TOML configuration file.

    @param path: The file, or L{None} for no configuration at all.
    @param required: Whether a missing file is an error (the operator named
        it) rather than an empty configuration (the default file, which is
        optional).
    @return: The top-level table.
    @raise ConfigError: If a required file is missing, or any file is
        unreadable, not UTF-8 or not valid TOML.
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: configuration file not found") from None
        return {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 (at line {line})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # The message ends "(at line L, column C)".
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def getTable(
    config: dict[str, Any], name: str, source: object = None
) -> dict[str, Any]:
    """
    The table C{[name]} of C{config}, empty if absent.

    @param source: The file, for the error message.
    @raise ConfigError: If C{name} is there but is not a table (C{policy =
        "x"} instead of C{[policy]}).
    """
    value = config.get(name, {})
    if not isinstance(value, dict):
        where = f"{source}: " if source is not None else ""
        raise ConfigError(
            f"{where}{name!r} must be a table ([{name}]), " f"not {_tomlType(value)}"
        )
    return value


def _tomlType(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
    }
    for kind, description in names.items():
        if isinstance(value, kind):
            return description
    return "a date or time"
