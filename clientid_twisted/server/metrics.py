# -*- test-case-name: tests.test_metrics -*-
"""
Counters for C{twistd clientid-mail --metrics ENDPOINT}, served in the
Prometheus text format by C{prometheus_client} on a private registry.

Most counts come from the structured events the protocols and the policy
already log (C{clientIDEvent}, C{authEvent}, C{policyEvent}, C{alertKind},
C{storeEvent}), read by a log observer, so nothing in the protocols changes.
Locks and store errors are counted where they happen, by L{CountingStore}
around the CLIENTID store.

Labels never carry an account, a token, a fingerprint or an address: only
protocol names and fixed words (outcomes, reasons, alert and lock kinds),
as snake_case identifiers (C{no_ehlo_since_tls}, C{token_locked}), so a
query never needs quoting tricks.

Besides the counters: gauges for the open connections (by protocol and
TLS state, read from the connection limiter at each scrape) and for the
store's health, histograms of the login decision time (L{TimedChecker}
around the portal's checker) and of each store call, and
C{clientid_build_info}.  C{prometheus_client}'s own Twisted resource
serves them, so a scraper that asks for OpenMetrics gets it.

With C{--workers}, each worker counts in C{prometheus_client}'s
multiprocess mode (L{ServerMetrics} with C{multiprocess=True}: values in
files under the parent's private C{PROMETHEUS_MULTIPROC_DIR}); the
parent serves their sum (L{WorkersMetrics}), forgetting a dead worker's
gauges and keeping its counts.  A custom collector cannot be shared
between processes, so there a worker sets its connection gauge every
second instead of at each scrape.
"""

from __future__ import annotations

import platform
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from zope.interface import implementer

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web import resource, server

import twisted
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from twisted.cred.checkers import ICredentialsChecker

from clientid_twisted import __version__

from clientid_twisted.server.listening import listener as makeListener
from clientid_twisted.interfaces import IClientIDStore
from clientid_twisted.store import UnknownDevice

__all__ = [
    "ServerMetrics",
    "WorkersMetrics",
    "CountingStore",
    "TimedChecker",
    "metricsService",
    "metricsListener",
    "metricsObserver",
]

_PROTOCOLS = frozenset({"smtp", "imap"})
_LOCK_KINDS = frozenset(
    {"token_locked", "token_revoked", "account_closed", "address_locked", "under_attack"}
)
_MAX_LABEL = 64

_DECISION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds: a password hash (scrypt, about 0.05-0.1 s) plus the policy."""

_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Seconds: SQLite answers in a fraction of a millisecond, Redis in one
round trip; the top buckets are an outage's timeouts."""


def snakeCase(value: str) -> str:
    """
    C{value} as a snake_case identifier: C{"no EHLO since TLS"} becomes
    C{"no_ehlo_since_tls"}, C{"token-locked"} C{"token_locked"},
    C{"loadState"} C{"load_state"}.
    """
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", value)
    return re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_") or "other"


def _label(value: object, known: Iterable[str] | None = None) -> str:
    """
    A label value, in snake_case: C{known} words as they are, anything else
    C{"other"}.  With no C{known} set, free text the code itself writes
    (reasons), shortened.
    """
    if not isinstance(value, str) or not value:
        return "none" if value is None else "other"
    label = snakeCase(value)
    if known is not None:
        return label if label in known else "other"
    return label[:_MAX_LABEL]


class ServerMetrics:
    """
    The server's counters, on a registry of their own (so tests and several
    servers in one process do not share counts).

    @ivar registry: What the C{/metrics} resource serves.
    @ivar multiprocess: A worker's metrics, whose values go to the files
        of C{PROMETHEUS_MULTIPROC_DIR} and are served by the parent
        (L{WorkersMetrics}): no build info or relay queue (the parent's),
        connections as a gauge set by L{refresh}.
    """

    def __init__(self, registry: CollectorRegistry | None = None, multiprocess: bool = False) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess
        self._limiter: Any = None
        r = self.registry
        self.commands = Counter(
            "clientid_commands",
            "CLIENTID commands by protocol, outcome (accepted, refused) and reason for a refusal.",
            ["protocol", "outcome", "reason"],
            registry=r,
        )
        self.logins = Counter(
            "clientid_logins",
            "Logins (AUTH, LOGIN, AUTHENTICATE) by protocol and result "
            "(succeeded, failed, tempfail, error).",
            ["protocol", "result"],
            registry=r,
        )
        self.refusals = Counter(
            "clientid_policy_refusals",
            "Logins the device policy refused, by protocol, reason, and whether the "
            "password was right.",
            ["protocol", "reason", "password"],
            registry=r,
        )
        self.locks = Counter(
            "clientid_locks",
            "Locks the policy set, by kind (token-locked, account-closed, address-locked, "
            "under-attack).",
            ["kind"],
            registry=r,
        )
        self.alerts = Counter("clientid_alerts", "Alerts raised, by kind.", ["kind"], registry=r)
        self.storeErrors = Counter(
            "clientid_store_errors",
            "CLIENTID store operations that failed (or timed out), by operation.",
            ["operation"],
            registry=r,
        )
        self.storeOutages = Counter(
            "clientid_store_outages", "Times the CLIENTID store became unavailable.", registry=r
        )
        self.storeUp = Gauge(
            "clientid_store_up",
            "1 while the CLIENTID store answers, 0 during an outage (logins get a temporary failure).",
            registry=r,
            # Workers: 0 when any live worker sees the store down.
            multiprocess_mode="livemin",
        )
        self.storeUp.set(1)
        self.loginDecision = Histogram(
            "clientid_login_decision_seconds",
            "Time to decide a login (password check and device policy), by protocol; "
            "the failure delay is not included.",
            ["protocol"],
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.storeCall = Histogram(
            "clientid_store_call_seconds",
            "Time of each CLIENTID store call, by operation.",
            ["operation"],
            buckets=_STORE_BUCKETS,
            registry=r,
        )
        if multiprocess:
            self.connections = Gauge(
                "clientid_connections",
                _CONNECTIONS_HELP,
                ["protocol", "tls"],
                registry=r,
                multiprocess_mode="livesum",
            )
        else:
            self.relayQueue = _processMetrics(r)

    def refresh(self) -> None:
        """
        A worker's gauges that are read, not counted: the open
        connections, set from the limiter (every second, L{metricsObserver}).
        """
        if self._limiter is not None:
            for (protocol, tls), count in _connectionCounts(self._limiter).items():
                self.connections.labels(protocol, tls).set(count)

    def watchConnections(self, limiter: Any) -> None:
        """
        Report the open connections of C{limiter} (a
        L{ConnectionLimiter <clientid_twisted.server.connections.ConnectionLimiter>}),
        by protocol and TLS state, read at each scrape (each second for a
        worker, L{refresh}).
        """
        if self.multiprocess:
            self._limiter = limiter
            self.refresh()
        else:
            self.registry.register(_ConnectionCollector(limiter))

    def relayQueueLength(self, length: Callable[[], int]) -> None:
        """
        Report the relay queue's length, read from C{length} at each scrape
        (not in a worker: the parent sends the queue and reports it).
        """
        if not self.multiprocess:
            self.relayQueue.set_function(length)

    # -- the log observer -----------------------------------------------------

    def observe(self, event: LogEvent) -> None:
        """
        Count one log event (an L{ILogObserver <twisted.logger.ILogObserver>}); never raises.
        """
        try:
            self._observe(event)
        except Exception:  # pragma: no cover (never let logging fail)
            pass

    def _observe(self, event: LogEvent) -> None:
        protocol = _label(event.get("protocol"), _PROTOCOLS)
        if "clientIDEvent" in event:
            outcome = _label(event["clientIDEvent"], ("accepted", "refused"))
            reason = _label(event.get("reason")) if outcome == "refused" else ""
            self.commands.labels(protocol, outcome, reason).inc()
        # (A login's event also reports the CLIENTID it was the first to use.)
        if "authEvent" in event:
            result = _label(event["authEvent"], ("succeeded", "failed", "tempfail", "error"))
            self.logins.labels(protocol, result).inc()
        elif event.get("policyEvent") == "refused":
            password = "right" if event.get("passwordAccepted") else "wrong"
            self.refusals.labels(protocol, _label(event.get("reason")), password).inc()
        elif "alertKind" in event:
            self.alerts.labels(_label(event["alertKind"])).inc()
        elif event.get("storeEvent") == "down":
            self.storeOutages.inc()
            self.storeUp.set(0)
        elif event.get("storeEvent") == "up":
            self.storeUp.set(1)

    # -- the store ------------------------------------------------------------

    def lockSet(self, key: str) -> None:
        self.locks.labels(_label(key.partition(":")[0], _LOCK_KINDS)).inc()

    def storeFailed(self, operation: str) -> None:
        self.storeErrors.labels(snakeCase(operation)).inc()

    def storeCallTook(self, operation: str, seconds: float) -> None:
        self.storeCall.labels(snakeCase(operation)).observe(seconds)

    def timedChecker(self, checker: Any) -> "TimedChecker":
        """
        Wrap the portal's checker so each login's decision time is
        recorded.
        """
        return TimedChecker(checker, self)

    def countingStore(self, store: IClientIDStore) -> "CountingStore":
        """
        Wrap the CLIENTID store so its locks and errors are counted.
        """
        return CountingStore(store, self)

    # -- exposition -------------------------------------------------------------

    def scrape(self) -> bytes:
        """
        The Prometheus text format of every counter.
        """
        return generate_latest(self.registry)  # type: ignore[no-any-return]


@implementer(IClientIDStore)
class CountingStore:
    """
    An L{IClientIDStore} that passes every call to C{store} and counts the
    locks it reports newly set and the calls that fail.
    """

    def __init__(self, store: IClientIDStore, metrics: ServerMetrics) -> None:
        self.store = store
        self.metrics = metrics

    def __getattr__(self, name: str) -> Any:
        # Backend extras (a Redis store's connection state, ...).
        return getattr(self.store, name)

    def _call(self, operation: str, method: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        d = defer.maybeDeferred(method, *args)

        def took(result: Any) -> Any:
            self.metrics.storeCallTook(operation, time.perf_counter() - started)
            return result

        def failed(reason: Failure) -> Failure:
            # A caller's mistake (no such device) is not a store failure.
            if not reason.check(UnknownDevice):
                self.metrics.storeFailed(operation)
            return reason

        return d.addBoth(took).addErrback(failed)

    def identityKey(self, candidate: bytes | None) -> Any:
        return self._call("identityKey", self.store.identityKey, candidate)

    def loadState(self, query: Any) -> Any:
        return self._call("loadState", self.store.loadState, query)

    def recordOutcome(self, record: Any) -> Any:
        def counted(result: Any) -> Any:
            for key in getattr(result, "locked", ()):
                self.metrics.lockSet(key)
            return result

        return self._call("recordOutcome", self.store.recordOutcome, record).addCallback(counted)

    def listDevices(self, account: str) -> Any:
        return self._call("listDevices", self.store.listDevices, account)

    def setDeviceState(
        self, account: str, digest: str, typeName: str, fingerprint: str, state: str, event: Any
    ) -> Any:
        return self._call(
            "setDeviceState",
            self.store.setDeviceState,
            account,
            digest,
            typeName,
            fingerprint,
            state,
            event,
        )

    def renameDevice(self, account: str, digest: str, name: str | None, event: Any) -> Any:
        return self._call("renameDevice", self.store.renameDevice, account, digest, name, event)

    def keepMessage(self, account: str, message: bytes, limit: int, seconds: float) -> Any:
        return self._call("keepMessage", self.store.keepMessage, account, message, limit, seconds)

    def takeMessages(self, account: str) -> Any:
        return self._call("takeMessages", self.store.takeMessages, account)

    def forgetDevices(self, account: str, event: Any) -> Any:
        return self._call("forgetDevices", self.store.forgetDevices, account, event)

    def setLock(self, key: str, seconds: float | None, event: Any) -> Any:
        def counted(result: Any) -> Any:
            self.metrics.lockSet(key)
            return result

        return self._call("setLock", self.store.setLock, key, seconds, event).addCallback(counted)

    def clearKeys(self, keys: Any, event: Any) -> Any:
        return self._call("clearKeys", self.store.clearKeys, keys, event)

    def activeLocks(self, keys: Any) -> Any:
        return self._call("activeLocks", self.store.activeLocks, keys)

    def listEvents(self, account: str | None, limit: int) -> Any:
        return self._call("listEvents", self.store.listEvents, account, limit)

    def close(self) -> Any:
        return self._call("close", self.store.close)


@implementer(ICredentialsChecker)
class TimedChecker:
    """
    An L{ICredentialsChecker} that passes every login to C{checker} and
    records how long its decision took, by protocol.
    """

    def __init__(self, checker: Any, metrics: ServerMetrics) -> None:
        self.checker = checker
        self.metrics = metrics
        self.credentialInterfaces = tuple(checker.credentialInterfaces)

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[Any]:
        started = time.perf_counter()
        protocol = _label(getattr(credentials, "protocolName", None), _PROTOCOLS)

        def took(result: Any) -> Any:
            self.metrics.loginDecision.labels(protocol).observe(time.perf_counter() - started)
            return result

        return defer.maybeDeferred(self.checker.requestAvatarId, credentials).addBoth(took)


class _ConnectionCollector:
    """
    C{clientid_connections}: the limiter's open sessions by protocol and
    TLS state, counted when scraped.
    """

    def __init__(self, limiter: Any) -> None:
        self.limiter = limiter

    def describe(self) -> list[Any]:
        return [self._family()]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily("clientid_connections", _CONNECTIONS_HELP, labels=["protocol", "tls"])

    def collect(self) -> Iterable[Any]:
        family = self._family()
        for (protocol, tls), count in _connectionCounts(self.limiter).items():
            family.add_metric([protocol, tls], count)
        yield family


_CONNECTIONS_HELP = "Open SMTP and IMAP connections, by protocol and whether TLS is up."


def _connectionCounts(limiter: Any) -> dict[tuple[str, str], int]:
    """
    The open sessions of C{limiter} by protocol and TLS state.
    """
    counts = {(protocol, tls): 0 for protocol in sorted(_PROTOCOLS) for tls in ("yes", "no")}
    for session in limiter.sessions():
        protocol = _label(getattr(session, "protocolName", None), _PROTOCOLS)
        encrypted = getattr(session, "isEncrypted", lambda: False)()
        key = (protocol, "yes" if encrypted else "no")
        counts[key] = counts.get(key, 0) + 1
    return counts


def _processMetrics(registry: CollectorRegistry) -> Gauge:
    """
    The metrics one process has for the whole server (the single server,
    or the parent of the workers): C{clientid_build_info}, and the relay
    queue's length, returned.
    """
    Info("clientid_build", "The running version of clientid-twisted and what it runs on.", registry=registry).info(
        {"version": __version__, "twisted": twisted.__version__, "python": platform.python_version()}
    )
    return Gauge(
        "clientid_relay_queue_messages",
        "Messages in the relay queue waiting for (or being sent to) the smarthost.",
        registry=registry,
    )


class WorkersMetrics:
    """
    The parent's side of C{--workers} with C{--metrics}: the sum of every
    worker's values from the files in C{directory} (C{prometheus_client}'s
    C{MultiProcessCollector}), beside the parent's own build info and
    relay queue.

    @ivar directory: The workers' C{PROMETHEUS_MULTIPROC_DIR}, private to
        this parent (no stale files of another run are summed).
    """

    def __init__(self, directory: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = directory
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(directory))
        self.relayQueue = _processMetrics(self.registry)

    @classmethod
    def inTemporaryDirectory(cls) -> WorkersMetrics:
        """
        Metrics in a new private temporary directory (mode 0700), removed
        when L{service} stops.
        """
        return cls(Path(tempfile.mkdtemp(prefix="clientid-mail-metrics-")))

    def relayQueueLength(self, length: Callable[[], int]) -> None:
        self.relayQueue.set_function(length)

    def workerEnded(self, pid: int) -> None:
        """
        Forget the live gauges of the worker C{pid} (its connections, its
        view of the store); its counts stay in the sums.
        """
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, str(self.directory))

    def remove(self) -> None:
        """
        Remove the directory and the workers' files in it.
        """
        shutil.rmtree(self.directory, ignore_errors=True)

    def service(self) -> service.Service:
        """
        A service that removes the directory when it stops (add it before
        the workers, so it stops after them).
        """
        return _RemoveDirectory(self)


class _RemoveDirectory(service.Service):
    def __init__(self, metrics: WorkersMetrics) -> None:
        self.metrics = metrics

    def stopService(self) -> None:
        service.Service.stopService(self)
        self.metrics.remove()


class _ObserverService(service.Service):
    """
    Adds the metrics' log observer while the server runs (and, in a
    worker, refreshes its read gauges every second).
    """

    def __init__(self, metrics: ServerMetrics, publisher: Any, clock: Any = None) -> None:
        self.observer = metrics.observe
        self.publisher = publisher
        self.refresh: task.LoopingCall | None = None
        if metrics.multiprocess:
            self.refresh = task.LoopingCall(metrics.refresh)
            if clock is not None:
                self.refresh.clock = clock

    def startService(self) -> None:
        service.Service.startService(self)
        self.publisher.addObserver(self.observer)
        if self.refresh is not None:
            self.refresh.start(1.0, now=False)

    def stopService(self) -> None:
        service.Service.stopService(self)
        self.publisher.removeObserver(self.observer)
        if self.refresh is not None and self.refresh.running:
            self.refresh.stop()


def metricsObserver(metrics: ServerMetrics, publisher: Any = None, clock: Any = None) -> service.Service:
    """
    The service that counts the log's events into C{metrics} while it runs.
    """
    return _ObserverService(metrics, publisher if publisher is not None else globalLogPublisher, clock)


def metricsListener(registry: CollectorRegistry, description: str) -> service.Service:
    """
    An HTTP listener on C{description} (an endpoint string) answering
    C{/metrics} with C{registry}.
    """
    from prometheus_client.twisted import MetricsResource

    root = resource.Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    site = server.Site(root)
    site.displayTracebacks = False
    listener = makeListener(description, site)
    listener.setName(f"metrics {description}")
    return listener


def metricsService(
    metrics: ServerMetrics, description: str, publisher: Any = None
) -> service.MultiService:
    """
    The services that count and serve: the log observer, and an HTTP
    listener on C{description} (an endpoint string) answering C{/metrics}.
    """
    top = service.MultiService()
    top.setName("metrics")
    metricsObserver(metrics, publisher).setServiceParent(top)
    metricsListener(metrics.registry, description).setServiceParent(top)
    return top
