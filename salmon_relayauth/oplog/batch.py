"""What the two logs share: lines written in batches, with one ``write`` of whole lines each."""

from __future__ import annotations

import os
from typing import Generic, TypeVar

__all__ = ["LineBatch", "write_all"]

T = TypeVar("T")


class LineBatch(Generic[T]):
    """Lines waiting to be written together. :meth:`add` says when they are due: 64 KiB pending,
    or a second since the last write; the owner also writes them when asked (the relay asks once a
    second, so an idle relay's lines do not wait) and at stop. (Writing per line cost more than the
    policy decision it records.) Not thread-safe: the owner holds its lock."""

    FLUSH_BYTES = 64 << 10
    FLUSH_SECONDS = 1.0

    def __init__(self, now: float) -> None:
        self._items: list[T] = []
        self._size = 0
        self._last = now

    def add(self, item: T, size: int, now: float) -> bool:
        """Keep a line; whether the batch is due now."""
        self._items.append(item)
        self._size += size
        return self._size >= self.FLUSH_BYTES or now - self._last >= self.FLUSH_SECONDS

    def take(self, now: float) -> list[T]:
        """Every pending line, oldest first; the batch starts again empty."""
        items, self._items, self._size, self._last = self._items, [], 0, now
        return items


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
