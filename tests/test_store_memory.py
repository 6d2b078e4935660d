"""
Tests for L{clientid_twisted.store._memory.MemoryStore}: the shared store
suite, and what only it does.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from clientid_twisted.store._memory import MemoryStore
from clientid_twisted.store._records import Bump, OutcomeRecord, StateQuery
from tests.storesuite import StoreTestsMixin


class MemoryStoreTests(StoreTestsMixin, TestCase):
    def makeStore(self, clock: Clock) -> Any:
        return MemoryStore(clock)


class MemoryStoreOnlyTests(SynchronousTestCase):
    def test_answersAtOnce(self) -> None:
        store = MemoryStore(Clock())
        self.successResultOf(store.loadState(StateQuery()))
        self.successResultOf(store.recordOutcome(OutcomeRecord()))

    def test_expiredEntriesSwept(self) -> None:
        """
        Counters of a long simulation do not pile up: expired ones go.
        """
        clock = Clock()
        store = MemoryStore(clock)
        for n in range(10000):
            store.recordOutcome(
                OutcomeRecord(operations=(Bump(f"c{n}", window=10.0, limit=1, lock=f"l{n}", lockSeconds=10.0),))
            )
            clock.advance(1)
        self.assertLess(len(store._counters), 5000)
        self.assertLess(len(store._locks), 5000)

    def test_eventsBounded(self) -> None:
        from clientid_twisted.store._records import Event

        store = MemoryStore(Clock(), maxEvents=3)
        for n in range(5):
            store.recordOutcome(OutcomeRecord(events=(Event(f"e{n}"),)))
        events = self.successResultOf(store.listEvents(None, 10))
        self.assertEqual([e.kind for e in events], ["e2", "e3", "e4"])
