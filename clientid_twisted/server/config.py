# -*- test-case-name: tests.test_config -*-
"""
The server's optional configuration file, C{DATA_DIR/clientid.toml}.

This module reads TOML and reports errors well; what each table means
(C{[server]}, C{[policy]}, C{[limits]}, ...) is checked by the part that uses
it, with L{getTable} to fetch a table and L{ConfigError} to complain.

L{checkConfig} is the one validator the server and C{clientid-admin} both
run on a loaded file: a table nobody reads (C{[limit]} for C{[limits]}) or
an unknown key in a known table is an error naming the file and the key,
so a typo cannot silently weaken a setting.  A part that adds a table
registers it in L{CONFIG_TABLES}.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "ConfigError",
    "CONFIG_FILE",
    "CONFIG_TABLES",
    "configPath",
    "loadConfig",
    "checkConfig",
    "getTable",
]

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


def checkConfig(config: Mapping[str, Any], source: object = None, dataDir: Path | None = None) -> None:
    """
    Check a whole loaded configuration: every top-level name is a known
    table (L{CONFIG_TABLES}), and each table's checker accepts it.

    @param source: The file, for error messages.
    @param dataDir: The data directory, for paths in the file relative to
        it (default: the file's directory).
    @raise ConfigError: Naming the file and the first unknown table or key,
        or the first bad value.
    """
    where = f"{source}: " if source is not None else ""
    for name, value in config.items():
        if name not in CONFIG_TABLES:
            shown = f"table [{name}]" if isinstance(value, dict) else f"key {name!r}"
            raise ConfigError(
                f"{where}unknown {shown} (known tables: "
                f"{', '.join(f'[{t}]' for t in sorted(CONFIG_TABLES))})"
            )
    if dataDir is None:
        dataDir = Path(str(source)).parent if source is not None else Path(".")
    checked: set[_Checker] = set()
    for checker in CONFIG_TABLES.values():
        if checker not in checked:
            checked.add(checker)
            checker(config, source, dataDir)


# The checkers import their tables' owners when called: those modules
# import this one for ConfigError and getTable.


def _checkServer(config: Mapping[str, Any], source: object, dataDir: Path) -> None:
    from clientid_twisted.server.limits import ServerLimits

    ServerLimits.fromConfig(getTable(dict(config), "server", source), source)


def _checkPolicy(config: Mapping[str, Any], source: object, dataDir: Path) -> None:
    from clientid_twisted.policy.config import parsePolicyConfig

    parsePolicyConfig(config, source)


def _checkGateway(config: Mapping[str, Any], source: object, dataDir: Path) -> None:
    from clientid_twisted.gateway.config import parseGatewayConfig

    parseGatewayConfig(config, source)


def _checkUsers(config: Mapping[str, Any], source: object, dataDir: Path) -> None:
    from clientid_twisted.server.users import aliasesFromConfig

    aliasesFromConfig(getTable(dict(config), "users", source), source)


def _checkRelay(config: Mapping[str, Any], source: object, dataDir: Path) -> None:
    from clientid_twisted.server.relayconfig import parseRelayConfig

    parseRelayConfig(config, dataDir, source)


def _checkWeb(config: Mapping[str, Any], source: object, dataDir: Path) -> None:
    from clientid_twisted.web.config import parseWebConfig

    parseWebConfig(config, source)


_Checker = Callable[[Mapping[str, Any], object, Path], None]

CONFIG_TABLES: dict[str, _Checker] = {
    "server": _checkServer,
    "policy": _checkPolicy,
    "limits": _checkPolicy,
    "types": _checkPolicy,
    "alerts": _checkPolicy,
    "store": _checkPolicy,
    "gateway": _checkGateway,
    "users": _checkUsers,
    "relay": _checkRelay,
    "web": _checkWeb,
}
"""Every top-level table of C{clientid.toml}, with the function that
checks it: C{f(config, source, dataDir)} takes the whole loaded file and
raises L{ConfigError} for an unknown key or a bad value in its table(s).  A
new table is a checker and one line here."""


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
