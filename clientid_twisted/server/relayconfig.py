# -*- test-case-name: tests.test_relay_config -*-
"""
The C{[relay]} table of C{clientid.toml}: the smarthost the standalone
server sends non-local mail through.

Without the table the server relays nothing (non-local recipients get 550).
With it, every key is checked at start-up, and a mistake is an error naming
the file and the key: a relay that cannot work must not accept mail it will
only bounce days later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from attrs import field, frozen

from clientid_twisted.gateway.config import BackendAddress, parseBackendAddress
from clientid_twisted._configfile import ConfigTable
from clientid_twisted.server.config import ConfigError, getTable

__all__ = ["RelaySettings", "parseRelayConfig", "DEFAULT_MAX_QUEUE_DAYS"]

DEFAULT_MAX_QUEUE_DAYS = 5.0
"""How long a message is retried before it is bounced (Postfix's
C{maximal_queue_lifetime} default is the same)."""

@frozen
class RelaySettings:
    """
    Where and how to relay.

    @ivar smarthost: Where it listens (the same endpoint forms as a
        gateway backend: C{tls:HOST:PORT} or C{tcp:host=HOST:port=PORT}).
    @ivar starttls: Upgrade a C{tcp:} connection with STARTTLS, and never
        send mail or a password if the smarthost does not offer it.
    @ivar password: Read from C{password_file} at start-up; never logged.
    @ivar caFile: PEM file of the authorities trusted for the smarthost's
        certificate; L{None}: the system's.
    """

    smarthost: BackendAddress
    starttls: bool = False
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    caFile: Path | None = None
    maxQueueDays: float = DEFAULT_MAX_QUEUE_DAYS

    @property
    def host(self) -> str:
        """
        The smarthost's name, also the name its certificate must carry.
        """
        return self.smarthost.host

    @property
    def usesTLS(self) -> bool:
        return self.smarthost.implicitTLS or self.starttls

    @property
    def maxQueueSeconds(self) -> float:
        return self.maxQueueDays * 86400.0


def _path(table: ConfigTable, key: str, base: Path) -> Path | None:
    value = table.string(key, None)
    if not value:
        return None
    return base / value


def parseRelayConfig(
    config: Mapping[str, Any], dataDir: Path, source: object = None
) -> RelaySettings | None:
    """
    Read C{[relay]}: L{None} when the table is absent (no relaying).

    @param dataDir: Relative C{password_file} and C{ca} paths are taken
        from here.
    @param source: The file, for error messages.
    @raise ConfigError: Naming the file, table and key of the first problem,
        including an unreadable password or CA file.
    """
    if "relay" not in config:
        return None
    table = ConfigTable("relay", getTable(dict(config), "relay", source), source)
    description = table.string("smarthost", None)
    if not description:
        raise table.error("smarthost", 'is required, e.g. "tls:smtp.example.net:465"')
    try:
        smarthost = parseBackendAddress(description, "[relay] ca")
    except ValueError as e:
        raise table.error(
            "smarthost", f'is invalid: {e} (use "tls:HOST:PORT" or "tcp:host=HOST:port=PORT")'
        ) from None
    implicitTLS = smarthost.implicitTLS
    starttls = table.boolean("starttls", False)
    if starttls and implicitTLS:
        raise table.error("starttls", "is for a tcp: smarthost; a tls: one is encrypted already")
    username = table.string("username", None) or None
    passwordFile = _path(table, "password_file", dataDir)
    caFile = _path(table, "ca", dataDir)
    maxQueueDays = table.get("max_queue_days", DEFAULT_MAX_QUEUE_DAYS)
    if isinstance(maxQueueDays, bool) or not isinstance(maxQueueDays, (int, float)):
        raise table.error("max_queue_days", f"must be a number of days, not {maxQueueDays!r}")
    if not 0 < maxQueueDays <= 365:
        raise table.error("max_queue_days", f"must be more than 0 and at most 365, not {maxQueueDays}")
    table.finish()

    if (username is None) != (passwordFile is None):
        raise table.error(
            "username" if username is None else "password_file",
            "is required: username and password_file go together",
        )
    password = None
    if passwordFile is not None:
        if not (implicitTLS or starttls):
            raise table.error(
                "password_file",
                "would send the password in clear: use a tls: smarthost or starttls = true",
            )
        try:
            text = passwordFile.read_bytes()
        except OSError as e:
            raise table.error("password_file", f"cannot be read ({passwordFile}: {e.strerror})") from None
        password = text.rstrip(b"\r\n")
        if not password:
            raise table.error("password_file", f"is empty ({passwordFile})")
    if caFile is not None:
        _checkAuthorities(table, caFile)
    return RelaySettings(
        smarthost=smarthost,
        starttls=starttls,
        username=username,
        password=password,
        caFile=caFile,
        maxQueueDays=float(maxQueueDays),
    )


def _checkAuthorities(table: ConfigTable, path: Path) -> None:
    from clientid_twisted._certificate import loadAuthorities

    try:
        loadAuthorities(path)
    except OSError as e:
        raise table.error("ca", f"cannot be read ({path}: {e.strerror})") from None
    except ValueError:
        raise table.error("ca", f"holds no PEM certificate ({path})") from None


__all__ += ["ConfigError"]
