# -*- test-case-name: tests.test_config -*-
"""
Reading C{clientid.toml}: TOML with errors an operator can act on.

This module only reads TOML and reports errors well; what each table means
(C{[server]}, C{[policy]}, C{[limits]}, ...) is checked by the part that uses
it, with L{getTable} to fetch a table and L{ConfigError} to complain.  It is
library code: the policy, the cred plugin and every application read their
tables through it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["ConfigError", "ConfigTable", "TableChecker", "checkTables", "loadConfig", "getTable"]


class ConfigError(ValueError):
    """
    The configuration cannot be used.  The message names the file and, for
    syntax errors, the line and column.
    """


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


TableChecker = Callable[[Mapping[str, Any], object, Path], None]
"""C{f(config, source, dataDir)}: takes the whole loaded file and raises
L{ConfigError} for an unknown key or a bad value in its table(s)."""


def checkTables(
    config: Mapping[str, Any],
    checkers: Mapping[str, TableChecker],
    source: object = None,
    dataDir: Path | None = None,
    unchecked: frozenset[str] = frozenset(),
) -> None:
    """
    Check a whole loaded configuration: every top-level name is a table
    C{checkers} knows (or one of C{unchecked}), and each table's checker
    accepts it.

    @param checkers: Each known table and the function that checks it
        (one function may check several tables: it runs once).
    @param source: The file, for error messages.
    @param dataDir: The data directory, for paths in the file relative to
        it (default: the file's directory).
    @param unchecked: Tables that are allowed but belong to someone else.
    @raise ConfigError: Naming the file and the first unknown table or key,
        or the first bad value.
    """
    where = f"{source}: " if source is not None else ""
    known = set(checkers) | set(unchecked)
    for name, value in config.items():
        if name not in known:
            shown = f"table [{name}]" if isinstance(value, dict) else f"key {name!r}"
            raise ConfigError(
                f"{where}unknown {shown} (known tables: "
                f"{', '.join(f'[{t}]' for t in sorted(known))})"
            )
    if dataDir is None:
        dataDir = Path(str(source)).parent if source is not None else Path(".")
    checked: set[TableChecker] = set()
    for checker in checkers.values():
        if checker not in checked:
            checked.add(checker)
            checker(config, source, dataDir)


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


class ConfigTable:
    """
    Reads one table, remembering which keys were used so the rest can be
    reported as unknown (L{finish}): every table of C{clientid.toml} is read
    through one, so errors name file, table and key the same way.
    """

    def __init__(self, name: str, values: Mapping[str, Any], source: object) -> None:
        self.name = name
        self.values = values
        self.where = f"{source}: " if source is not None else ""
        self.used: set[str] = set()

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where}[{self.name}] {key} {message}")

    def get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.values.get(key, default)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def integer(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {value!r}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, not {value}")
        return value

    def seconds(self, key: str, default: float, zero: bool = False) -> float:
        """
        A finite number of seconds, above 0 (or, with C{zero}, at least 0).
        """
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number of seconds, not {value!r}")
        if zero and value == 0:
            return 0.0
        if not value > 0 or value == float("inf"):
            least = "0 or more" if zero else "a positive number of"
            raise self.error(key, f"must be {least} seconds, not {value}")
        return float(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.get(key, default)
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return str(value)

    def string(self, key: str, default: str | None) -> str | None:
        value = self.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.error(key, f"must be a string, not {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.values) - self.used)
        if unknown:
            raise ConfigError(
                f"{self.where}[{self.name}] unknown key {unknown[0]!r} "
                f"(known: {', '.join(sorted(self.used))})"
            )
