# -*- test-case-name: tests.test_policy_setup -*-
"""
The one builder of the device policy: from a password checker, the
C{clientid.toml} tables and a store URL to the checker for a portal, the
policy, the store, the one L{IdentityHasher} and a service that closes the
store.

Every front uses it: the runnable server
(C{clientid_twisted.server.assembly}), the C{clientid:} cred plugin
(L{clientid_twisted.policy._credfactory}), the gateway, and embedders::

    d = buildAuthentication(innerChecker, config, "redis://...")
    def ready(auth):
        portal = Portal(realm, [auth.checker])
        factory.identityHasher = auth.hasher     # the protocol log's fingerprints
        auth.service.setServiceParent(application)
        ...start listening...
    d.addCallback(ready)

The identity key has one owner: it is resolved here, once, before the
policy exists (L{resolveIdentityHasher}), and the same hasher goes to the
policy and (through L{Authentication.hasher}) to the protocol factories.
So nothing should listen before the L{Deferred <twisted.internet.defer.Deferred>} fires: for SQLite and
memory stores it has fired when L{buildAuthentication} returns; a Redis
store answers once Redis is reachable.
"""

from __future__ import annotations

import binascii
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from attrs import frozen

from twisted.application import service
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.logger import Logger

from clientid_twisted._configfile import ConfigError
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted.interfaces import IAlertObserver, IClientIDPolicy, IClientIDStore
from clientid_twisted._keyfile import loadOrCreateKey, readKeyIfPresent
from clientid_twisted.policy._alerts import LogAlertObserver
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._config import PolicyConfig, parsePolicyConfig
from clientid_twisted.policy._engine import DevicePolicy
from clientid_twisted.policy._webhook import WebhookAlertObserver
from clientid_twisted.store import isLocalStore, openStore

__all__ = [
    "Authentication",
    "PolicyFactoryContext",
    "StoreService",
    "buildAuthentication",
    "configuredKey",
    "loadPolicyFactory",
    "resolveIdentityHasher",
]

_log = Logger()


class StoreService(service.Service):
    """
    Closes a store when the service tree stops (committing queued writes).
    """

    def __init__(self, store: IClientIDStore) -> None:
        self.store = store
        self.setName("clientid store")

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)
        return self.store.close()


@frozen
class Authentication:
    """
    What L{buildAuthentication} made.

    @ivar checker: For the portal, in place of the inner checker.
    @ivar store: The CLIENTID store (devices, counters, events).
    @ivar policy: The decision engine: the built-in L{DevicePolicy}, or what
        the C{[policy] custom} factory made.
    @ivar hasher: The one hasher of this process: the policy keys the
        store's devices with it; give it to the protocol factories
        (C{identityHasher}) so the protocol log's fingerprints are those
        of the events, alerts and C{clientid-admin devices list}.
    @ivar service: Add it to the service tree: it closes the store on
        shutdown.
    @ivar config: The parsed policy tables.
    """

    checker: ClientIDChecker
    store: IClientIDStore
    policy: IClientIDPolicy
    hasher: IdentityHasher
    service: StoreService
    config: PolicyConfig


@frozen
class PolicyFactoryContext:
    """
    What a C{[policy] custom = "package.module:factory"} factory is called
    with (one argument, so later versions can add attributes without
    breaking factories).  The factory returns an L{IClientIDPolicy}.

    @ivar config: The parsed policy tables (C{[policy]}, C{[limits]},
        C{[types.NAME]}, C{[alerts]}, C{[store]}).
    @ivar rawConfig: All of C{clientid.toml}, for the custom policy's own
        tables (put them under a name of your own, e.g. C{[uuid_only]}:
        unknown keys in the built-in tables are errors).
    @ivar store: The CLIENTID store (C{--store} / C{[store] url}).
    @ivar hasher: The hasher the store's devices are keyed with.
    @ivar alertObservers: The configured L{IAlertObserver}s: the log, the
        webhook (C{[alerts] webhook}) and the application's own (the
        server's: the account's INBOX, C{[alerts] mail_account}).
    @ivar clock: The server's time (L{twisted.internet.interfaces.IReactorTime}).
    @ivar dataDir: The data directory.
    @ivar builtIn: The built-in L{DevicePolicy} configured from the same
        tables, for a custom policy that adds rules in front of it (it is
        used only if the custom policy delegates to it).
    """

    config: PolicyConfig
    rawConfig: Mapping[str, Any]
    store: IClientIDStore
    hasher: IdentityHasher
    alertObservers: tuple[IAlertObserver, ...]
    clock: Any
    dataDir: Path | None
    builtIn: DevicePolicy


PolicyFactory = Callable[[PolicyFactoryContext], IClientIDPolicy]


def loadPolicyFactory(name: str) -> PolicyFactory:
    """
    Import the factory that C{[policy] custom} names.

    @param name: C{"package.module:factory"}; the part after the colon may
        be an attribute path (C{module:Class.create}).
    @raise ConfigError: If it cannot be imported or is not callable.
    """
    moduleName, _, attributePath = name.partition(":")
    try:
        found: Any = importlib.import_module(moduleName)
        for attribute in attributePath.split("."):
            found = getattr(found, attribute)
    except Exception as e:
        raise ConfigError(f"[policy] custom {name!r} cannot be loaded: {e}") from None
    if not callable(found):
        raise ConfigError(f"[policy] custom {name!r} is not callable")
    return found  # type: ignore[no-any-return]


def configuredKey(settings: PolicyConfig, dataDir: Path | None) -> bytes | None:
    """
    The token-hashing key the C{[store]} table names (C{key_file}, relative
    to the data directory, or C{key_env}), or L{None} if it names none: the
    store keeps the key then.

    The key is hex: at least 32 digits (16 bytes), as in C{clientid.key}.

    @raise ConfigError: If the file or variable is missing or not a key.
    """
    store = settings.store
    if store.keyFile:
        path = Path(store.keyFile)
        if not path.is_absolute() and dataDir is not None:
            path = Path(dataDir) / path
        try:
            text = path.read_text("ascii")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"[store] key_file {str(path)!r} cannot be read: {e}") from None
        where = f"[store] key_file {str(path)!r}"
    elif store.keyEnv:
        value = os.environ.get(store.keyEnv)
        if value is None:
            raise ConfigError(f"[store] key_env: the variable {store.keyEnv} is not set")
        text = value
        where = f"[store] key_env {store.keyEnv}"
    else:
        return None
    try:
        key = binascii.unhexlify(text.strip())
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < 16:
        raise ConfigError(f"{where} must hold a key of at least 32 hex digits")
    return key


def resolveIdentityHasher(
    store: IClientIDStore,
    storeURL: str | None,
    settings: PolicyConfig,
    dataDir: Path | None,
    keyFile: Path | None,
) -> defer.Deferred[IdentityHasher]:
    """
    The one identity key of this process, in this order:

        1. the key C{[store] key_file} / C{key_env} names;
        2. the key the store keeps (all frontends sharing a store agree);
        3. for a store that has none yet: a local store (SQLite, memory)
           adopts C{keyFile}'s key, made on first use, so fingerprints stay
           what they were; a shared store (Redis) adopts C{keyFile}'s key
           only if that file already exists, else makes a random one; no
           file is ever made for a shared store.

    @param keyFile: The installation's key file (C{DATA_DIR/clientid.key}),
        or L{None} for none.
    @raise ConfigError: For a configured key that cannot be used.
    @raise clientid_twisted._keyfile.SecretError: For a key file holding
        something else.
    """
    configured = configuredKey(settings, dataDir)
    if configured is not None:
        return defer.succeed(IdentityHasher(configured))
    local: bytes | None = None
    if keyFile is not None:
        local = loadOrCreateKey(keyFile) if isLocalStore(storeURL) else readKeyIfPresent(keyFile)

    def resolved(key: bytes) -> IdentityHasher:
        if local is not None and key != local:
            _log.info(
                "CLIENTID devices are keyed with the store's identity key, not {keyFile}",
                keyFile=str(keyFile),
            )
        return IdentityHasher(key)

    return store.identityKey(local).addCallback(resolved)


def buildAuthentication(
    innerChecker: ICredentialsChecker,
    config: Mapping[str, Any],
    storeURL: str | None = None,
    keyFile: Path | None = None,
    *,
    dataDir: Path | None = None,
    applicationObservers: Callable[[PolicyConfig, IdentityHasher], Iterable[IAlertObserver]]
    | None = None,
    reactor: Any = None,
    clock: Any = None,
    configSource: object = None,
    wrapStore: Callable[[IClientIDStore], IClientIDStore] | None = None,
) -> defer.Deferred[Authentication]:
    """
    Build the CLIENTID checker, policy and store; the identity key first.

    @param innerChecker: Checks passwords.
    @param config: The loaded C{clientid.toml} (all of it; the policy reads
        C{[policy]}, C{[limits]}, C{[types.NAME]}, C{[alerts]}, C{[store]}).
    @param storeURL: Overrides C{[store] url}; L{None} and no C{[store]
        url}: C{DATA_DIR/clientid.sqlite3}.
    @param keyFile: The installation's key file, see
        L{resolveIdentityHasher}.
    @param dataDir: Where relative paths (store, key file) are resolved.
    @param applicationObservers: Called with the parsed tables and the
        hasher once the key is known; the application's own alert
        observers (the server's INBOX notices, whose links derive from the
        key).
    @param clock: The policy's and store's time; C{reactor} by default.
    @param configSource: Names the configuration in error messages.
    @param wrapStore: Called with the opened store; what it returns is the
        store everything uses (the server's metrics count locks and store
        errors so).
    @return: A L{Deferred <twisted.internet.defer.Deferred>} firing with the L{Authentication} once the
        identity key is known; for a local store, already fired.
    @raise ConfigError: For a bad policy configuration or key (at once).
    @raise ValueError: For a store URL that cannot be used (at once).
    @raise clientid_twisted.store.StoreError: If the store cannot be opened.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    if clock is None:
        clock = reactor
    settings = parsePolicyConfig(config, configSource)
    url = storeURL or settings.store.url
    store = openStore(url, dataDir, reactor, clock=clock)
    if wrapStore is not None:
        store = wrapStore(store)
    try:
        hasher = resolveIdentityHasher(store, url, settings, dataDir, keyFile)
        if settings.custom:
            factory = loadPolicyFactory(settings.custom)
    except BaseException:
        store.close()
        raise

    def build(hasher: IdentityHasher) -> Authentication:
        observers: list[IAlertObserver] = [LogAlertObserver()]
        if applicationObservers is not None:
            observers.extend(applicationObservers(settings, hasher))
        if settings.alerts.webhook:
            observers.append(
                WebhookAlertObserver(
                    settings.alerts.webhook,
                    clock=clock,
                    retries=settings.alerts.webhookRetries,
                    timeout=settings.alerts.webhookTimeoutSeconds,
                )
            )
        builtIn = DevicePolicy(settings, store, hasher, observers, clock)
        policy: IClientIDPolicy = builtIn
        if settings.custom:
            policy = factory(
                PolicyFactoryContext(
                    config=settings,
                    rawConfig=config,
                    store=store,
                    hasher=hasher,
                    alertObservers=tuple(observers),
                    clock=clock,
                    dataDir=dataDir,
                    builtIn=builtIn,
                )
            )
            if not IClientIDPolicy.providedBy(policy):
                raise ConfigError(
                    f"[policy] custom {settings.custom!r} returned {policy!r}, "
                    "which does not provide IClientIDPolicy"
                )
            _log.info(
                "CLIENTID policy: {policy!r} from {factory}", policy=policy, factory=settings.custom
            )
        return Authentication(
            checker=ClientIDChecker(innerChecker, policy, clock),
            store=store,
            policy=policy,
            hasher=hasher,
            service=StoreService(store),
            config=settings,
        )

    def failed(reason: Any) -> Any:
        store.close()
        return reason

    return hasher.addCallback(build).addErrback(failed)
