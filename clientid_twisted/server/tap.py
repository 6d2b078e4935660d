# -*- test-case-name: tests.test_tap -*-
"""
C{twistd clientid-mail}: options and the service tree.

Everything lives under one data directory (C{--data-dir}): users, mail,
the development certificate, the installation key, and the optional
C{clientid.toml}.  Listening addresses are endpoint strings, repeatable, as
in C{twistd mail}.

With C{--workers N} above 1 the process becomes the parent of N workers
(L{clientid_twisted.server.workers}): it binds the SMTP and IMAP
listeners and serves the web site and the metrics; the workers, this same
plugin started with L{HANDOFF_VARIABLE
<clientid_twisted.server.workerprocess.HANDOFF_VARIABLE>} set, serve the
sessions.
"""

from __future__ import annotations

import os
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
from clientid_twisted.server.workerprocess import (
    SHAREABLE_ENDPOINTS,
    Handoff,
    adoptedEndpoint,
    endpointKind,
)

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
        self["workers"] = 1

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

    def opt_workers(self, value: str) -> None:
        """Serve SMTP and IMAP with this many worker processes sharing the listening sockets and the store, or auto for one per CPU; the parent process binds the ports and serves the web site and metrics (docs/running.md) [default: 1, one process]."""
        from clientid_twisted.server.workers import workerCount

        try:
            self["workers"] = workerCount(value)
        except ValueError:
            raise OptionError(f"--workers: {value!r} is not a number of processes from 1, or auto")

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

        from clientid_twisted import __version__

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
        if self["workers"] > 1:
            for name in DEFAULT_LISTENERS:
                for description in self[name]:
                    if endpointKind(description)[1] not in SHAREABLE_ENDPOINTS:
                        raise OptionError(
                            f"--{name} {description}: worker processes can share only "
                            "tcp:, tcp6:, unix: and systemd: listeners (optionally behind haproxy:)"
                        )


def makeService(options: Options) -> service.MultiService:
    """
    Build the service tree for C{twistd clientid-mail}: a single server,
    or with C{--workers} above 1 the parent of the workers, or (started by
    that parent) one worker.

    The listeners join the tree once the device policy has its identity
    key (L{assembleServer}'s L{Deferred <twisted.internet.defer.Deferred>}): at once for a local store, so
    they start with the tree as usual; for a shared store (Redis), once it
    has answered, and nothing listens before.
    """
    from clientid_twisted.server.assembly import assembleServer

    handoff = Handoff.fromEnvironment()
    parent = handoff is None and options["workers"] > 1
    top = service.MultiService()
    metrics: Any = None
    if handoff is not None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # The parent serves /metrics; this worker counts into the
            # shared directory.
            from clientid_twisted.server.metrics import ServerMetrics, metricsObserver

            metrics = ServerMetrics(multiprocess=True)
            metricsObserver(metrics).setServiceParent(top)
    elif options["metrics"] and not parent:
        from clientid_twisted.server.metrics import ServerMetrics

        metrics = ServerMetrics()
    if handoff is not None:
        webListener = handoff.webListener
    else:
        webListener = options["web"][0] if options["web"] else None
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
            webListener=webListener,
        )
    except (ValueError, OSError) as e:
        # An operator's mistake (a bad config, an unreadable file): say so
        # and stop, without a traceback.
        raise SystemExit(f"clientid-mail: {e}")
    owner = targetOwner(options)
    ownedPaths = _ownedPaths(Path(options["data-dir"]), options["store"])
    workersMetrics = None
    if parent and options["metrics"]:
        from clientid_twisted.server.metrics import WorkersMetrics

        workersMetrics = WorkersMetrics.inTemporaryDirectory()
        workersMetrics.service().setServiceParent(top)
        ownedPaths.append(workersMetrics.directory)
    if owner is not None:
        # twistd --uid/--gid: what start-up made as root goes to the user
        # the server is about to become (docs/running.md).
        dataDir = Path(options["data-dir"])
        handOver(ownedPaths, *owner)
        _log.info(
            "data directory {dataDir} given to uid {uid} gid {gid}",
            dataDir=str(dataDir), uid=owner[0], gid=owner[1],
        )
    if metrics is not None and handoff is None:
        from clientid_twisted.server.metrics import metricsService

        metricsService(metrics, options["metrics"]).setServiceParent(top)
        _log.info("metrics served at /metrics on {endpoint}", endpoint=options["metrics"])
    elif workersMetrics is not None:
        from clientid_twisted.server.metrics import metricsListener

        metricsListener(workersMetrics.registry, options["metrics"]).setServiceParent(top)
        _log.info(
            "metrics of the {count} workers (PROMETHEUS_MULTIPROC_DIR {directory}) served at "
            "/metrics on {endpoint}",
            count=options["workers"], directory=str(workersMetrics.directory), endpoint=options["metrics"],
        )
    if metrics is not None:
        assembled.addCallback(_watchConnections, metrics)
    if handoff is not None:
        assembled.addCallback(_serveWorker, top, handoff)
    elif parent:
        assembled.addCallback(_serveParent, top, options, workersMetrics)
    else:
        assembled.addCallback(_serve, top, options)
    failedNow: list[Failure] = []

    def failed(reason: Failure) -> None:
        if top.running:
            _log.failure("clientid-mail cannot serve", reason)
        else:
            failedNow.append(reason)

    assembled.addErrback(failed)
    if failedNow:
        if workersMetrics is not None:
            workersMetrics.remove()
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


def _mailFactories(server: MailServer) -> dict[str, Any]:
    """
    The factory of each mail listener option: TLS on connect wraps the
    factory, so it works the same on a bound and on an adopted port.
    """
    return {
        "smtp": server.smtpFactory,
        "smtps": TLSMemoryBIOFactory(server.tlsOptions, False, server.smtpFactory),
        "imap": server.imapFactory,
        "imaps": TLSMemoryBIOFactory(server.tlsOptions, False, server.imapFactory),
    }


def _serveCommon(server: MailServer, top: service.MultiService, relay: bool) -> None:
    """
    Add the store's service (and the relay's, if C{relay}) to C{top}:
    first, so stopped after the listeners.
    """
    # Before the listeners, so stopped after them: the store closes
    # (committing queued writes) once every listener and session is done.
    server.authentication.service.setServiceParent(top)
    if relay and server.relay is not None:
        # Before the listeners, so stopped after them: a message accepted
        # while sessions wind down is queued, and sent at the next start.
        server.relay.setServiceParent(top)


def _drainOnStop(server: MailServer, top: service.MultiService) -> None:
    if server.limiter is not None:
        from clientid_twisted.server.shutdown import GracefulShutdownService

        # Added last, so stopped first: connections are refused while the
        # ports close, then sessions wind down (docs/limits.md).
        GracefulShutdownService(server.limiter).setServiceParent(top)


def _serve(server: MailServer, top: service.MultiService, options: Options) -> None:
    """
    Add the store's service and the listeners of C{server} to C{top}.
    """
    _serveCommon(server, top, relay=True)
    factories = _mailFactories(server)
    if server.webSite is not None:
        factories["web"] = TLSMemoryBIOFactory(server.tlsOptions, False, server.webSite)
    for name, factory in factories.items():
        for description in options[name]:
            _listen(top, description, factory, name)
    _drainOnStop(server, top)


def _serveWorker(server: MailServer, top: service.MultiService, handoff: Handoff) -> None:
    """
    One worker: the mail listeners on the sockets the parent bound; the
    relay queue is sent, the web site served, by the parent.
    """
    from twisted.internet import reactor

    from clientid_twisted.server.listening import endpointListener
    from clientid_twisted.server.workerprocess import watchParent

    _serveCommon(server, top, relay=False)
    factories = _mailFactories(server)
    for inherited in handoff.listeners:
        listener = endpointListener(adoptedEndpoint(reactor, inherited), factories[inherited.name])
        listener.setName(f"{inherited.name} {inherited.description}")
        listener.setServiceParent(top)
    _drainOnStop(server, top)
    watchParent(reactor)
    _log.info("worker {index} serving", index=handoff.index)


def _serveParent(
    server: MailServer, top: service.MultiService, options: Options, workersMetrics: Any
) -> None:
    """
    The parent of the workers: the store (its key resolved before any
    worker starts), the relay, the web site, the mail listeners bound and
    handed to the workers, and the workers.
    """
    from twisted.internet import reactor

    from clientid_twisted.server.workers import HandedOverListener, WorkerPool, workerCommand

    url = options["store"] or server.authentication.config.store.url or ""
    if url.startswith("memory:"):
        raise ValueError(
            f"--workers {options['workers']}: the memory: store lives in one process and cannot "
            "be shared by workers; use a sqlite: or redis: store, or --workers 1"
        )
    _serveCommon(server, top, relay=True)
    if workersMetrics is not None and server.relay is not None:
        workersMetrics.relayQueueLength(server.relay.queueLength)
    if server.webSite is not None:
        site = TLSMemoryBIOFactory(server.tlsOptions, False, server.webSite)
        for description in options["web"]:
            _listen(top, description, site, "web")
    bound: list[tuple[HandedOverListener, str]] = []
    for name in DEFAULT_LISTENERS:
        for description in options[name]:
            listener = HandedOverListener(endpoints.serverFromString(reactor, description), name)
            listener.setName(f"{name} {description}")
            listener.setServiceParent(top)
            bound.append((listener, description))
            _log.info("{protocol} listening on {endpoint} for the workers", protocol=name, endpoint=description)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    if workersMetrics is not None:
        environ["PROMETHEUS_MULTIPROC_DIR"] = str(workersMetrics.directory)
    arguments = _workerArguments(options)
    webListener = options["web"][0] if options["web"] else None
    # Added last, so stopped first: the workers wind down their sessions
    # before the parent closes the ports and the store.
    WorkerPool(
        options["workers"],
        lambda index: workerCommand(index, bound, arguments, webListener, environ),
        reactor=reactor,
        grace=server.limits.shutdownGrace,
        onExit=workersMetrics.workerEnded if workersMetrics is not None else None,
    ).setServiceParent(top)


def _workerArguments(options: Options) -> list[str]:
    """
    The options a worker gets: the parent's, paths made absolute; no
    listeners (a worker adopts the parent's sockets) and no metrics or web
    (the parent serves them).
    """
    arguments: list[str] = []
    for name in ("data-dir", "config", "certificate", "private-key", "hostname", "store",
                 "imap-backend", "smtp-backend"):
        value = options[name]
        if value is None:
            continue
        if name in ("data-dir", "config", "certificate", "private-key"):
            value = os.path.abspath(value)
        arguments += [f"--{name}", value]
    return arguments


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
