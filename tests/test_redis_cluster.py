# -*- test-case-name: tests.test_redis_cluster -*-
"""
Whether the Redis store's key layout would run on Redis Cluster
(docs/frontends.md, "Redis Cluster"): Cluster runs a script only if every
key it touches hashes to one slot.  Real logins go through the real policy
on a real Redis; the keys they leave are hashed by a real cluster-mode
C{redis-server} (C{CLUSTER KEYSLOT}).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from clientid_twisted.store import openStore
from tests.policyharness import ALICE, BOB, PolicyHarness
from tests.redisserver import RedisServer, sharedRedisServer, uniquePrefix

ACCOUNT_FAMILIES = ("devices:", "approved:", "events:", "lock:account-closed:", "n:unknown-failures:")
"""The families of keys named after one account."""


class ClusterLayoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.prefix = uniquePrefix(self)
        store = openStore(
            f"{sharedRedisServer().url}?prefix={self.prefix}", None, blocking=True
        )
        self.addCleanup(store.close)
        self.harness = PolicyHarness(self, {"limits": {"device_failures": 2}}, store=store)
        self.cluster = RedisServer(cluster=True).start()
        self.addCleanup(self.cluster.cleanUp)

    def decisionKeys(self) -> list[str]:
        """
        The keys a few ordinary decisions leave: a new device learned, a
        known one, wrong passwords from another device until it is locked,
        a login without CLIENTID.
        """
        h = self.harness
        self.assertEqual(h.login(ALICE, "laptop"), "ok")
        self.assertEqual(h.login(ALICE, "laptop"), "ok")
        for n in range(2):
            self.assertEqual(h.login(ALICE, "stranger", password="wrong"), "refused")
        self.assertEqual(h.login(BOB, None, password="wrong"), "refused")
        raw = sharedRedisServer().reply("KEYS", self.prefix + "*")
        return sorted(k.decode("utf-8")[len(self.prefix):] for k in raw)

    def slot(self, key: str) -> int:
        return int(self.cluster.reply("CLUSTER", "KEYSLOT", key))

    def test_layoutSpansSlots(self) -> None:
        """
        As the keys are named today (no hash tags), one account's keys fall
        in different slots: the decision scripts could not run on Cluster.
        """
        keys = self.decisionKeys()
        alice = [self.prefix + k for k in keys if k.endswith(":" + ALICE)]
        self.assertGreaterEqual(len(alice), 3, keys)
        self.assertGreater(len({self.slot(k) for k in alice}), 1)

    def test_accountTagsAreNotEnough(self) -> None:
        """
        With a hash tag per account (C{P{ACCOUNT}devices}...) the account's
        own keys would share one slot, but a decision also touches keys
        named after the token, the address and the server (counters,
        locks, the token's accounts, the global event list), which fall
        elsewhere: the exact families docs/frontends.md lists.
        """
        keys = self.decisionKeys()

        def tagged(key: str) -> str:
            for family in ACCOUNT_FAMILIES:
                if key.startswith(family):
                    account = key[len(family):]
                    return f"{self.prefix}{{{account}}}{family}"
            return self.prefix + key

        accountSlots = {self.slot(tagged(k)) for k in keys if k.endswith(":" + ALICE)}
        self.assertEqual(len(accountSlots), 1)
        [aliceSlot] = accountSlots
        elsewhere = sorted(
            {k.split(":", 2)[0] + ":" + k.split(":", 2)[1] if k.count(":") >= 2 else k.split(":")[0]
             for k in keys if not k.endswith(":" + ALICE) and not k.endswith(":" + BOB)
             and self.slot(tagged(k)) != aliceSlot}
        )
        self.assertEqual(elsewhere, EXPECTED_ELSEWHERE, keys)


EXPECTED_ELSEWHERE = [
    "events",
    "lock:token-locked",
    "n:address-failures",
    "n:device-failures",
    "set:token-accounts",
]
"""Key families of one account's decisions outside the account's slot."""
