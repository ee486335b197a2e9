"""The interface every throttling store implements (and the shared test suite checks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..model.limits import RateLimit, RateVerdict

__all__ = ["ThrottleStore", "ThrottleUnavailable"]


class ThrottleUnavailable(RuntimeError):
    """The store cannot be reached (Redis down); the message names the store."""


class ThrottleStore(Protocol):
    """Counts rate-limited events. ``consume`` is atomic over all the limits it is given: either
    every limit allows one more and all are charged, or none is charged."""

    async def consume(self, limits: Sequence[RateLimit]) -> RateVerdict: ...

    async def close(self) -> None: ...
