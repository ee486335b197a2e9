"""The throttling store a configuration asks for (``[throttling] backend``)."""

from __future__ import annotations

from ..model.connector import RelayConfig
from .gate import ThrottleGate
from .base import ThrottleStore
from .memory import MemoryThrottleStore
from .shared import SharedThrottleArea, SharedThrottleStore

__all__ = ["throttle_gate"]


def throttle_gate(config: RelayConfig, area: SharedThrottleArea | None = None) -> ThrottleGate:
    """In-process state by default, or state shared by the worker processes of this machine when
    they run (``area``); Redis when ``backend = "redis"``, with the local state as the fallback
    while it is down."""
    settings = config.throttling
    local: ThrottleStore = MemoryThrottleStore() if area is None else SharedThrottleStore(area)
    if settings.backend == "redis":
        from .redis_store import RedisThrottleStore  # the redis client is an optional dependency

        assert settings.redis_url is not None
        return ThrottleGate(RedisThrottleStore(settings.redis_url), local)
    return ThrottleGate(local)
