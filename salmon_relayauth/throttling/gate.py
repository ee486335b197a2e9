"""Charging rate limits to the configured store, and what happens when that store is down."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

from ..model.decision import Decision
from ..model.enums import BackendFailure
from ..model.limits import RateLimit, RateVerdict
from .base import ThrottleStore, ThrottleUnavailable

__all__ = ["ThrottleGate"]

log = logging.getLogger("salmon_relayauth.throttling")
_UNAVAILABLE = Decision(451, "4.3.2", "System not accepting network messages", "", "relayauth.throttling")


class ThrottleGate:
    """The store in use plus a local fallback for when a shared store cannot be reached.

    While Redis is down, a connector with ``throttling_backend_failure = "LocalLimits"`` (the default)
    keeps serving with limits counted on this machine only; one with ``"Refuse"`` answers
    ``451 4.3.2`` so clients retry later. Either way the log says so (at most every 30 seconds).
    """

    # After a failure the store is left alone this long, so an unreachable Redis host does not cost
    # every MAIL FROM a network timeout.
    RETRY_AFTER = 1.0

    def __init__(self, store: ThrottleStore, fallback: ThrottleStore | None = None) -> None:
        self.store = store
        self.fallback = fallback
        self._last_warning = 0.0
        self._down_until = 0.0
        self._down_error = ThrottleUnavailable("")

    async def consume(self, limits: Sequence[RateLimit], failure: BackendFailure) -> RateVerdict:
        if not limits:
            return RateVerdict()
        try:
            if self.fallback is not None and time.monotonic() < self._down_until:
                raise self._down_error
            return await self.store.consume(limits)
        except ThrottleUnavailable as error:
            if self.fallback is None:
                raise
            if time.monotonic() >= self._down_until:
                self._down_until = time.monotonic() + self.RETRY_AFTER
                self._down_error = error
            self._warn(error, failure)
            if failure is BackendFailure.REFUSE:
                refusal = replace(_UNAVAILABLE, reason=f"throttling store unavailable: {error}")
                return RateVerdict(RateLimit("", 1, 1, refusal, "throttling_backend_failure"), 0.0, degraded=True)
            return replace(await self.fallback.consume(limits), degraded=True)

    def _warn(self, error: ThrottleUnavailable, failure: BackendFailure) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 30:
            self._last_warning = now
            what = "refusing messages (451)" if failure is BackendFailure.REFUSE else "counting limits in this process only"
            log.warning("throttling store unavailable (%s): %s", error, what)

    async def close(self) -> None:
        await self.store.close()
