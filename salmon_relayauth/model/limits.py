"""Throttling values: a rate limit to enforce, and what checking it found."""

from __future__ import annotations

from dataclasses import dataclass

from .decision import Decision

__all__ = ["RateLimit", "RateVerdict"]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """One smooth rate limit (GCRA) on one key.

    :param key: what is counted, e.g. ``message_rate:Anonymous Relay:ip:192.0.2.10``.
    :param per_minute: the sustained rate.
    :param burst: how many may come at once after a quiet period (the bucket's size).
    :param decision: the reply when the limit is exceeded.
    :param name: the configuration setting it comes from, for logs.
    :param shadow: only log what would have been refused.
    """

    key: str
    per_minute: int
    burst: int
    decision: Decision
    name: str
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """The outcome of consuming from a set of limits: all were consumed, or none was.

    :param exceeded: the first limit that refused (None when all allowed).
    :param retry_after: seconds until that limit would allow one more.
    :param degraded: the shared store was unreachable and local counting was used.
    """

    exceeded: RateLimit | None = None
    retry_after: float = 0.0
    degraded: bool = False
