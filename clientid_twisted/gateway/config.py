# -*- test-case-name: tests.test_gateway_config -*-
"""
The gateway's configuration: the C{[gateway]} table of C{clientid.toml}
and the backend endpoint strings of C{--imap-backend} / C{--smtp-backend}.

A backend is named by a Twisted I{client} endpoint string, restricted to
the two forms the gateway can secure with its own TLS settings:
C{tcp:host=H:port=P} (plaintext, or STARTTLS with C{backend_starttls}) and
C{tls:H:P} (implicit TLS).  Certificate checks come from C{backend_ca} /
C{backend_verify} rather than the C{tls:} endpoint's own C{trustRoots=}, so
one setting covers both forms; those C{tls:} parameters are refused.
"""

from __future__ import annotations

from typing import Any, Mapping

from attrs import evolve, frozen

from twisted.internet import endpoints

from clientid_twisted._endpointfixes import splitEndpointDescription
from clientid_twisted._configfile import ConfigTable, getTable

__all__ = [
    "BackendAddress",
    "GatewayConfig",
    "parseBackendAddress",
    "parseGatewayConfig",
]

_TLS_ONLY_KEYS = ("certificate", "privateKey", "trustRoots", "endpoint")


@frozen
class BackendAddress:
    """
    Where a backend listens, parsed from its endpoint string.

    @ivar description: The endpoint string as given (for logs).
    @ivar tcpDescription: The C{tcp:} client endpoint string that reaches it.
    @ivar host: The host name or address: the name its certificate must
        carry.
    @ivar implicitTLS: Whether TLS starts as soon as the connection is made
        (C{tls:}), rather than plaintext.
    """

    description: str
    tcpDescription: str
    host: str
    implicitTLS: bool


class _ValidatingReactor:
    """
    Stands in for the reactor while an endpoint string is checked: parsing
    must not install the real reactor before twistd picks one.
    """


def parseBackendAddress(
    description: str, trustSettings: str = "[gateway] backend_ca / backend_verify"
) -> BackendAddress:
    """
    Check a backend endpoint string.

    @param trustSettings: The settings that take the place of the refused
        C{tls:} parameters, for the message.

    @raise ValueError: Saying what is wrong, if it is not a C{tcp:} or
        C{tls:} client endpoint with a host and a port.
    """
    # Twisted's own tokenizer, so quoting and escaping mean what they mean
    # in every other endpoint string.
    args, kwargs = splitEndpointDescription(description)
    scheme = args[0].lower() if args else ""
    if scheme not in ("tcp", "tls"):
        raise ValueError(
            f"{description!r} is not a tcp: or tls: client endpoint "
            "(e.g. tcp:host=127.0.0.1:port=143 or tls:mail.example.net:993)"
        )
    for key in _TLS_ONLY_KEYS:
        if key in kwargs:
            raise ValueError(
                f"{description!r}: {key}= is not supported here; "
                f"set {trustSettings} instead"
            )
    rest = description.split(":", 1)[1] if ":" in description else ""
    tcpDescription = "tcp:" + rest
    positional = args[1:]
    host = kwargs.get("host") or (positional[0] if positional else "")
    if not host:
        raise ValueError(f"{description!r} names no host")
    if "port" not in kwargs and len(positional) < (1 if "host" in kwargs else 2):
        raise ValueError(f"{description!r} names no port")
    try:
        endpoints.clientFromString(_ValidatingReactor(), tcpDescription)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{description!r}: {e}") from None
    return BackendAddress(description, tcpDescription, host, scheme == "tls")


@frozen
class GatewayConfig:
    """
    C{[gateway]}: which backends, and how to reach them.

    @ivar imapBackend: The IMAP backend, or L{None}: the standalone IMAP
        server.
    @ivar smtpBackend: The SMTP submission backend, or L{None}: the
        standalone submission server.
    @ivar starttls: Upgrade a plaintext (C{tcp:}) backend connection with
        STARTTLS before any credentials cross it.
    @ivar caPath: PEM file of the certificate authorities (or the
        self-signed certificate) the backend's certificate must chain to;
        L{None}: the system's trust store.
    @ivar verify: Whether the backend's certificate is checked at all.
    @ivar timeoutSeconds: How long a backend may take to connect or to
        answer during the login before the login gets a temporary failure.
    """

    imapBackend: BackendAddress | None = None
    smtpBackend: BackendAddress | None = None
    starttls: bool = False
    caPath: str | None = None
    verify: bool = True
    timeoutSeconds: float = 10.0

    @property
    def enabled(self) -> bool:
        """
        Whether any backend is named: accounts then live on the backend.
        """
        return self.imapBackend is not None or self.smtpBackend is not None

    def withOptions(
        self, imapBackend: str | None = None, smtpBackend: str | None = None
    ) -> GatewayConfig:
        """
        This configuration with the command line's backends, which win over
        the file's.

        @raise ValueError: If an option's endpoint string is invalid.
        """
        changes: dict[str, Any] = {}
        if imapBackend:
            changes["imapBackend"] = parseBackendAddress(imapBackend)
        if smtpBackend:
            changes["smtpBackend"] = parseBackendAddress(smtpBackend)
        return evolve(self, **changes)


def parseGatewayConfig(config: Mapping[str, Any], source: object = None) -> GatewayConfig:
    """
    Check and read the C{[gateway]} table of a loaded configuration.

    @param config: The top-level table
        (L{clientid_twisted._configfile.loadConfig}).
    @param source: The file, for error messages.
    @raise ConfigError: Naming the file, the table and the key of the first
        problem.
    """
    table = ConfigTable("gateway", getTable(dict(config), "gateway", source), source)
    backends: dict[str, BackendAddress | None] = {}
    for key in ("imap_backend", "smtp_backend"):
        description = table.string(key, None)
        if not description:
            backends[key] = None
            continue
        try:
            backends[key] = parseBackendAddress(description)
        except ValueError as e:
            raise table.error(key, f"is invalid: {e}") from None
    starttls = table.boolean("backend_starttls", False)
    caPath = table.string("backend_ca", None) or None
    verify = table.boolean("backend_verify", True)
    timeout = table.seconds("backend_timeout_seconds", 10.0)
    table.finish()
    for key, address in backends.items():
        if address is not None and address.implicitTLS and starttls:
            raise table.error(
                "backend_starttls",
                f"cannot be used with the implicit TLS {key} {address.description!r}",
            )
    if caPath is not None and not verify:
        raise table.error("backend_ca", "is set but backend_verify = false ignores it")
    return GatewayConfig(
        imapBackend=backends["imap_backend"],
        smtpBackend=backends["smtp_backend"],
        starttls=starttls,
        caPath=caPath,
        verify=verify,
        timeoutSeconds=timeout,
    )
