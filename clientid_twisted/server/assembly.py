# -*- test-case-name: tests.test_tap -*-
"""
Put the runnable server together from its data directory: configuration,
certificate, users, the device policy (with the one identity key), portal
and protocol factories.

Kept apart from the twistd options so tests and embedders can build the same
server without a command line.  L{assembleServer} returns a
L{Deferred <twisted.internet.defer.Deferred>}: the policy's builder
(L{clientid_twisted.policy.buildAuthentication}) resolves the
identity key before anything is made that could listen.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from attrs import frozen

from twisted.cred.portal import Portal
from twisted.internet import defer
from twisted.logger import Logger

from clientid_twisted.cred import IdentityHasher
from clientid_twisted.gateway.config import GatewayConfig, parseGatewayConfig
from clientid_twisted._keyfile import KEY_FILE
from clientid_twisted.policy import Authentication, PolicyConfig, buildAuthentication
from clientid_twisted.server.config import ConfigError, checkConfig, getTable, loadConfig
from clientid_twisted.server.connections import ConnectionLimiter
from clientid_twisted.server.delivery import MailRealm, removeStaleTemporaryFiles
from clientid_twisted.server.imapserver import MailIMAP4Factory
from clientid_twisted.server.limits import ServerLimits
from clientid_twisted.server.relayconfig import RelaySettings, parseRelayConfig
from clientid_twisted.server.mailnotice import MailboxAlertObserver
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

__all__ = ["MailServer", "assembleServer", "mailboxNotices"]

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


def mailboxNotices(
    dataDir: Path,
    users: UserDatabase,
    hostname: str,
    clock: Any = None,
    linksFor: Callable[[IdentityHasher], Any] | None = None,
) -> Callable[[PolicyConfig, IdentityHasher], list[MailboxAlertObserver]]:
    """
    The server's own alert observers for the policy builder
    (C{applicationObservers}): notices into the account's INBOX, if
    C{[alerts] mail_account} asks for them.

    @param linksFor: Gives the self-service site's
        L{LinkMaker <clientid_twisted.web.links.LinkMaker>} for the identity
        key (its link key derives from it), or L{None} when the site is
        off.
    """

    def observers(settings: PolicyConfig, hasher: IdentityHasher) -> list[MailboxAlertObserver]:
        if not settings.alerts.mailAccount:
            return []
        links = linksFor(hasher) if linksFor is not None else None
        return [
            MailboxAlertObserver(
                dataDir,
                users,
                hostname,
                clock=clock,
                interval=settings.alerts.noticeIntervalSeconds,
                failureNotices=settings.alerts.noticeFailures,
                linksFor=links.deviceLinks if links is not None else None,
            )
        ]

    return observers


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
    reactor: Any = None,
) -> defer.Deferred[MailServer]:
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
    @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the
        L{MailServer} once the identity key is known: at once for a local
        store (SQLite, memory), once the store answers for a shared one
        (Redis).
    @raise ValueError: With a message for the operator when a file is
        missing or unreadable (at once).
    """
    dataDir.mkdir(mode=0o700, parents=True, exist_ok=True)
    configFile = configPath or dataDir / "clientid.toml"
    config = loadConfig(configFile, required=configPath is not None)
    checkConfig(config, configFile, dataDir)
    serverConfig = getTable(config, "server", configFile)
    limits = ServerLimits.fromConfig(serverConfig, configFile)
    serverName: str = hostname or serverConfig.get("hostname") or "localhost"
    # MAIL FROM must be the login's own address or alias (on by default).
    aliases = aliasesFromConfig(getTable(config, "users", configFile), configFile)
    gateway = parseGatewayConfig(config, configFile).withOptions(imapBackend, smtpBackend)
    relaySettings = _relaySettings(config, configFile, dataDir, gateway)

    if certificatePath and keyPath:
        certificate = loadCertificate(Path(certificatePath), Path(keyPath))
    else:
        certificate = loadOrCreateCertificate(dataDir, serverName)
    _log.info(
        "TLS certificate{generated} SHA-256 fingerprint {fingerprint}",
        generated=" (self-signed, development)" if certificate.generated else "",
        fingerprint=certificate.fingerprint,
    )
    tlsOptions = certificate.options()

    stale = removeStaleTemporaryFiles(dataDir, time.time())
    if stale:
        _log.info("removed {count} stale file(s) from maildir tmp/ directories", count=stale)

    users = UserDatabase(dataDir / "users.json")
    web = parseWebConfig(config, configFile)

    def linksFor(hasher: IdentityHasher) -> Any:
        # The site's link key derives from the one identity key.
        return linkMaker(web, hasher.key, serverName, webListener) if webListener else None

    # The device policy wraps the password checker; its one hasher (the
    # store's key; a new local store adopts clientid.key) keys the protocol
    # log too, so the log, the events, the alerts and `clientid-admin
    # devices list` agree.
    inboxNotices = mailboxNotices(dataDir, users, serverName, reactor, linksFor)
    # In IMAP gateway mode, notices for the accounts (which live on the
    # backend) wait in the store for the account's next login through the
    # gateway, on whichever frontend sharing the store sees it.
    gatewayNotices: list[Any] = []

    def observers(settings: PolicyConfig, hasher: IdentityHasher) -> list[Any]:
        found: list[Any] = list(inboxNotices(settings, hasher))
        if gateway.imapBackend is not None and settings.alerts.mailAccount:
            from clientid_twisted.gateway.imap import PendingNotices

            links = linksFor(hasher)
            gatewayNotices.append(
                PendingNotices(
                    serverName,
                    linksFor=links.deviceLinks if links is not None else None,
                    failureNotices=settings.alerts.noticeFailures,
                )
            )
            found += gatewayNotices
        return found

    built = buildAuthentication(
        ScryptChecker(users),
        config,
        storeURL,
        dataDir / KEY_FILE,
        dataDir=dataDir,
        applicationObservers=observers,
        reactor=reactor,
        configSource=configFile,
        wrapStore=metrics.countingStore if metrics is not None else None,
    )

    def assemble(authentication: Authentication) -> MailServer:
        hasher = authentication.hasher
        for pending in gatewayNotices:
            # Gateway notices wait in the store, shared by every frontend.
            pending.store = authentication.store
        links = linksFor(hasher)
        relay = _relayService(relaySettings, dataDir, users, serverName, metrics)
        senders = None
        if limits.senderLoginMatch:
            senders = AliasDatabase(dataDir / ALIASES_FILE, aliases)
        portal = Portal(
            MailRealm(
                dataDir,
                users,
                serverName,
                relayQueue=relay.queue if relay else None,
                senders=senders,
            ),
            [metrics.timedChecker(authentication.checker) if metrics is not None else authentication.checker],
        )

        # One count of connections for both protocols: the limits are the
        # server's, not each listener's.
        limiter = ConnectionLimiter(limits)
        if gateway.smtpBackend is not None:
            from clientid_twisted.gateway.smtp import gatewaySMTPFactory

            smtpFactory: SubmissionFactory = gatewaySMTPFactory(
                gateway,
                authentication.policy,
                serverName,
                context=tlsOptions,
                limits=limits,
                limiter=limiter,
                identityHasher=hasher,
            )
        else:
            smtpFactory = SubmissionFactory(
                portal, context=tlsOptions, limits=limits, limiter=limiter, identityHasher=hasher
            )
        smtpFactory.domain = serverName.encode("idna")
        # The handling flags govern the protocols' log lines too.
        smtpFactory.identityLogPolicy = authentication.config.showsInLog

        if gateway.imapBackend is not None:
            from clientid_twisted.gateway.imap import gatewayIMAPFactory

            imapFactory: MailIMAP4Factory = gatewayIMAPFactory(
                gateway,
                authentication.policy,
                notices=gatewayNotices[0] if gatewayNotices else None,
                context=tlsOptions,
                limits=limits,
                limiter=limiter,
                identityHasher=hasher,
            )
        else:
            imapFactory = MailIMAP4Factory(
                portal, context=tlsOptions, limits=limits, limiter=limiter, identityHasher=hasher
            )
        imapFactory.identityLogPolicy = authentication.config.showsInLog

        return MailServer(
            dataDir=dataDir,
            hostname=serverName,
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
                selfServiceSite(
                    web, links, authentication.store, dataDir, users, serverName,
                    gatewayNotices=gatewayNotices[0] if gatewayNotices else None,
                )
                if links is not None
                else None
            ),
        )

    return built.addCallback(assemble)


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


