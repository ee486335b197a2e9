"""Throttling state: in this process (default) or shared through Redis by several relay nodes."""

from .base import ThrottleStore
from .memory import MemoryThrottleStore

__all__ = ["MemoryThrottleStore", "ThrottleStore"]
