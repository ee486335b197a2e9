"""The generic cell rate algorithm: a smooth limit with a burst allowance, no window edges.

State is one number per key, the theoretical arrival time (TAT) of the next request. A request at
``now`` is allowed when ``TAT - now <= tolerance``; it then moves TAT one emission interval later.
Unlike fixed windows, no pattern of requests gets twice the rate across a window boundary.
"""

from __future__ import annotations

__all__ = ["gcra"]


def gcra(tat: float | None, now: float, per_minute: int, burst: int, cost: int = 1) -> tuple[bool, float, float]:
    """``(allowed, new_tat, retry_after)`` for one request of ``cost`` units at time ``now`` (seconds).

    ``per_minute`` units are allowed per minute on average and up to ``burst`` at once.
    """
    interval = 60.0 / per_minute
    tolerance = interval * (burst - 1)
    start = now if tat is None or tat < now else tat
    new_tat = start + interval * cost
    allowed_at = new_tat - tolerance - interval
    if allowed_at > now + 1e-9:
        return False, start, allowed_at - now
    return True, new_tat, 0.0
