"""The policy engine: pure functions and indexes over model values (no pluggy, no sockets)."""

from .selection import ConnectorIndex, rank_candidates

__all__ = ["ConnectorIndex", "rank_candidates"]
