# -*- test-case-name: tests.test_policy_engine -*-
"""
The built-in device policy: known devices per account, revocation,
failure limits per device (per address only for clients without CLIENTID),
and alerts.

A decision reads the store once (L{IClientIDStore.loadState}) before the
password is checked and writes it once (L{IClientIDStore.recordOutcome})
after, without making the login wait for the write, unless there is
nothing to write: a successful login from a known, approved device whose
last-seen time was written less than C{last_seen_interval_seconds} ago,
that has no failures to forget and no event to record, writes nothing (its
login is counted with the device's next write).  Every change of security
state (a new or promoted device, a failure, a lock, an event) is written
at once.  A store that answers at once (SQLite, memory) gets a decision
with no Deferred of its own and no timeout timer.

Rules, in order; the first that refuses wins:

    1. Handling flags of the type: C{ignore} and C{debug} make the identity
       count as not presented; without C{auth} it is not used for
       decisions.
    2. C{allowed_types} / C{denied_types} (on any presented identity).
    3. No usable identity: refused if C{require_clientid}, or in C{tofu}
       and C{allowlist} mode (there is no device to know).
    4. With an identity: token revoked (every account), token locked
       (C{device_failures} wrong passwords, or more than
       C{accounts_per_token} accounts tried), device revoked for this
       account; the (N+1)th account tried by one token.
    5. An unknown device (no approved record for this account): refused if
       the account is closed to unknown devices
       (C{unknown_device_failures}; not in C{off} mode, where every device
       is unknown), under attack, in C{allowlist} mode, or in C{tofu} mode
       once the account has C{tofu_max_devices}.
    6. Without an identity: refused if the account is closed to unknown
       devices (as in 5: no device is no known device), the address is
       locked (C{address_failures}), or under attack.
    7. Otherwise the password decides.

Store failures give C{TEMPFAIL} (or, with C{store_failure = "open"}, let the
password alone decide), logged once per outage.
"""

from __future__ import annotations

from typing import Any, Sequence

from attrs import define, evolve
from zope.interface import implementer

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from clientid_twisted._authlog import describeClientID, escapeForLog
from clientid_twisted._fingerprint import FINGERPRINT_LENGTH, IdentityHasher
from clientid_twisted.interfaces import IAlertObserver, IClientIDPolicy, IClientIDStore
from clientid_twisted.policy import _keys as keys
from clientid_twisted.policy._alerts import Alert, notifyAll
from clientid_twisted.policy._config import (
    ALLOWLIST,
    LEARN,
    OFF,
    TOFU,
    PolicyConfig,
    parsePolicyConfig,
)
from clientid_twisted.policy._decision import Attempt, Decision, Verdict
from clientid_twisted.policy._fired import NOT_FIRED, firedResult
from clientid_twisted.policy._health import StoreHealth
from clientid_twisted.store._records import (
    APPROVED,
    PENDING,
    REVOKED,
    AddMember,
    Bump,
    DecisionState,
    DeviceUpdate,
    Event,
    Once,
    Operation,
    OutcomeRecord,
    OutcomeResult,
    Reset,
    StateQuery,
)

__all__ = ["DevicePolicy", "policyFromConfig"]

_FAILURE_ALERTS = frozenset(
    {"device-refused", "device-locked", "account-closed", "token-locked"}
)
"""Alert kinds that need the type's C{alert-failure} flag."""
_ALWAYS_ALERTS = frozenset({"under-attack", "address-locked", "no-clientid-login"})
"""Alert kinds about logins without a usable identity, or the whole server."""
_UNWRITTEN_MAX = 100_000
"""Devices whose unwritten logins are counted at most; past it the counts
start again (a lost count costs a statistic, never security state)."""


@define
class _Context:
    """
    What a decision worked out about its attempt; kept for its outcome.
    Made by one decision and filled in by it (C{state}, C{degraded}), then
    only read.

    @ivar used: Whether the identity takes part in decisions (C{auth}).
    @ivar logged: Whether the identity may appear in the system log.
    @ivar state: What the store said, if it was asked.
    @ivar degraded: Decided without the store (failing open).
    """

    account: str | None
    flags: frozenset[str]
    typeName: str | None
    digest: str | None
    fingerprint: str | None
    used: bool
    logged: bool
    debug: bool
    state: DecisionState | None = None
    degraded: bool = False


@implementer(IClientIDPolicy)
class DevicePolicy:
    """
    L{IClientIDPolicy} with the built-in rules (see the module docstring).

    @ivar config: The settings.
    @ivar store: Where devices, counters and events live.
    @ivar hasher: Hashes tokens for the store; L{None} until the store's
        key is known (decisions get a temporary failure until then).
    @ivar alertObservers: Told about every alert.
    """

    log = Logger()

    def __init__(
        self,
        config: PolicyConfig,
        store: IClientIDStore,
        hasher: IdentityHasher | None,
        alertObservers: Sequence[IAlertObserver] = (),
        clock: Any = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.config = config
        self.store = store
        self.hasher = hasher
        self.alertObservers = list(alertObservers)
        self._clock = clock
        self.health = StoreHealth(self.log, clock, config.storeFailure == "open")
        # (account, digest) -> successful logins not written yet (see
        # _quiet); bounded, as a lost count costs only a statistic.
        self._unwritten: dict[tuple[str, str], int] = {}

    # -- before the password --------------------------------------------------

    def evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        try:
            return self._evaluate(attempt)
        except Exception:
            self.log.failure("CLIENTID policy failed to decide")
            return defer.succeed(Decision(attempt, Verdict.TEMPFAIL, "policy error"))

    def _context(self, attempt: Attempt, hasher: IdentityHasher) -> _Context:
        identity = attempt.identity
        if identity is None:
            return _Context(attempt.account, frozenset(), None, None, None, False, False, False)
        flags = self.config.handlingFor(identity.typeKey)
        if "ignore" in flags:
            # Handled but treated as not presented, and not kept anywhere.
            return _Context(attempt.account, flags, None, None, None, False, False, False)
        debug = "debug" in flags
        digest = hasher.digest(identity)
        fingerprint = digest[:FINGERPRINT_LENGTH]
        if debug:
            # Treated as not presented; shown in the log only.
            return _Context(
                attempt.account, flags, identity.type, None, fingerprint, False, True, True
            )
        return _Context(
            account=attempt.account,
            flags=flags,
            typeName=identity.type,
            digest=digest,
            fingerprint=fingerprint,
            used="auth" in flags,
            logged="system-log" in flags,
            debug=False,
        )

    def _evaluate(self, attempt: Attempt) -> defer.Deferred[Decision]:
        config = self.config
        if self.hasher is None:
            return defer.succeed(
                Decision(attempt, Verdict.TEMPFAIL, "the store's identity key is not loaded yet")
            )
        context = self._context(attempt, self.hasher)

        def refuse(reason: str) -> defer.Deferred[Decision]:
            return defer.succeed(Decision(attempt, Verdict.REJECT, reason, context))

        if context.digest is not None:
            typeKey = attempt.identity.typeKey  # type: ignore[union-attr]
            if config.allowedTypes and typeKey not in config.allowedTypes:
                return refuse("identity type not allowed")
            if typeKey in config.deniedTypes:
                return refuse("identity type denied")
        if not context.used:
            if config.requireClientID:
                return refuse("no CLIENTID, and one is required")
            if config.devices in (TOFU, ALLOWLIST):
                return refuse(f"no CLIENTID, and {config.devices} mode needs one")

        d = self.store.loadState(self._query(attempt, context))
        answered = firedResult(d)
        if answered is not NOT_FIRED:
            # The store answered at once (SQLite, memory): decide now, with
            # no timer to schedule and cancel and no callbacks to chain.
            if isinstance(answered, Failure):
                return defer.succeed(self._storeUnavailable(answered, attempt, context))
            return defer.succeed(self._decide(answered, attempt, context))
        d.addTimeout(config.storeTimeoutSeconds, self._clock)
        d.addCallbacks(
            self._decide,
            self._storeUnavailable,
            callbackArgs=(attempt, context),
            errbackArgs=(attempt, context),
        )
        return d

    def _query(self, attempt: Attempt, context: _Context) -> StateQuery:
        account, digest, address = context.account, context.digest, attempt.address
        locks = [keys.UNDER_ATTACK]
        scope = []
        if account is not None:
            scope.append(keys.accountScope(account))
        if context.used and digest is not None:
            locks += [keys.tokenRevoked(digest), keys.tokenLocked(digest)]
            if account is not None:
                locks.append(keys.accountClosed(account))
            scope.append(keys.tokenScope(digest))
            return StateQuery(
                account=account,
                digest=digest,
                locks=tuple(locks),
                windowSet=keys.tokenAccounts(digest),
                member=account,
                counter=keys.deviceFailures(digest),
                scope=tuple(scope),
            )
        if account is not None:
            # A login without a device is no known device either.
            locks.append(keys.accountClosed(account))
        if address is not None:
            locks.append(keys.addressLocked(address))
            scope.append(keys.addressScope(address))
        return StateQuery(account=account, locks=tuple(locks), scope=tuple(scope))

    def _decide(self, state: DecisionState, attempt: Attempt, context: _Context) -> Decision:
        self.health.succeeded()
        config = self.config
        context.state = state
        locks = state.locks
        underAttack = config.underAttack or keys.UNDER_ATTACK in locks
        account = context.account

        def decision(verdict: Verdict, reason: str) -> Decision:
            return Decision(attempt, verdict, reason, context)

        if context.used and context.digest is not None:
            digest = context.digest
            if keys.tokenRevoked(digest) in locks:
                return decision(Verdict.REJECT, "token revoked")
            if keys.tokenLocked(digest) in locks:
                return decision(Verdict.REJECT, "device locked")
            device = state.device
            if device is not None and device.state == REVOKED:
                return decision(Verdict.REJECT, "device revoked for this account")
            limit = config.limits.accountsPerToken
            if account is not None and limit and not state.setHasMember and state.setSize >= limit:
                return decision(Verdict.REJECT, "token used with too many accounts")
            if device is None or device.state != APPROVED:
                if (
                    account is not None
                    and config.devices != OFF
                    and keys.accountClosed(account) in locks
                ):
                    return decision(Verdict.REJECT, "account closed to unknown devices")
                if underAttack:
                    return decision(Verdict.REJECT, "unknown device while under attack")
                if config.devices == ALLOWLIST:
                    return decision(Verdict.REJECT, "device not approved")
                if config.devices == TOFU and state.approvedDevices >= config.tofuMaxDevices:
                    return decision(Verdict.REJECT, "device not approved (tofu limit reached)")
            return decision(Verdict.ACCEPT, "")
        if account is not None and config.devices != OFF and keys.accountClosed(account) in locks:
            # Closed to unknown devices means to logins with no device too:
            # otherwise leaving out CLIENTID walks around the closure.
            return decision(Verdict.REJECT, "account closed to unknown devices")
        if attempt.address is not None and keys.addressLocked(attempt.address) in locks:
            return decision(Verdict.REJECT, "address locked")
        if underAttack:
            return decision(Verdict.REJECT, "no CLIENTID while under attack")
        return decision(Verdict.ACCEPT, "")

    def _storeUnavailable(self, reason: Failure, attempt: Attempt, context: _Context) -> Decision:
        self.health.failed(reason)
        if self.config.storeFailure == "open":
            context.degraded = True
            return Decision(attempt, Verdict.ACCEPT, "store unavailable: failing open", context)
        return Decision(attempt, Verdict.TEMPFAIL, "store unavailable", context)

    # -- after the password ---------------------------------------------------

    def outcome(self, decision: Decision, passwordAccepted: bool) -> defer.Deferred[None]:
        context = decision.context
        if not isinstance(context, _Context) or decision.verdict is Verdict.TEMPFAIL:
            return defer.succeed(None)
        succeeded = passwordAccepted and decision.verdict is Verdict.ACCEPT
        if decision.verdict is Verdict.REJECT:
            self._logRefusal(decision, passwordAccepted)
        if context.degraded:
            return defer.succeed(None)
        alertSuccess = (
            succeeded and "alert-success" in context.flags and context.digest is not None
        )
        try:
            if succeeded and self._quiet(context):
                self._countUnwritten(context)
                record = None
            else:
                record = self._record(decision, context, passwordAccepted, succeeded)
        except Exception:
            self.log.failure("CLIENTID policy failed to record an outcome")
            return defer.succeed(None)
        if record is None:
            if alertSuccess:
                self._alertLogin(decision, context)
            return defer.succeed(None)
        d = self.store.recordOutcome(record)
        d.addCallbacks(
            self._recorded,
            self._recordFailed,
            callbackArgs=(decision, context, alertSuccess),
        )
        return d

    def _event(self, kind: str, decision: Decision, context: _Context, **kw: Any) -> Event:
        return Event(
            kind=kind,
            account=kw.pop("account", context.account),
            typeName=context.typeName if context.digest is not None else None,
            fingerprint=context.fingerprint if context.digest is not None else None,
            address=decision.attempt.address,
            protocol=decision.attempt.protocolName,
            **kw,
        )

    def _record(
        self, decision: Decision, context: _Context, passwordAccepted: bool, succeeded: bool
    ) -> OutcomeRecord | None:
        """
        Everything this outcome changes in the store, or L{None} if nothing.
        """
        account, address = context.account, decision.attempt.address
        operations: list[Operation] = []
        device = None
        scope = [keys.accountScope(account)] if account is not None else []
        if context.used and context.digest is not None:
            scope.append(keys.tokenScope(context.digest))
            device = self._tokenOutcome(decision, context, passwordAccepted, succeeded, operations)
        else:
            if address is not None:
                scope.append(keys.addressScope(address))
            self._anonymousOutcome(decision, context, passwordAccepted, succeeded, operations)
        limits = self.config.limits
        if not passwordAccepted and limits.attackFailuresPerMinute:
            operations.append(
                Bump(
                    keys.ATTACK_FAILURES,
                    60.0,
                    limits.attackFailuresPerMinute,
                    keys.UNDER_ATTACK,
                    limits.lockoutSeconds,
                    Event(
                        "under-attack",
                        detail=f"{limits.attackFailuresPerMinute} failed logins in a minute",
                    ),
                )
            )
        events = []
        if account is not None and "user-log" in context.flags and context.digest is not None:
            events.append(
                self._event(
                    "login" if succeeded else "login-failed",
                    decision,
                    context,
                    detail=None if succeeded else (decision.reason or "wrong password"),
                )
            )
        if device is not None and self._unwritten:
            earlier = self._unwritten.pop((device.account, device.digest), 0)
            if earlier:
                device = evolve(device, earlierLogins=earlier)
        if device is None and not operations and not events:
            return None
        return OutcomeRecord(
            scope=tuple(scope), device=device, operations=tuple(operations), events=tuple(events)
        )

    def _quiet(self, context: _Context) -> bool:
        """
        Whether a successful login would write nothing but the device's
        last-seen time, address and login count, and that time was written
        less than C{last_seen_interval_seconds} ago: then nothing is
        written now.

        A success from a known, approved device records (L{_record}): the
        token's membership of the account's set, a reset of its failure
        count, the device update and, with C{user-log}, an event.  It is
        quiet when the first two would change nothing (already a member
        of the live set; no live count) and there is no event.  Decided
        here, before the record is built, as it is on every such login:
        keep it in step with L{_tokenOutcome}.
        """
        interval = self.config.lastSeenIntervalSeconds
        state = context.state
        if (
            not interval
            or state is None
            or not context.used
            or context.digest is None
            or context.account is None
            or "user-log" in context.flags
            or state.count != 0  # failures to forget (None: the store cannot say)
        ):
            return False
        if self.config.limits.accountsPerToken and not state.setHasMember:
            return False
        known = state.device
        if known is None or known.state != APPROVED or known.lastSeen is None:
            return False
        return bool(self._clock.seconds() - known.lastSeen < interval)

    def _countUnwritten(self, context: _Context) -> None:
        """
        Count a quiet login for the device's next write.
        """
        assert context.account is not None and context.digest is not None
        key = (context.account, context.digest)
        unwritten = self._unwritten
        if len(unwritten) >= _UNWRITTEN_MAX and key not in unwritten:
            unwritten.clear()
        unwritten[key] = unwritten.get(key, 0) + 1

    def _tokenOutcome(
        self,
        decision: Decision,
        context: _Context,
        passwordAccepted: bool,
        succeeded: bool,
        operations: list[Operation],
    ) -> DeviceUpdate | None:
        """
        The outcome of a login with a usable identity: the token's counts,
        the account's unknown-device count, the device record, the owner's
        alert.
        """
        config, limits = self.config, self.config.limits
        window, lockout = limits.windowSeconds, limits.lockoutSeconds
        account, digest, state = context.account, context.digest, context.state
        assert digest is not None
        record = state.device if state is not None else None
        known = record is not None and record.state == APPROVED
        if account is not None and limits.accountsPerToken:
            tooMany = self._event(
                "token-locked",
                decision,
                context,
                account=None,
                detail=f"tried more than {limits.accountsPerToken} accounts",
            )
            operations.append(
                AddMember(
                    keys.tokenAccounts(digest),
                    account,
                    window,
                    limits.accountsPerToken,
                    keys.tokenLocked(digest),
                    lockout,
                    tooMany,
                )
            )
        if not passwordAccepted and limits.deviceFailures:
            locked = self._event(
                "device-locked", decision, context, detail=f"{limits.deviceFailures} failed logins"
            )
            operations.append(
                Bump(
                    keys.deviceFailures(digest),
                    window,
                    limits.deviceFailures,
                    keys.tokenLocked(digest),
                    lockout,
                    locked,
                )
            )
        elif succeeded:
            operations.append(Reset(keys.deviceFailures(digest)))
        if account is None:
            return None
        if not succeeded and not known and limits.unknownDeviceFailures and config.devices != OFF:
            # Without device tracking (off) every device is unknown: closing
            # the account would shut out its owner too.
            closed = self._event(
                "account-closed",
                decision,
                context,
                detail=f"{limits.unknownDeviceFailures} failed logins from unknown devices",
            )
            operations.append(
                Bump(
                    keys.unknownFailures(account),
                    window,
                    limits.unknownDeviceFailures,
                    keys.accountClosed(account),
                    lockout,
                    closed,
                )
            )
        if state is None:
            # Refused before the store was asked (type rules): nothing known
            # about the device to update.
            return None
        if passwordAccepted and not succeeded:
            # Someone has the password but not the device: tell the owner,
            # once a period per device.
            operations.append(
                Once(
                    keys.alerted("device-refused", account, digest),
                    config.alerts.repeatSeconds,
                    self._event("device-refused", decision, context, detail=decision.reason),
                )
            )
        if config.devices == OFF:
            return None
        return self._deviceUpdate(decision, context, record, passwordAccepted, succeeded)

    def _anonymousOutcome(
        self,
        decision: Decision,
        context: _Context,
        passwordAccepted: bool,
        succeeded: bool,
        operations: list[Operation],
    ) -> None:
        """
        The outcome of a login without a usable identity: counted by
        address; an alert if an account that uses CLIENTID logged in
        without.
        """
        config, limits = self.config, self.config.limits
        account, address, state = context.account, decision.attempt.address, context.state
        if address is not None and not passwordAccepted and limits.addressFailures:
            locked = self._event(
                "address-locked",
                decision,
                context,
                account=None,
                detail=f"{limits.addressFailures} failed logins without CLIENTID",
            )
            operations.append(
                Bump(
                    keys.addressFailures(address),
                    limits.windowSeconds,
                    limits.addressFailures,
                    keys.addressLocked(address),
                    limits.lockoutSeconds,
                    locked,
                )
            )
        if (
            succeeded
            and account is not None
            and config.devices == LEARN
            and state is not None
            and state.approvedDevices > 0
        ):
            # The account's clients send CLIENTID; this one did not.
            operations.append(
                Once(
                    keys.alerted("no-clientid-login", account, address or ""),
                    config.alerts.repeatSeconds,
                    self._event("no-clientid-login", decision, context),
                )
            )

    def _deviceUpdate(
        self,
        decision: Decision,
        context: _Context,
        record: Any,
        passwordAccepted: bool,
        succeeded: bool,
    ) -> DeviceUpdate | None:
        assert context.account is not None and context.digest is not None
        account, digest = context.account, context.digest

        def update(**kwargs: Any) -> DeviceUpdate:
            return DeviceUpdate(
                account=account,
                digest=digest,
                typeName=context.typeName or "",
                fingerprint=context.fingerprint or "",
                address=decision.attempt.address,
                protocol=decision.attempt.protocolName,
                succeeded=succeeded,
                **kwargs,
            )

        newDevice = self._event(
            "device-new",
            decision,
            context,
            detail="trusted on first use" if self.config.devices == TOFU else None,
        )
        if record is not None:
            if succeeded and record.state == PENDING:
                # learn, or tofu with room: the pending device is now known.
                return update(promote=APPROVED, promoteFrom=(PENDING,), event=newDevice)
            return update()
        if not passwordAccepted:
            # A wrong password from an unknown device: nothing worth keeping
            # (it may be an attacker's random token).
            return None
        if succeeded:
            return update(create=APPROVED, event=newDevice)
        return update(create=PENDING)

    def _recorded(
        self, result: OutcomeResult, decision: Decision, context: _Context, alertSuccess: bool
    ) -> None:
        self.health.succeeded()
        for event in result.events:
            if self._alertable(event, context):
                self._alert(evolve(Alert.fromEvent(event), systemLog=context.logged))
        if alertSuccess:
            self._alertLogin(decision, context)

    def _recordFailed(self, reason: Failure) -> None:
        self.health.failed(reason)

    def _alertable(self, event: Event, context: _Context) -> bool:
        if event.kind == "device-new":
            return self.config.alerts.newDevice
        if event.kind in _FAILURE_ALERTS:
            return "alert-failure" in context.flags
        return event.kind in _ALWAYS_ALERTS

    def _alertLogin(self, decision: Decision, context: _Context) -> None:
        event = self._event("login", decision, context)
        alert = Alert.fromEvent(evolve(event, time=self._clock.seconds()))
        self._alert(evolve(alert, systemLog=context.logged))

    def _alert(self, alert: Alert) -> None:
        notifyAll(self.alertObservers, alert, self.log)

    def _logRefusal(self, decision: Decision, passwordAccepted: bool) -> None:
        context: _Context = decision.context
        attempt = decision.attempt
        self.log.info(
            "CLIENTID policy refused {account} from {address} over {protocol}: {reason}"
            " ({clientID})",
            policyEvent="refused",
            account=escapeForLog(attempt.account),
            address=attempt.address,
            protocol=attempt.protocolName,
            reason=decision.reason,
            passwordAccepted=passwordAccepted,
            clientIDType=escapeForLog(context.typeName) if context.logged else None,
            clientIDFingerprint=context.fingerprint if context.logged else None,
            clientID=describeClientID(context.typeName, context.fingerprint, context.logged),
            clientIDDebug=context.debug,
        )


def policyFromConfig(
    config: dict[str, Any],
    store: IClientIDStore,
    hasher: IdentityHasher | None,
    alertObservers: Sequence[IAlertObserver] = (),
    clock: Any = None,
    source: object = None,
) -> DevicePolicy:
    """
    The built-in policy configured from a loaded C{clientid.toml}.

    @raise clientid_twisted._configfile.ConfigError: Naming the table and
        key of the first problem in C{[policy]}, C{[limits]},
        C{[types.NAME]}, C{[alerts]} or C{[store]}.
    """
    return DevicePolicy(parsePolicyConfig(config, source), store, hasher, alertObservers, clock)
