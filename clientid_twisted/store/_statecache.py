# -*- test-case-name: tests.test_store_sqlite -*-
"""
Answers to L{StateQuery}s kept in memory between decisions, so that a login
from a known device need not read the SQLite file again.

An answer is kept until the first of these:

    - the time runs out: the end of the first of its live locks, counter
      or set to expire (L{clientid_twisted.store._sqlops.loadStateUntil}),
      after which the same rows say something else without anyone writing
      them;
    - this process writes something the answer read (L{forgetOutcome}
      names what an outcome changed; any other write forgets everything);
    - another process commits to the file: the store compares SQLite's
      C{PRAGMA data_version} before every use and calls L{clear}.

Why not C{functools.lru_cache} or C{cachetools}: what an entry depends on
(its account, lock and counter keys) must be forgotten by name when a
write touches it, which neither offers.
"""

from __future__ import annotations

from typing import Iterable

from clientid_twisted.store._records import (
    AddMember,
    Bump,
    DecisionState,
    Once,
    OutcomeRecord,
    OutcomeResult,
    Reset,
    StateQuery,
)

__all__ = ["StateCache"]


def _readNames(query: StateQuery) -> list[object]:
    """
    What a query's answer depends on: its account's devices, its lock,
    set and counter keys.
    """
    names: list[object] = list(query.locks)
    if query.account is not None:
        names.append(("devices", query.account))
    if query.windowSet is not None:
        names.append(query.windowSet)
    if query.counter is not None:
        names.append(query.counter)
    return names


def _writtenNames(record: OutcomeRecord, result: OutcomeResult) -> Iterable[object]:
    """
    What applying C{record} may have changed, by the names of
    L{_readNames}.  Locks a count extended rather than set need no name:
    an answer holding the lock is kept only until its old end anyway.
    """
    if record.device is not None:
        yield ("devices", record.device.account)
    for operation in record.operations:
        if isinstance(operation, (Bump, Reset)):
            yield operation.counter
        elif isinstance(operation, AddMember):
            yield operation.key
        elif isinstance(operation, Once):
            yield operation.marker
    yield from result.locked


class StateCache:
    """
    At most C{size} answers; when full, it starts again empty (cheaper than
    tracking recency, and a server's active devices fit many times over).

    A write stamps the names it touched with a new write number; an answer
    holds while none of the names it read was stamped after it was read
    (cheaper in memory than an index from names to answers).

    @ivar hits: Answers served from memory (a figure for tests and
        benchmarks).
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.hits = 0
        self._answers: dict[StateQuery, tuple[DecisionState, float, int]] = {}
        self._written: dict[object, int] = {}
        self._writes = 0

    def get(self, query: StateQuery, now: float) -> DecisionState | None:
        """
        The kept answer to C{query} if it still holds at C{now}.
        """
        answer = self._answers.get(query)
        if answer is None:
            return None
        state, until, stamp = answer
        if until <= now:
            return None
        written = self._written
        if written:
            for name in _readNames(query):
                if written.get(name, -1) > stamp:
                    return None
        self.hits += 1
        return state

    def put(self, query: StateQuery, state: DecisionState, until: float) -> None:
        """
        Keep C{state}, read just now, as the answer to C{query} until
        C{until}.
        """
        if self.size <= 0:
            return
        if len(self._answers) >= self.size and query not in self._answers:
            self.clear()
        self._answers[query] = (state, until, self._writes)

    def forgetOutcome(self, record: OutcomeRecord, result: OutcomeResult) -> None:
        """
        Forget the answers that C{record}, just applied, may have changed.
        """
        if not self._answers:
            return
        if len(self._written) >= 4 * self.size:
            self.clear()
            return
        self._writes += 1
        for name in _writtenNames(record, result):
            self._written[name] = self._writes

    def clear(self) -> None:
        """
        Forget everything.
        """
        self._answers.clear()
        self._written.clear()
