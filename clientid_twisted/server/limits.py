# -*- test-case-name: tests.test_limits -*-
"""
The server's resource limits: the C{[server]} table of C{clientid.toml}.

A mail frontend faces scanners, slow clients and password guessers; every
limit here bounds what one client (or one address) can hold: time, memory,
connections, mistakes.  The defaults are safe for the open internet; see
docs/limits.md for each one's reason.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from attrs import frozen

from clientid_twisted.server.config import ConfigError

__all__ = ["ServerLimits", "SERVER_KEYS"]


def _seconds(value: float) -> bool:
    return value > 0


def _count(value: int) -> bool:
    return value >= 1


@frozen
class ServerLimits:
    """
    Limits for one server process, shared by its SMTP and IMAP listeners.

    Times are in seconds, sizes in octets.

    @ivar idleTimeout: Idle time before a session is closed (RFC 5321's
        five minutes); for IMAP before login.
    @ivar imapIdleTimeout: Idle time of a logged-in IMAP session (RFC 9051's
        30-minute autologout; IDLE clients re-issue within 29 minutes).
    @ivar initialTimeout: Idle time before the first command and while the
        connection is not encrypted: short, since nothing useful happens
        there.
    @ivar tlsHandshakeTimeout: Time to complete a TLS handshake.
    @ivar commandTimeout: Time to complete one command line once its first
        byte has arrived, however many bytes trickle in (slowloris).
    @ivar dataTimeout: Time to transfer one SMTP DATA body or one IMAP
        literal, from its start to its end.
    @ivar maxConnections: Concurrent connections, all listeners together.
    @ivar maxConnectionsPerAddress: Concurrent connections from one IPv4
        address or one IPv6 /64.
    @ivar maxTLSHandshakes: TLS handshakes in progress, all together.
    @ivar maxTLSHandshakesPerAddress: TLS handshakes in progress from one
        address.
    @ivar maxMessageBytes: Largest SMTP message (listed as C{SIZE}).
    @ivar maxRecipients: Recipients of one SMTP message; more get C{452
        4.5.3} (RFC 5321 section 4.5.3.1.10 asks for at least 100).
    @ivar maxLiteralBytes: Largest IMAP literal (listed as C{APPENDLIMIT}).
    @ivar imapMaxLineBytes: Longest IMAP command line, without literals.
    @ivar maxErrorsPerSession: Errors (unknown commands, syntax errors,
        malformed CLIENTID, failed logins) a session may make; the next one
        ends it.
    @ivar authFailureDelay: Delay before a failed login is answered.
    @ivar shutdownGrace: Time a stopping server lets sessions in DATA or
        FETCH finish before it cuts them.
    @ivar senderLoginMatch: Not a limit: whether C{MAIL FROM} must be an
        address the authenticated user owns (Postfix's
        C{reject_sender_login_mismatch}).
    """

    idleTimeout: float = 300
    imapIdleTimeout: float = 1800
    initialTimeout: float = 60
    tlsHandshakeTimeout: float = 30
    commandTimeout: float = 30
    dataTimeout: float = 600
    maxConnections: int = 2000
    maxConnectionsPerAddress: int = 50
    maxTLSHandshakes: int = 500
    maxTLSHandshakesPerAddress: int = 20
    maxMessageBytes: int = 36700160
    maxRecipients: int = 100
    maxLiteralBytes: int = 36700160
    imapMaxLineBytes: int = 65536
    maxErrorsPerSession: int = 20
    authFailureDelay: float = 2
    shutdownGrace: float = 30
    senderLoginMatch: bool = True

    @classmethod
    def fromConfig(
        cls, table: Mapping[str, Any], source: object = None
    ) -> ServerLimits:
        """
        Read the limits from the C{[server]} table; keys left out keep their
        defaults.

        @param source: The file, for error messages.
        @raise ConfigError: For an unknown key, or a value of the wrong type
            or out of range; the message names the key.
        """
        where = f"{source}: " if source is not None else ""
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key in _OTHER_KEYS:
                _OTHER_KEYS[key](where, key, value)
                continue
            spec = _KEYS.get(key)
            if spec is None:
                known = ", ".join(sorted(SERVER_KEYS))
                raise ConfigError(
                    f"{where}[server] {key}: unknown key (known keys: {known})"
                )
            attribute, kind, check, rule = spec
            if not _isKind(value, kind) or not check(value):
                raise ConfigError(
                    f"{where}[server] {key}: expected {rule}, got {value!r}"
                )
            values[attribute] = value
        return cls(**values)


def _isKind(value: object, kind: type) -> bool:
    # TOML booleans are Python ints; never take one for a number.
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _checkHostname(where: str, key: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}[server] {key}: expected a non-empty string, got {value!r}")


_POSITIVE_SECONDS = (float, _seconds, "a number of seconds greater than 0")
_COUNT = (int, _count, "an integer of at least 1")

_KEYS: dict[str, tuple[str, type, Callable[[Any], bool], str]] = {
    "idle_timeout_seconds": ("idleTimeout", *_POSITIVE_SECONDS),
    "imap_idle_timeout_seconds": ("imapIdleTimeout", *_POSITIVE_SECONDS),
    "initial_timeout_seconds": ("initialTimeout", *_POSITIVE_SECONDS),
    "tls_handshake_timeout_seconds": ("tlsHandshakeTimeout", *_POSITIVE_SECONDS),
    "command_timeout_seconds": ("commandTimeout", *_POSITIVE_SECONDS),
    "data_timeout_seconds": ("dataTimeout", *_POSITIVE_SECONDS),
    "max_connections": ("maxConnections", *_COUNT),
    "max_connections_per_address": ("maxConnectionsPerAddress", *_COUNT),
    "max_tls_handshakes": ("maxTLSHandshakes", *_COUNT),
    "max_tls_handshakes_per_address": ("maxTLSHandshakesPerAddress", *_COUNT),
    "max_message_bytes": (
        "maxMessageBytes", int, lambda v: v >= 1024, "an integer of at least 1024"
    ),
    "max_recipients": ("maxRecipients", *_COUNT),
    "max_literal_bytes": (
        "maxLiteralBytes", int, lambda v: v >= 1024, "an integer of at least 1024"
    ),
    "imap_max_line_bytes": (
        "imapMaxLineBytes",
        int,
        # RFC 9051 section 4: clients may send lines of 8192 octets.
        lambda v: v >= 8192,
        "an integer of at least 8192",
    ),
    "max_errors_per_session": ("maxErrorsPerSession", *_COUNT),
    "auth_failure_delay_seconds": (
        "authFailureDelay", float, lambda v: 0 <= v <= 60, "a number of seconds from 0 to 60"
    ),
    "sender_login_match": ("senderLoginMatch", bool, lambda v: True, "true or false"),
    "shutdown_grace_seconds": (
        "shutdownGrace", float, lambda v: v >= 0, "a number of seconds, 0 or more"
    ),
}

_OTHER_KEYS: dict[str, Callable[[str, str, Any], None]] = {
    # Read by assembleServer; checked here so [server] has one list of keys.
    "hostname": _checkHostname,
}

SERVER_KEYS = frozenset(_KEYS) | frozenset(_OTHER_KEYS)
"""Every key the C{[server]} table may hold."""
