# -*- test-case-name: tests.test_policy_setup,tests.test_policy_server -*-
"""
Put the device policy together for the runnable server: store, key, alert
observers, policy and checker, from the configuration.

C{clientid_twisted.server.assembly} calls L{buildAuthentication} and puts
L{Authentication.checker} in the portal instead of the bare password
checker; L{Authentication.service} closes the store when the server stops.
"""

from __future__ import annotations

import binascii
import importlib
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from attrs import frozen

from twisted.application import service
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.logger import Logger

from clientid_twisted.fingerprint import IdentityHasher
from clientid_twisted.interfaces import IAlertObserver, IClientIDPolicy, IClientIDStore
from clientid_twisted.policy.alerts import LogAlertObserver
from clientid_twisted.policy.checker import ClientIDChecker
from clientid_twisted.policy.config import ConfigError, PolicyConfig, parsePolicyConfig
from clientid_twisted.policy.engine import DevicePolicy
from clientid_twisted.policy.mailnotice import MailboxAlertObserver
from clientid_twisted.policy.webhook import WebhookAlertObserver
from clientid_twisted.server.users import UserDatabase
from clientid_twisted.store import openStore

__all__ = [
    "Authentication",
    "PolicyFactoryContext",
    "StoreService",
    "buildAuthentication",
    "configuredKey",
    "loadPolicyFactory",
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

    @ivar checker: For the portal, in place of C{innerChecker}.
    @ivar store: The CLIENTID store (devices, counters, events).
    @ivar policy: The decision engine: the built-in L{DevicePolicy}, or what
        the C{[policy] custom} factory made.
    @ivar hasher: The hasher the store's devices are keyed with: give it to
        the protocol factories (C{identityHasher}) so the fingerprints in
        the protocol log match those of C{clientid-admin devices list}.
        L{None} while a store that answers asynchronously has not yet
        given its key.
    @ivar service: Add it to the service tree: it closes the store on
        shutdown.
    """

    checker: ClientIDChecker
    store: IClientIDStore
    policy: IClientIDPolicy
    hasher: IdentityHasher | None
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
    @ivar hasher: The hasher the store's devices are keyed with; L{None}
        if a store that answers asynchronously has not given its key yet
        (C{builtIn.hasher} is set once it has).
    @ivar alertObservers: The configured L{IAlertObserver}s: the log, the
        account's INBOX (C{[alerts] mail_account}), the webhook
        (C{[alerts] webhook}).
    @ivar clock: The server's time (L{twisted.internet.interfaces.IReactorTime}).
    @ivar dataDir: The data directory.
    @ivar builtIn: The built-in L{DevicePolicy} configured from the same
        tables, for a custom policy that adds rules in front of it (it is
        used only if the custom policy delegates to it).
    """

    config: PolicyConfig
    rawConfig: Mapping[str, Any]
    store: IClientIDStore
    hasher: IdentityHasher | None
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


def buildAuthentication(
    config: dict[str, Any],
    dataDir: Path,
    storeURL: str | None,
    users: UserDatabase,
    innerChecker: ICredentialsChecker,
    hasher: IdentityHasher | None,
    hostname: str,
    reactor: Any = None,
    *,
    clock: Any = None,
    configSource: object = None,
    wrapStore: Callable[[IClientIDStore], IClientIDStore] | None = None,
    noticeLinks: Callable[[str, str], tuple[str, str]] | None = None,
) -> Authentication:
    """
    Build the CLIENTID checker for the server.

    @param config: The loaded C{clientid.toml} (all of it).
    @param storeURL: C{--store}; overrides C{[store] url}.  L{None} and no
        C{[store] url}: C{DATA_DIR/clientid.sqlite3}.
    @param users: The accounts (alert notices go only to those that exist).
    @param innerChecker: Checks passwords (L{ScryptChecker}).
    @param hasher: The installation's hasher (C{DATA_DIR/clientid.key}): a
        new store adopts its key, so fingerprints stay what they were.  An
        existing store's own key wins (several frontends must agree), as
        does a key the configuration names.
    @param hostname: Notices come from C{postmaster@hostname}.
    @param clock: The policy's and store's time; C{reactor} by default.
    @param wrapStore: Called with the opened store; what it returns is the
        store everything uses (L{clientid_twisted.server.metrics} counts
        locks and store errors so).
    @param noticeLinks: C{noticeLinks(account, fingerprint)}: a device's
        approve and disown links on the self-service site, for the INBOX
        notices; L{None} when the site is off.
    @raise ConfigError: For a bad policy configuration or key.
    @raise ValueError: For a store URL that cannot be used.
    @raise clientid_twisted.store.StoreError: If the store cannot be opened.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    if clock is None:
        clock = reactor
    settings = parsePolicyConfig(config, configSource)
    key = configuredKey(settings, dataDir)
    store = openStore(storeURL or settings.store.url, dataDir, reactor, clock=clock)
    if wrapStore is not None:
        store = wrapStore(store)

    observers: list[Any] = [LogAlertObserver()]
    if settings.alerts.mailAccount:
        observers.append(
            MailboxAlertObserver(
                dataDir,
                users,
                hostname,
                clock=clock,
                interval=settings.alerts.noticeIntervalSeconds,
                failureNotices=settings.alerts.noticeFailures,
                linksFor=noticeLinks,
            )
        )
    if settings.alerts.webhook:
        observers.append(
            WebhookAlertObserver(
                settings.alerts.webhook,
                clock=clock,
                retries=settings.alerts.webhookRetries,
                timeout=settings.alerts.webhookTimeoutSeconds,
            )
        )
    builtIn = DevicePolicy(settings, store, None, observers, clock)

    if key is not None:
        builtIn.hasher = IdentityHasher(key)
    else:
        stored = store.identityKey(hasher.key if hasher is not None else None)
        stored.addCallback(lambda key: setattr(builtIn, "hasher", IdentityHasher(key)))
        stored.addErrback(
            lambda f: _log.failure("cannot read the identity key from the CLIENTID store", f)
        )
    if hasher is not None and builtIn.hasher is not None and builtIn.hasher.key != hasher.key:
        _log.info(
            "CLIENTID devices are keyed with the store's identity key, not the "
            "data directory's clientid.key"
        )
    policy: IClientIDPolicy = builtIn
    if settings.custom:
        factory = loadPolicyFactory(settings.custom)
        policy = factory(
            PolicyFactoryContext(
                config=settings,
                rawConfig=config,
                store=store,
                hasher=builtIn.hasher,
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
        _log.info("CLIENTID policy: {policy!r} from {factory}", policy=policy, factory=settings.custom)
    return Authentication(
        checker=ClientIDChecker(innerChecker, policy, clock),
        store=store,
        policy=policy,
        hasher=builtIn.hasher,
        service=StoreService(store),
        config=settings,
    )
