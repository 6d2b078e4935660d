# -*- test-case-name: tests.test_config -*-
"""
The server's optional configuration file, C{DATA_DIR/clientid.toml}.

Reading TOML and reporting errors is the library's
(L{clientid_twisted._configfile}: L{ConfigError}, L{loadConfig}, L{getTable},
re-exported here); what each table means (C{[server]}, C{[policy]},
C{[limits]}, ...) is checked by the part that uses it.

L{checkConfig} is the one validator the server and C{clientid-admin} both
run on a loaded file: a table nobody reads (C{[limit]} for C{[limits]}) or
an unknown key in a known table is an error naming the file and the key,
so a typo cannot silently weaken a setting.  A part that adds a table
registers it in L{CONFIG_TABLES}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from clientid_twisted._configfile import (
    ConfigError,
    TableChecker,
    checkTables,
    getTable,
    loadConfig,
)
from clientid_twisted.policy import POLICY_TABLES

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


def configPath(dataDir: Path) -> Path:
    """
    Where the configuration of the data directory C{dataDir} lives.
    """
    return Path(dataDir) / CONFIG_FILE


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
    checkTables(config, CONFIG_TABLES, source, dataDir)


# The checkers import their tables' owners when called: those modules
# import this one (or the library's configfile) for ConfigError and
# getTable.


def _checkServer(config: Mapping[str, Any], source: object, dataDir: Path) -> None:
    from clientid_twisted.server.limits import ServerLimits

    ServerLimits.fromConfig(getTable(dict(config), "server", source), source)


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


CONFIG_TABLES: dict[str, TableChecker] = {
    **POLICY_TABLES,
    "server": _checkServer,
    "gateway": _checkGateway,
    "users": _checkUsers,
    "relay": _checkRelay,
    "web": _checkWeb,
}
"""Every top-level table of C{clientid.toml}, with the function that
checks it: C{f(config, source, dataDir)} takes the whole loaded file and
raises L{ConfigError} for an unknown key or a bad value in its table(s).  A
new table is a checker and one line here."""
