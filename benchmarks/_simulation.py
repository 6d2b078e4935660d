"""
The brute-force simulation: honest users and credential-stuffing bots
behind one carrier-grade NAT address, on simulated time.

Every login goes through the project's real
L{clientid_twisted.policy._checker.ClientIDChecker} in front of a password
checker (a dict of passwords, so a simulated day runs in seconds), with the
real L{clientid_twisted.policy._engine.DevicePolicy} on a
L{clientid_twisted.store._memory.MemoryStore}, all on one
L{twisted.internet.task.Clock}.  Nothing of the policy is re-implemented
here; the baselines (no protection, address lockout) are
L{IClientIDPolicy} providers in L{benchmarks._baselines}.

The model:

    - C{accounts} accounts, each with 1-3 honest devices (a CLIENTID token
      each) that log in every 5-15 minutes (uniformly) for C{hours}, from
      the shared address.  Honest users type the right password.
    - C{bots} bots replay C{pairs} leaked account/password pairs, a fraction
      C{rightFraction} of them right, each bot one attempt every
      C{botInterval} seconds from C{attackStart}.  The accounts in the
      list are the server's, drawn uniformly.  A refusal looks like a wrong
      password, so a refused pair is spent; a refused I{connection} (the
      fail2ban baseline drops a banned address's packets) is visible, so
      the bot puts that pair back and tries again later.
    - Attacker variants: no CLIENTID; one fixed token per bot; a fresh
      random token on every attempt; and the last spread over
      C{spreadAddresses} addresses (a botnet or proxy pool).
    - Device modes (learn, tofu, allowlist) start from an enrolment period
      of C{enrolSeconds} in learn mode on the same store (the documented
      way to switch a server to tofu or allowlist: its users' devices are
      known and approved); the measured day starts after it.
"""

from __future__ import annotations

import collections
import heapq
import random
import time
from typing import Any

from attrs import asdict, frozen
from zope.interface import implementer

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from benchmarks._baselines import AddressLockoutPolicy, OpenPolicy, RememberingPolicy
from clientid_twisted.cred import identifyCredentials
from clientid_twisted._fingerprint import IdentityHasher
from clientid_twisted._identity import ClientIdentity
from clientid_twisted.interfaces import IAlertObserver
from clientid_twisted.policy._checker import ClientIDChecker
from clientid_twisted.policy._engine import policyFromConfig
from clientid_twisted.store._memory import MemoryStore

__all__ = ["Scenario", "STRATEGIES", "VARIANTS", "runCell"]

STRATEGIES = ("none", "address-lockout", "learn", "tofu", "allowlist")
VARIANTS = ("no-clientid", "fixed-token", "random-token", "spread-1000")

START = 1_700_000_000.0
NAT_ADDRESS = "100.64.0.1"
ALERTS_FOR_COMPROMISE = frozenset({"device-new", "no-clientid-login", "login"})
"""Alerts that tell an owner someone logged in to the account."""


@frozen
class Scenario:
    """
    The simulation's settings (see the module docstring).
    """

    accounts: int = 500
    hours: float = 24.0
    minDevices: int = 1
    maxDevices: int = 3
    minInterval: float = 300.0
    maxInterval: float = 900.0
    bots: int = 20
    pairs: int = 10_000
    rightFraction: float = 0.05
    botInterval: float = 15.0
    attackStart: float = 3600.0
    spreadAddresses: int = 1000
    enrolSeconds: float = 3600.0
    seed: int = 7


@implementer(ICredentialsChecker)
class DictChecker:
    """
    A password checker that costs next to nothing: a dict of passwords.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, passwords: dict[bytes, bytes]) -> None:
        self.passwords = passwords

    def requestAvatarId(self, credentials: Any) -> defer.Deferred[bytes]:
        if self.passwords.get(credentials.username) == credentials.password:
            return defer.succeed(credentials.username)
        return defer.fail(UnauthorizedLogin())


@implementer(IAlertObserver)
class CountingObserver:
    """
    Keeps every alert raised.
    """

    def __init__(self) -> None:
        self.alerts: list[Any] = []

    def alertRaised(self, alert: Any) -> None:
        self.alerts.append(alert)


class _World:
    """
    The accounts, their devices and the leaked list, drawn from the seed
    (the same for every strategy and variant).
    """

    def __init__(self, scenario: Scenario) -> None:
        rng = random.Random(scenario.seed)
        self.accounts = [f"user{n}@example.test" for n in range(scenario.accounts)]
        self.passwords = {
            a.encode(): f"pw-{rng.getrandbits(64):016x}".encode() for a in self.accounts
        }
        self.devices: list[tuple[str, str]] = []
        for account in self.accounts:
            for _ in range(rng.randint(scenario.minDevices, scenario.maxDevices)):
                self.devices.append((account, _token(rng)))
        right = set(rng.sample(range(scenario.pairs), round(scenario.pairs * scenario.rightFraction)))
        self.pairs: list[tuple[str, bytes]] = []
        for n in range(scenario.pairs):
            account = rng.choice(self.accounts)
            password = self.passwords[account.encode()] if n in right else f"leak-{n}".encode()
            self.pairs.append((account, password))


def _token(rng: random.Random) -> str:
    return "%08x-%04x-%04x-%04x-%012x" % (
        rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(16),
        rng.getrandbits(16), rng.getrandbits(48),
    )


class _Stack:
    """
    One strategy's checker, policy and store on the simulation's clock.
    """

    def __init__(self, strategy: str, clock: Clock, passwords: dict[bytes, bytes]) -> None:
        self.clock = clock
        self.observer = CountingObserver()
        self.store: MemoryStore | None = None
        self.lockout: AddressLockoutPolicy | None = None
        inner = DictChecker(passwords)
        if strategy == "none":
            policy: Any = OpenPolicy()
        elif strategy == "address-lockout":
            policy = self.lockout = AddressLockoutPolicy(clock)
        else:
            self.store = MemoryStore(clock)
            self.hasher = IdentityHasher(b"bench-key-" * 4)
            policy = self._devicePolicy(strategy, self.observer)
        self.policy = RememberingPolicy(policy)
        self.checker = ClientIDChecker(inner, self.policy)
        self.inner = inner

    def _devicePolicy(self, strategy: str, observer: Any) -> Any:
        # "learn+attack60": learn with attack_failures_per_minute = 60.
        mode, _, extra = strategy.partition("+attack")
        config: dict[str, Any] = {"policy": {"devices": mode}}
        if extra:
            config["limits"] = {"attack_failures_per_minute": int(extra)}
        return policyFromConfig(config, self.store, self.hasher, [observer], self.clock)

    def enrolling(self) -> ClientIDChecker:
        """
        A learn-mode checker on the same store, for the enrolment period
        (the baselines keep nothing: their own checker).
        """
        if self.store is None:
            return self.checker
        return ClientIDChecker(self.inner, self._devicePolicy("learn", CountingObserver()))

    def connectionRefused(self, address: str) -> bool:
        return self.lockout is not None and self.lockout.banned(address)


def _login(
    checker: ClientIDChecker, account: str, password: bytes, token: str | None, address: str
) -> bool:
    identity = ClientIdentity("UUID", token) if token is not None else None
    credentials = identifyCredentials(
        UsernamePassword(account.encode(), password),
        identity,
        IPv4Address("TCP", address, 40000),
        "imap",
        True,
    )
    results: list[Any] = []
    checker.requestAvatarId(credentials).addBoth(results.append)
    assert len(results) == 1, "a login did not finish on the memory store"
    result = results[0]
    if isinstance(result, bytes):
        return True
    if result.check(UnauthorizedLogin):
        return False
    result.raiseException()
    raise AssertionError("unreachable")


def runCell(strategy: str, variant: str, scenario: Scenario) -> dict[str, Any]:
    """
    Simulate one strategy against one attacker variant.

    @return: The figures for the grid (the contract's four keys and
        details).
    """
    started = time.perf_counter()
    world = _World(scenario)
    # Separate streams: the honest schedule is the same in every cell.
    honestRng = random.Random(f"{scenario.seed}/honest")
    rng = random.Random(f"{scenario.seed}/{variant}/attack")
    clock = Clock()
    clock.advance(START)
    stack = _Stack(strategy, clock, world.passwords)
    events: list[tuple[float, int, int, int]] = []
    sequence = 0

    def schedule(when: float, kind: int, who: int) -> None:
        nonlocal sequence
        sequence += 1
        heapq.heappush(events, (when, sequence, kind, who))

    def run(until: float, checker: ClientIDChecker, measured: bool) -> None:
        while events and events[0][0] < until:
            when, _, kind, who = heapq.heappop(events)
            clock.advance(when - clock.seconds())
            if kind == HONEST:
                honestLogin(who, checker, measured)
                schedule(when + honestRng.uniform(scenario.minInterval, scenario.maxInterval), HONEST, who)
            elif attack(who, checker):
                schedule(when + scenario.botInterval, BOT, who)
        clock.advance(until - clock.seconds())

    honest = collections.Counter()
    honestRefusals: collections.Counter[str] = collections.Counter()
    attackerRefusals: collections.Counter[str] = collections.Counter()

    def honestLogin(who: int, checker: ClientIDChecker, measured: bool) -> None:
        account, token = world.devices[who]
        if stack.connectionRefused(NAT_ADDRESS):
            ok, reason = False, "connection refused (address banned)"
        else:
            ok = _login(checker, account, world.passwords[account.encode()], token, NAT_ADDRESS)
            last = stack.policy.last
            reason = (last.reason if last is not None else "") or "wrong password"
        if measured:
            honest["attempts"] += 1
            honest["ok"] += ok
            if not ok:
                honestRefusals[reason] += 1

    queue = collections.deque(world.pairs)
    botTokens = [_token(rng) for _ in range(scenario.bots)]
    compromised: dict[str, float] = {}
    attacker = collections.Counter()

    def attack(bot: int, checker: ClientIDChecker) -> bool:
        """
        One attempt by C{bot}; L{False} when the list is spent.
        """
        if not queue:
            return False
        account, password = queue.popleft()
        if variant == "spread-1000":
            address = f"198.18.{(n := rng.randrange(scenario.spreadAddresses)) // 256}.{n % 256}"
        else:
            address = NAT_ADDRESS
        if stack.connectionRefused(address):
            queue.append((account, password))
            attacker["connections_refused"] += 1
            return True
        token = {
            "no-clientid": None,
            "fixed-token": botTokens[bot],
        }.get(variant, _token(rng))
        attacker["attempts"] += 1
        right = password == world.passwords[account.encode()]
        attacker["right_passwords"] += right
        if _login(checker, account, password, token, address):
            attacker["logins"] += 1
            compromised.setdefault(account, clock.seconds())
        elif right:
            last = stack.policy.last
            attackerRefusals[(last.reason if last is not None else "") or "?"] += 1
        return True

    for who in range(len(world.devices)):
        schedule(clock.seconds() + honestRng.uniform(0, scenario.maxInterval), HONEST, who)
    if scenario.enrolSeconds > 0:
        run(clock.seconds() + scenario.enrolSeconds, stack.enrolling(), measured=False)
    dayStart = clock.seconds()
    for bot in range(scenario.bots):
        schedule(dayStart + scenario.attackStart + bot * scenario.botInterval / scenario.bots, BOT, bot)
    run(dayStart + scenario.hours * 3600, stack.checker, measured=True)

    alerts = stack.observer.alerts
    alerted = {
        a.account
        for a in alerts
        if a.kind in ALERTS_FOR_COMPROMISE and a.account in compromised
        and a.time >= compromised[a.account]
    }
    return {
        "strategy": strategy,
        "variant": variant,
        "honest_success_rate": honest["ok"] / honest["attempts"] if honest["attempts"] else 1.0,
        "compromised_accounts": len(compromised),
        "attacker_logins": attacker["logins"],
        "alerts_raised": len(alerts),
        "compromises_alerted": len(alerted),
        "honest_attempts": honest["attempts"],
        "honest_refusals": dict(honestRefusals.most_common()),
        "attacker_attempts": attacker["attempts"],
        "attacker_right_passwords": attacker["right_passwords"],
        "attacker_right_password_refusals": dict(attackerRefusals.most_common()),
        "attacker_connections_refused": attacker["connections_refused"],
        "pairs_left": len(queue),
        "alert_kinds": dict(collections.Counter(a.kind for a in alerts).most_common()),
        "seconds": round(time.perf_counter() - started, 2),
    }


HONEST, BOT = 0, 1


def scenarioDict(scenario: Scenario) -> dict[str, Any]:
    return asdict(scenario)
