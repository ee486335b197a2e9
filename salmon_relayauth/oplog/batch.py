"""What the two logs share: lines gathered without a lock and written in batches (one ``write`` of
whole lines each), and their time stamps formatted once a second."""

from __future__ import annotations

import os
from collections import deque
from datetime import datetime, timezone
from typing import TypeVar

__all__ = ["MILLISECONDS", "LineBatch", "second_stamp", "write_all"]

T = TypeVar("T")

MILLISECONDS = [f"{number:03d}" for number in range(1000)]  # a line's milliseconds, by table


class LineBatch(deque[T]):
    """Lines waiting to be written together. Adding one is a deque's ``append``, which needs no lock
    (every SMTP command and reply adds lines); :meth:`due` says when they should be written:
    ``FLUSH_LINES`` pending (about 64 KiB of protocol log), or a second since the last write. The
    owner also writes them when asked (the relay asks once a second, so an idle relay's lines do not
    wait) and at stop. (Writing per line cost more than the policy decision it records.)"""

    FLUSH_LINES = 512
    FLUSH_SECONDS = 1.0

    def __init__(self, now: float) -> None:
        super().__init__()
        self.taken_at = now

    def due(self, now: float) -> bool:
        return len(self) >= self.FLUSH_LINES or now - self.taken_at >= self.FLUSH_SECONDS

    def take(self, now: float) -> list[T]:
        """Every pending line, oldest first; what is added meanwhile waits for the next take."""
        self.taken_at = now
        return [self.popleft() for _ in range(len(self))]


def second_stamp(second: int) -> tuple[int, str, str]:
    """A second (UTC) as both logs write it: ``(second, "2026-11-28T09:01:12", "20261128")``."""
    moment = datetime.fromtimestamp(second, timezone.utc)
    return second, moment.strftime("%Y-%m-%dT%H:%M:%S"), moment.strftime("%Y%m%d")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
