# -*- test-case-name: tests.test_web_config -*-
"""
The C{[web]} table of C{clientid.toml}: where the self-service links point
and how long links and sessions last.
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from attrs import frozen

from clientid_twisted._configfile import ConfigTable, getTable

__all__ = ["WebConfig", "parseWebConfig"]


@frozen
class WebConfig:
    """
    @ivar baseURL: The site's address as the owner's browser reaches it, for
        the links in notices; L{None}: C{https://HOSTNAME:PORT} of the
        first C{--web} listener.
    @ivar linkSeconds: How long a link in a notice works.
    @ivar sessionIdleSeconds: How long a device-page session lasts without
        a request.
    """

    baseURL: str | None = None
    linkSeconds: float = 86400.0
    sessionIdleSeconds: float = 900.0

    def linkBase(self, hostname: str, listener: str) -> str:
        """
        The base of the links: L{baseURL}, or the site on C{listener}'s
        port under C{hostname}.
        """
        if self.baseURL is not None:
            return self.baseURL.rstrip("/")
        port = next((p for p in listener.split(":")[1:] if p.isdigit()), "443")
        return f"https://{hostname}" + ("" if port == "443" else f":{port}")


def parseWebConfig(config: Mapping[str, Any], source: object = None) -> WebConfig:
    """
    Read C{[web]}.

    @raise clientid_twisted.server.config.ConfigError: For a wrong or
        unknown key.
    """
    table = ConfigTable("web", getTable(dict(config), "web", source), source)
    baseURL = table.string("base_url", None)
    if baseURL is not None:
        parts = urlsplit(baseURL)
        if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
            raise table.error("base_url", f"must be an https:// URL without query, not {baseURL!r}")
    web = WebConfig(
        baseURL=baseURL,
        linkSeconds=table.seconds("link_ttl_seconds", 86400.0),
        sessionIdleSeconds=table.seconds("session_idle_seconds", 900.0),
    )
    table.finish()
    return web
