# -*- test-case-name: tests.test_tap -*-
"""
Put the runnable server together from its data directory: configuration,
certificate, installation key, users, portal and protocol factories.

Kept apart from the twistd options so tests and embedders can build the same
server without a command line.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from attrs import frozen

from twisted.cred.portal import Portal
from twisted.logger import Logger

from clientid_twisted.fingerprint import IdentityHasher
from clientid_twisted.gateway.config import GatewayConfig, parseGatewayConfig
from clientid_twisted.policy.setup import Authentication, buildAuthentication
from clientid_twisted.server.config import ConfigError, checkConfig, getTable, loadConfig
from clientid_twisted.server.connections import ConnectionLimiter
from clientid_twisted.server.delivery import MailRealm, removeStaleTemporaryFiles
from clientid_twisted.server.imapserver import MailIMAP4Factory
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.server.relayconfig import RelaySettings, parseRelayConfig
from clientid_twisted.server.secret import loadOrCreateKey
from clientid_twisted.server.submission import SubmissionFactory
from clientid_twisted.server.tls import (
    ServerCertificate,
    loadCertificate,
    loadOrCreateCertificate,
)
from clientid_twisted.web.config import parseWebConfig
from clientid_twisted.web.service import linkMaker, selfServiceSite
from clientid_twisted.server.users import (
    ALIASES_FILE,
    AliasDatabase,
    ScryptChecker,
    UserDatabase,
    aliasesFromConfig,
)

__all__ = ["MailServer", "assembleServer"]

_log = Logger()


@frozen
class MailServer:
    """
    The parts of a running C{clientid-mail} that its listeners share.
    """

    dataDir: Path
    hostname: str
    config: dict[str, Any]
    certificate: ServerCertificate
    tlsOptions: Any
    identityHasher: IdentityHasher
    users: UserDatabase
    portal: Portal
    smtpFactory: SubmissionFactory
    imapFactory: MailIMAP4Factory
    authentication: Authentication
    limits: ServerLimits = ServerLimits()
    limiter: ConnectionLimiter | None = None
    gateway: GatewayConfig = GatewayConfig()
    webSite: Any = None
    """The self-service site (L{clientid_twisted.web}) for the C{--web}
    listeners, or L{None} without one."""
    relay: Any = None
    """The L{RelayService <clientid_twisted.server.relayservice.RelayService>}
    when C{[relay]} names a smarthost, else L{None}."""


def assembleServer(
    dataDir: Path,
    configPath: Path | None = None,
    certificatePath: str | None = None,
    keyPath: str | None = None,
    hostname: str | None = None,
    storeURL: str | None = None,
    metrics: Any = None,
    imapBackend: str | None = None,
    smtpBackend: str | None = None,
    webListener: str | None = None,
) -> MailServer:
    """
    Build the shared parts of the server, creating the data directory and
    its generated files on first use.

    @param metrics: A L{clientid_twisted.server.metrics.ServerMetrics} to
        count the store's locks and errors in, or L{None}.
    @param imapBackend: C{--imap-backend}: the IMAP backend's endpoint
        string, overriding C{[gateway] imap_backend}.
    @param smtpBackend: C{--smtp-backend}, likewise.
    @param webListener: The first C{--web} endpoint: the self-service site
        is on, and notices link to it; L{None}: off.
    @raise ValueError: With a message for the operator when a file is
        missing or unreadable.
    """
    dataDir.mkdir(mode=0o700, parents=True, exist_ok=True)
    configFile = configPath or dataDir / "clientid.toml"
    config = loadConfig(configFile, required=configPath is not None)
    checkConfig(config, configFile, dataDir)
    serverConfig = getTable(config, "server", configFile)
    limits = ServerLimits.fromConfig(serverConfig, configFile)
    hostname = hostname or serverConfig.get("hostname") or "localhost"
    # MAIL FROM must be the login's own address or alias (on by default).
    aliases = aliasesFromConfig(getTable(config, "users", configFile), configFile)
    gateway = parseGatewayConfig(config, configFile).withOptions(imapBackend, smtpBackend)
    relaySettings = _relaySettings(config, configFile, dataDir, gateway)

    if certificatePath and keyPath:
        certificate = loadCertificate(Path(certificatePath), Path(keyPath))
    else:
        certificate = loadOrCreateCertificate(dataDir, hostname)
    _log.info(
        "TLS certificate{generated} SHA-256 fingerprint {fingerprint}",
        generated=" (self-signed, development)" if certificate.generated else "",
        fingerprint=certificate.fingerprint,
    )
    tlsOptions = certificate.options()

    stale = removeStaleTemporaryFiles(dataDir, time.time())
    if stale:
        _log.info("removed {count} stale file(s) from maildir tmp/ directories", count=stale)

    hasher = IdentityHasher(loadOrCreateKey(dataDir / "clientid.key"))
    users = UserDatabase(dataDir / "users.json")
    # The device policy wraps the password checker; the store's key (which
    # a new store adopts from clientid.key) keys the fingerprints, so the
    # protocol log and `clientid-admin devices list` agree.
    web = parseWebConfig(config, configFile)
    links = linkMaker(web, hasher.key, hostname, webListener) if webListener else None
    authentication = buildAuthentication(
        config, dataDir, storeURL, users, ScryptChecker(users), hasher, hostname,
        configSource=configFile,
        wrapStore=metrics.countingStore if metrics is not None else None,
        noticeLinks=links.deviceLinks if links is not None else None,
    )
    hasher = authentication.hasher or hasher
    relay = _relayService(relaySettings, dataDir, users, hostname, metrics)
    senders = None
    if limits.senderLoginMatch:
        senders = AliasDatabase(dataDir / ALIASES_FILE, aliases)
    portal = Portal(
        MailRealm(
            dataDir,
            users,
            hostname,
            relayQueue=relay.queue if relay else None,
            senders=senders,
        ),
        [authentication.checker],
    )

    # One count of connections for both protocols: the limits are the
    # server's, not each listener's.
    limiter = ConnectionLimiter(limits)
    if gateway.smtpBackend is not None:
        from clientid_twisted.gateway.smtp import gatewaySMTPFactory

        smtpFactory: SubmissionFactory = gatewaySMTPFactory(
            gateway,
            authentication.policy,
            hostname,
            context=tlsOptions,
            limits=limits,
            limiter=limiter,
        )
    else:
        smtpFactory = SubmissionFactory(portal, context=tlsOptions, limits=limits, limiter=limiter)
    smtpFactory.domain = hostname.encode("idna")
    smtpFactory.identityHasher = hasher
    # The handling flags govern the protocols' log lines too.
    smtpFactory.identityLogPolicy = authentication.config.showsInLog

    if gateway.imapBackend is not None:
        from clientid_twisted.gateway.imap import gatewayIMAPFactory

        imapFactory: MailIMAP4Factory = gatewayIMAPFactory(
            gateway,
            authentication.policy,
            hostname,
            mailNotices=authentication.config.alerts.mailAccount,
            noticeLinks=links.deviceLinks if links is not None else None,
            context=tlsOptions,
            limits=limits,
            limiter=limiter,
        )
    else:
        imapFactory = MailIMAP4Factory(portal, context=tlsOptions, limits=limits, limiter=limiter)
    imapFactory.identityHasher = hasher
    imapFactory.identityLogPolicy = authentication.config.showsInLog

    return MailServer(
        dataDir=dataDir,
        hostname=hostname,
        config=config,
        certificate=certificate,
        tlsOptions=tlsOptions,
        identityHasher=hasher,
        users=users,
        portal=portal,
        smtpFactory=smtpFactory,
        imapFactory=imapFactory,
        authentication=authentication,
        limits=limits,
        limiter=limiter,
        gateway=gateway,
        relay=relay,
        webSite=(
            selfServiceSite(web, links, authentication.store, dataDir, users, hostname)
            if links is not None
            else None
        ),
    )


def _relaySettings(
    config: dict[str, Any], configFile: Path, dataDir: Path, gateway: GatewayConfig
) -> RelaySettings | None:
    """
    C{[relay]}, checked before anything is opened.

    @raise ConfigError: If it is invalid, or set beside an SMTP backend
        (which then sends the mail out itself).
    """
    settings = parseRelayConfig(config, dataDir, configFile)
    if settings is not None and gateway.smtpBackend is not None:
        raise ConfigError(
            f"{configFile}: [relay] is for the built-in submission server; with an SMTP "
            "backend ([gateway] smtp_backend or --smtp-backend) the backend sends mail out"
        )
    return settings


def _relayService(
    settings: RelaySettings | None,
    dataDir: Path,
    users: UserDatabase,
    hostname: str,
    metrics: Any,
) -> Any:
    """
    The relay service for C{[relay]}, or L{None} without the table.
    """
    if settings is None:
        return None
    from twisted.internet import reactor

    from clientid_twisted.server.relayqueue import RelayQueue
    from clientid_twisted.server.relaysender import SmarthostClient
    from clientid_twisted.server.relayservice import InboxBouncer, RelayService

    queue = RelayQueue(dataDir / "queue", clock=reactor)
    client = SmarthostClient(settings, hostname, reactor)
    relay = RelayService(
        queue,
        client.send,
        InboxBouncer(dataDir, users, hostname, queue, reactor),
        settings.maxQueueSeconds,
        settings.host,
        clock=reactor,
    )
    if metrics is not None:
        metrics.relayQueueLength(relay.queueLength)
    return relay


