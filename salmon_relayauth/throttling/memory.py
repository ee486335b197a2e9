"""Throttling state in this process: nothing to set up, not shared between relay nodes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from ..engine.gcra import gcra
from ..model.limits import RateLimit, RateVerdict

__all__ = ["MemoryThrottleStore"]


class MemoryThrottleStore:
    """GCRA state per key in a dict; keys are forgotten once their TAT is in the past."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sweep_every: int = 10_000) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()
        self._sweep_every = sweep_every
        self._since_sweep = 0

    async def consume(self, limits: Sequence[RateLimit]) -> RateVerdict:
        return self.consume_now(limits)

    def consume_now(self, limits: Sequence[RateLimit]) -> RateVerdict:
        now = self._clock()
        with self._lock:
            updates: dict[str, float] = {}
            for limit in limits:
                allowed, new_tat, retry_after = gcra(
                    updates.get(limit.key, self._tats.get(limit.key)), now, limit.per_minute, limit.burst
                )
                if not allowed and not limit.shadow:
                    return RateVerdict(limit, retry_after)
                if allowed:
                    updates[limit.key] = new_tat
            self._tats.update(updates)
            self._since_sweep += 1
            if self._since_sweep >= self._sweep_every:
                self._sweep(now)
        shadowed = next((limit for limit in limits if limit.shadow and limit.key not in updates), None)
        return RateVerdict(shadowed, 0.0) if shadowed is not None else RateVerdict()

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        for key in [key for key, tat in self._tats.items() if tat < now]:
            del self._tats[key]

    def __len__(self) -> int:
        return len(self._tats)

    async def close(self) -> None:
        return None
