# -*- test-case-name: tests.test_tap -*-
"""
C{twistd clientid-mail}: options and the service tree.

Everything lives under one data directory (C{--data-dir}): users, mail,
the development certificate, the installation key, and the optional
C{clientid.toml}.  Listening addresses are endpoint strings, repeatable, as
in C{twistd mail}.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from clientid_twisted.server.assembly import MailServer

from clientid_twisted.server.listening import handOver, targetOwner

__all__ = ["Options", "OptionError", "makeService", "DEFAULT_LISTENERS"]

_log = Logger()

DEFAULT_LISTENERS = {
    "smtp": ["tcp:8587:interface=127.0.0.1"],
    "smtps": ["tcp:8465:interface=127.0.0.1"],
    "imap": ["tcp:8143:interface=127.0.0.1"],
    "imaps": ["tcp:8993:interface=127.0.0.1"],
}
"""Where each protocol listens when no listener option is given: loopback
only, unprivileged ports."""

DEFAULT_WEB_LISTENER = "tcp:8443:interface=127.0.0.1"
"""Where the self-service site listens when no listener option is given."""

class OptionError(SystemExit):
    """
    A bad option value (an endpoint string), reported in one line: twistd
    prints its whole usage text before a L{usage.UsageError}, which buries
    the one line that matters.
    """

    def __init__(self, message: str) -> None:
        SystemExit.__init__(self, f"clientid-mail: {message}")


class _ValidatingReactor:
    """
    Stands in for the reactor while endpoint strings are checked at option
    time: parsing them must not install the real reactor before twistd
    picks one.
    """


class Options(usage.Options):
    """
    Command line of C{twistd clientid-mail}.
    """

    synopsis = "[options]"
    longdesc = (
        "An SMTP submission and IMAP server with the CLIENTID extension, on embedded "
        "defaults: a self-signed development certificate, users and "
        "mailboxes under --data-dir, loopback addresses only."
    )

    optParameters = [
        ["data-dir", "d", "clientid-data", "Directory holding users, mail, keys and the config."],
        ["config", "c", None, "TOML configuration file [default: DATA_DIR/clientid.toml, if present]."],
        ["certificate", None, None, "PEM certificate (chain) for TLS [default: a self-signed one in DATA_DIR/tls]."],
        ["private-key", None, None, "PEM private key matching --certificate."],
        ["hostname", None, None, "Name the server greets with [default: [server] hostname, else localhost]."],
        ["store", None, None, "CLIENTID device store URL: sqlite:///path, sqlite:relative, redis://[:password@]host:port/db, rediss://... (TLS), redis+sentinel://... (docs/frontends.md), memory: [default: [store] url, else DATA_DIR/clientid.sqlite3]."],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        for name in DEFAULT_LISTENERS:
            self[name] = []
        self["web"] = []
        self["metrics"] = None
        self["imap-backend"] = None
        self["smtp-backend"] = None

    def _addListener(self, name: str, description: str) -> None:
        try:
            endpoints.serverFromString(_ValidatingReactor(), description)
        except (ValueError, TypeError, KeyError) as e:
            raise OptionError(f"--{name}: invalid endpoint {description!r}: {e}")
        self[name].append(description)

    def opt_smtp(self, description: str) -> None:
        """Listen for SMTP submission with STARTTLS on this endpoint, e.g. tcp:587 (repeatable) [default: tcp:8587:interface=127.0.0.1]."""
        self._addListener("smtp", description)

    def opt_smtps(self, description: str) -> None:
        """Listen for SMTP submission over implicit TLS on this endpoint, e.g. tcp:465; the server adds the TLS layer (repeatable) [default: tcp:8465:interface=127.0.0.1]."""
        self._addListener("smtps", description)

    def opt_imap(self, description: str) -> None:
        """Listen for IMAP with STARTTLS on this endpoint, e.g. tcp:143 (repeatable) [default: tcp:8143:interface=127.0.0.1]."""
        self._addListener("imap", description)

    def opt_imaps(self, description: str) -> None:
        """Listen for IMAP over implicit TLS on this endpoint, e.g. tcp:993; the server adds the TLS layer (repeatable) [default: tcp:8993:interface=127.0.0.1]."""
        self._addListener("imaps", description)

    def opt_web(self, description: str) -> None:
        """Serve the owners' self-service site (approve or revoke their devices, docs/selfservice.md) over TLS on this endpoint, e.g. tcp:8443 (repeatable) [default: tcp:8443:interface=127.0.0.1 when no listener option is given, else off]."""
        self._addListener("web", description)

    def opt_metrics(self, description: str) -> None:
        """Serve Prometheus counters at /metrics on this endpoint, e.g. tcp:9108 or just 9108; loopback unless the endpoint names an interface [default: off]."""
        self["metrics"] = loopbackEndpoint(description)
        try:
            endpoints.serverFromString(_ValidatingReactor(), self["metrics"])
        except (ValueError, TypeError, KeyError) as e:
            raise OptionError(f"--metrics: invalid endpoint {description!r}: {e}")

    def _setBackend(self, name: str, description: str) -> None:
        from clientid_twisted.gateway.config import parseBackendAddress

        try:
            parseBackendAddress(description)
        except ValueError as e:
            raise OptionError(f"--{name}: invalid endpoint: {e}")
        self[name] = description

    def opt_imap_backend(self, description: str) -> None:
        """Gateway mode: check IMAP logins against, and relay sessions to, this IMAP server, a client endpoint such as tcp:host=127.0.0.1:port=143 or tls:mail.example.net:993 [default: [gateway] imap_backend, else the built-in server] (docs/gateway.md)."""
        self._setBackend("imap-backend", description)

    def opt_smtp_backend(self, description: str) -> None:
        """Gateway mode: check SMTP logins against, and relay submissions to, this submission server, e.g. tcp:host=127.0.0.1:port=587 [default: [gateway] smtp_backend, else the built-in server] (docs/gateway.md)."""
        self._setBackend("smtp-backend", description)

    def opt_version(self) -> None:
        """Print clientid-twisted's version (and Twisted's) and exit."""
        import twisted

        from clientid_twisted._version import __version__

        print(f"clientid-mail (clientid-twisted) {__version__}")
        print(f"Twisted {twisted.__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        if bool(self["certificate"]) != bool(self["private-key"]):
            raise usage.UsageError("--certificate and --private-key go together")
        if not any(self[name] for name in (*DEFAULT_LISTENERS, "web")):
            for name, descriptions in DEFAULT_LISTENERS.items():
                self[name] = list(descriptions)
            self["web"] = [DEFAULT_WEB_LISTENER]


def makeService(options: Options) -> service.MultiService:
    """
    Build the service tree for C{twistd clientid-mail}.

    The listeners join the tree once the device policy has its identity
    key (L{assembleServer}'s L{Deferred <twisted.internet.defer.Deferred>}): at once for a local store, so
    they start with the tree as usual; for a shared store (Redis), once it
    has answered, and nothing listens before.
    """
    from clientid_twisted.server.assembly import assembleServer

    metrics = None
    if options["metrics"]:
        from clientid_twisted.server.metrics import ServerMetrics

        metrics = ServerMetrics()
    top = service.MultiService()
    try:
        assembled = assembleServer(
            dataDir=Path(options["data-dir"]),
            configPath=Path(options["config"]) if options["config"] else None,
            certificatePath=options["certificate"],
            keyPath=options["private-key"],
            hostname=options["hostname"],
            storeURL=options["store"],
            metrics=metrics,
            imapBackend=options["imap-backend"],
            smtpBackend=options["smtp-backend"],
            webListener=options["web"][0] if options["web"] else None,
        )
    except (ValueError, OSError) as e:
        # An operator's mistake (a bad config, an unreadable file): say so
        # and stop, without a traceback.
        raise SystemExit(f"clientid-mail: {e}")
    owner = targetOwner(options)
    if owner is not None:
        # twistd --uid/--gid: what start-up made as root goes to the user
        # the server is about to become (docs/running.md).
        dataDir = Path(options["data-dir"])
        handOver(_ownedPaths(dataDir, options["store"]), *owner)
        _log.info(
            "data directory {dataDir} given to uid {uid} gid {gid}",
            dataDir=str(dataDir), uid=owner[0], gid=owner[1],
        )
    if metrics is not None:
        from clientid_twisted.server.metrics import metricsService

        metricsService(metrics, options["metrics"]).setServiceParent(top)
        _log.info("metrics served at /metrics on {endpoint}", endpoint=options["metrics"])
        assembled.addCallback(_watchConnections, metrics)
    assembled.addCallback(_serve, top, options)
    failedNow: list[Failure] = []

    def failed(reason: Failure) -> None:
        if top.running:
            _log.failure("clientid-mail cannot serve", reason)
        else:
            failedNow.append(reason)

    assembled.addErrback(failed)
    if failedNow:
        failedNow[0].trap(ValueError, OSError)
        raise SystemExit(f"clientid-mail: {failedNow[0].value}")
    if not assembled.called:
        _log.info("waiting for the CLIENTID store's identity key before listening")
    return top


def _watchConnections(server: MailServer, metrics: Any) -> MailServer:
    """
    Have the metrics count C{server}'s open connections.
    """
    if server.limiter is not None:
        metrics.watchConnections(server.limiter)
    return server


def _serve(server: MailServer, top: service.MultiService, options: Options) -> None:
    """
    Add the store's service and the listeners of C{server} to C{top}.
    """
    # Before the listeners, so stopped after them: the store closes
    # (committing queued writes) once every listener and session is done.
    server.authentication.service.setServiceParent(top)
    if server.relay is not None:
        # Before the listeners, so stopped after them: a message accepted
        # while sessions wind down is queued, and sent at the next start.
        server.relay.setServiceParent(top)
    factories = {
        "smtp": server.smtpFactory,
        "smtps": TLSMemoryBIOFactory(server.tlsOptions, False, server.smtpFactory),
        "imap": server.imapFactory,
        "imaps": TLSMemoryBIOFactory(server.tlsOptions, False, server.imapFactory),
    }
    if server.webSite is not None:
        factories["web"] = TLSMemoryBIOFactory(server.tlsOptions, False, server.webSite)
    for name, factory in factories.items():
        for description in options[name]:
            _listen(top, description, factory, name)
    if server.limiter is not None:
        from clientid_twisted.server.shutdown import GracefulShutdownService

        # Added last, so stopped first: connections are refused while the
        # ports close, then sessions wind down (docs/limits.md).
        GracefulShutdownService(server.limiter).setServiceParent(top)


def _ownedPaths(dataDir: Path, storeURL: str | None) -> list[Path]:
    """
    The data directory, and a SQLite store named outside it (with its
    journal files).
    """
    paths = [dataDir]
    if storeURL and storeURL.startswith("sqlite:"):
        from clientid_twisted.store import sqlitePath

        store = sqlitePath(storeURL, dataDir)
        paths += [store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")]
    return paths


def loopbackEndpoint(description: str) -> str:
    """
    A TCP endpoint on loopback unless it names an interface: C{"9108"} and
    C{"tcp:9108"} become C{"tcp:9108:interface=127.0.0.1"}; anything else
    is kept as given.
    """
    if description.isdigit():
        description = "tcp:" + description
    parts = description.split(":")
    if parts[0] == "tcp" and not any(p.startswith("interface=") for p in parts[1:]):
        description += ":interface=127.0.0.1"
    return description


def _listen(parent: service.MultiService, description: str, factory: Any, name: str) -> None:
    from clientid_twisted.server.listening import listener as makeListener

    listener = makeListener(description, factory)
    listener.setName(f"{name} {description}")
    listener.setServiceParent(parent)
    _log.info("{protocol} listening on {endpoint}", protocol=name, endpoint=description)
