"""The throttling store a configuration asks for (``[throttling] backend``)."""

from __future__ import annotations

from ..model.connector import RelayConfig
from .gate import ThrottleGate
from .memory import MemoryThrottleStore

__all__ = ["throttle_gate"]


def throttle_gate(config: RelayConfig) -> ThrottleGate:
    """In-process state by default; Redis (with an in-process fallback while it is down) when
    ``backend = "redis"``."""
    settings = config.throttling
    if settings.backend == "redis":
        from .redis_store import RedisThrottleStore  # the redis client is an optional dependency

        assert settings.redis_url is not None
        return ThrottleGate(RedisThrottleStore(settings.redis_url), MemoryThrottleStore())
    return ThrottleGate(MemoryThrottleStore())
