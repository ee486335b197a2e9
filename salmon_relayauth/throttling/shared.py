"""Throttling state shared by the worker processes of one machine, in an anonymous shared mapping.

The master process makes one :class:`SharedThrottleArea` before it forks its workers; every worker
then sees the same two fixed-size hash tables, so rate limits and connection caps hold for the whole
machine rather than per worker. No server to run, and a consume costs a few microseconds.

Both tables use open addressing: a key lives in one of the ``window`` slots after its home slot.
Slots are never emptied, only reused (a rate slot once its TAT is past, a connection slot once all
its counts are zero), so a lookup scans the whole window; a slot never used ends the scan early,
because a key is always placed in the first reusable slot of its window. A stable 64-bit hash
(blake2b) names each key: Python's ``hash()`` differs between processes.

One lock covers both tables (:mod:`.process_lock`): it excludes processes and threads, and a
worker that dies holding it blocks no one. A worker killed in the middle of a write leaves at worst
one slot with a stale but well-formed value.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import mmap
import time
from collections.abc import Callable, Sequence

from ..engine.gcra import gcra
from ..engine.limits import ConnectionCounts
from ..model.limits import RateLimit, RateVerdict
from .process_lock import MUTEX_BYTES, process_lock

__all__ = ["SharedConnectionTracker", "SharedThrottleArea", "SharedThrottleStore", "key_hash"]

log = logging.getLogger("salmon_relayauth.throttling")

WARN_EVERY = 30.0  # seconds between two "table full" warnings in one process


@functools.lru_cache(maxsize=8192)
def key_hash(key: str) -> int:
    """A 64-bit hash of ``key``, the same in every process; never 0, which marks a slot never used."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1


class SharedThrottleArea:
    """The shared mapping and its lock; make it once in the master process, before ``os.fork()``
    (an anonymous mapping reaches forked children only, not re-executed ones).

    :param workers: how many worker processes count connections (one column each).
    :param rate_slots: capacity of the rate table (16 bytes a slot).
    :param connection_slots: capacity of the connection table (8 + 4 x workers bytes a slot, rounded up to 8).
    :param window: how many slots after its home slot a key may live in.
    :param clock: seconds; ``time.monotonic`` is one clock for all processes on Linux.
    """

    def __init__(
        self,
        workers: int,
        rate_slots: int = 65_536,
        connection_slots: int = 16_384,
        window: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        sizes = {"workers": workers, "rate_slots": rate_slots, "connection_slots": connection_slots, "window": window}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"SharedThrottleArea: {name} must be at least 1, not {value}")
        self.workers, self.rate_slots, self.connection_slots, self.clock = workers, rate_slots, connection_slots, clock
        self._rate_window, self._connection_window = min(window, rate_slots), min(window, connection_slots)
        self._row = 2 + workers + workers % 2  # int32 cells per connection slot: the u64 hash, the counts, padding
        rate_bytes = 16 * rate_slots
        self._map = mmap.mmap(-1, MUTEX_BYTES + rate_bytes + 4 * self._row * connection_slots, flags=mmap.MAP_SHARED)
        whole = memoryview(self._map)
        self.lock = process_lock(whole[:MUTEX_BYTES])
        # The rate table as u64 words: slot i holds its hash in word 2i and its TAT (a double) in word 2i + 1.
        rate, connections = whole[MUTEX_BYTES : MUTEX_BYTES + rate_bytes], whole[MUTEX_BYTES + rate_bytes :]
        self._rate_hashes, self._rate_tats = rate.cast("Q"), rate.cast("d")
        # The connection table as int32 cells, ``_row`` a slot: the hash in cells 0-1, worker w's count in 2 + w.
        self._connection_hashes, self._counts = connections.cast("Q"), connections.cast("i")
        self._last_warning = -math.inf
        self.acquire, self.release = self.lock.acquire, self.lock.release  # the lock that covers both tables

    def rate_slot(self, h: int, now: float, insert: bool = True) -> tuple[int, bool]:
        """``(slot, found)``: the slot holding ``h``; else, when ``insert``, a free or expired one, else
        (warning) the live slot with the smallest TAT; else -1. Call with the lock held."""
        hashes, tats, capacity = self._rate_hashes, self._rate_tats, self.rate_slots
        home, free, oldest, oldest_tat = h % capacity, -1, -1, math.inf
        for probe in range(self._rate_window):
            slot = (home + probe) % capacity
            held = hashes[2 * slot]
            if held == h:
                return slot, True
            if held == 0:
                return (free if free >= 0 or not insert else slot), False
            if free < 0:
                tat = tats[2 * slot + 1]
                if tat < now:
                    free = slot
                elif tat < oldest_tat:
                    oldest, oldest_tat = slot, tat
        if free >= 0 or not insert:
            return free, False
        self._warn_full("rate table full near one key: forgot the TAT that expires soonest (raise rate_slots)", now)
        return oldest, False

    def connection_slot(self, h: int, insert: bool) -> int:
        """The connection slot holding ``h``; else, when ``insert``, a slot whose counts are all zero,
        else (warning, its counts are lost) the one with the smallest total; else -1. Lock held."""
        hashes, counts, row, workers = self._connection_hashes, self._counts, self._row, self.workers
        capacity = self.connection_slots
        home, free, smallest, smallest_total = h % capacity, -1, -1, math.inf
        for probe in range(self._connection_window):
            slot = (home + probe) % capacity
            held = hashes[slot * row // 2]
            if held == h:
                return slot
            if held == 0:
                free = slot if free < 0 else free
                break
            if free < 0:
                total = sum(counts[slot * row + 2 : slot * row + 2 + workers])
                if total == 0:
                    free = slot
                elif total < smallest_total:
                    smallest, smallest_total = slot, total
        if not insert:
            return -1
        slot = free
        if slot < 0:
            self._warn_full(
                "connection table full near one key: dropped the fewest connections (raise connection_slots)"
            )
            slot = smallest
        for cell in range(slot * row + 2, slot * row + 2 + workers):
            counts[cell] = 0
        hashes[slot * row // 2] = h
        return slot

    def connection_total(self, h: int) -> int:
        """Open connections for ``h`` across all workers. Lock held."""
        slot = self.connection_slot(h, insert=False)
        if slot < 0:
            return 0
        return sum(self._counts[slot * self._row + 2 : slot * self._row + 2 + self.workers])

    def connection_add(self, h: int, worker: int, delta: int) -> None:
        """Add ``delta`` to ``worker``'s count for ``h``, never below zero. Lock held."""
        slot = self.connection_slot(h, insert=delta > 0)
        if slot >= 0:
            cell = slot * self._row + 2 + worker
            self._counts[cell] = max(0, self._counts[cell] + delta)

    def clear_worker(self, index: int) -> None:
        """Forget the connections of worker ``index`` (the master calls this when that worker dies)."""
        self._check_worker(index)
        self.acquire()
        try:
            counts = self._counts
            for cell in range(2 + index, self._row * self.connection_slots, self._row):
                counts[cell] = 0
        finally:
            self.release()

    def close(self) -> None:
        """Unmap the tables in this process (other processes keep theirs)."""
        for view in (self._rate_hashes, self._rate_tats, self._connection_hashes, self._counts):
            view.release()  # the slices they were cast from are gone with __init__
        self.lock.close()
        self._map.close()

    def _check_worker(self, index: int) -> None:
        if not 0 <= index < self.workers:
            raise ValueError(f"worker index must be in 0..{self.workers - 1}, not {index}")

    def _warn_full(self, what: str, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning("shared throttling %s", what)


class SharedThrottleStore:
    """A :class:`~salmon_relayauth.throttling.base.ThrottleStore` on the shared rate table, with the
    semantics of :class:`~salmon_relayauth.throttling.memory.MemoryThrottleStore`."""

    def __init__(self, area: SharedThrottleArea) -> None:
        self.area = area

    async def consume(self, limits: Sequence[RateLimit]) -> RateVerdict:
        return self.consume_now(limits)

    def consume_now(self, limits: Sequence[RateLimit]) -> RateVerdict:
        """All limits are charged, or none; a shadow limit that refuses is reported, not enforced."""
        area, tats = self.area, self.area._rate_tats
        hashes = [key_hash(limit.key) for limit in limits]
        updates: dict[int, float] = {}
        slots: dict[int, int] = {}  # where each key was found, so that charging it needs no second probe
        area.acquire()
        try:
            now = area.clock()  # under the lock: TATs are written in the order of the clock
            for limit, h in zip(limits, hashes):
                if h in updates:
                    tat: float | None = updates[h]
                else:
                    slot, found = area.rate_slot(h, now, insert=False)
                    tat = tats[slot * 2 + 1] if found else None
                    if found:
                        slots[h] = slot
                allowed, new_tat, retry_after = gcra(tat, now, limit.per_minute, limit.burst)
                if not allowed and not limit.shadow:
                    return RateVerdict(limit, retry_after)
                if allowed:
                    updates[h] = new_tat
            for h, new_tat in updates.items():
                slot = slots[h] if h in slots else area.rate_slot(h, now)[0]  # only now: may evict
                tats[2 * slot + 1] = new_tat
                area._rate_hashes[2 * slot] = h
        finally:
            area.release()
        shadowed = next((limit for limit, h in zip(limits, hashes) if limit.shadow and h not in updates), None)
        return RateVerdict(shadowed, 0.0) if shadowed is not None else RateVerdict()

    def tat(self, key: str) -> float | None:
        """The TAT held for ``key``, or None when it is gone or past (for tests and admin views)."""
        self.area.acquire()
        try:
            now = self.area.clock()
            slot, found = self.area.rate_slot(key_hash(key), now, insert=False)
            tat = self.area._rate_tats[2 * slot + 1] if found else None
        finally:
            self.area.release()
        return tat if tat is not None and tat >= now else None

    async def close(self) -> None:
        return None  # the area belongs to the master process, not to one store


class SharedConnectionTracker:
    """Open connections by connector and by (connector, source) on this machine, with the interface
    of :class:`~salmon_relayauth.listener.guard.ConnectionTracker`; this worker counts in its own
    column, so the master can drop a dead worker's connections with ``clear_worker``."""

    def __init__(self, area: SharedThrottleArea, worker_index: int) -> None:
        area._check_worker(worker_index)
        self.area, self.worker_index = area, worker_index

    def counts(self, connector: str, source: str) -> ConnectionCounts:
        keys = _connection_keys(connector, source)
        self.area.acquire()
        try:
            return ConnectionCounts(self.area.connection_total(keys[0]), self.area.connection_total(keys[1]))
        finally:
            self.area.release()

    def opened(self, connector: str, source: str) -> None:
        self._add(connector, source, 1)

    def open_unless(self, connector: str, source: str, refuse: Callable[[ConnectionCounts], bool]) -> bool:
        """Count one more connection unless ``refuse`` says no to the current counts; both under the
        lock, so that workers accepting at the same moment cannot together exceed a cap."""
        keys = _connection_keys(connector, source)
        self.area.acquire()
        try:
            counts = ConnectionCounts(self.area.connection_total(keys[0]), self.area.connection_total(keys[1]))
            if refuse(counts):
                return False
            for h in keys:
                self.area.connection_add(h, self.worker_index, 1)
            return True
        finally:
            self.area.release()

    def closed(self, connector: str, source: str) -> None:
        self._add(connector, source, -1)

    def _add(self, connector: str, source: str, delta: int) -> None:
        keys = _connection_keys(connector, source)
        self.area.acquire()
        try:
            for h in keys:
                self.area.connection_add(h, self.worker_index, delta)
        finally:
            self.area.release()


def _connection_keys(connector: str, source: str) -> tuple[int, int]:
    """Hashes of the two keys; the name's length makes ``("a:b", "c")`` and ``("a", "b:c")`` differ."""
    return key_hash(f"connector:{connector}"), key_hash(f"source:{len(connector)}:{connector}:{source}")
