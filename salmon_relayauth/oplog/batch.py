"""What the two logs share: lines gathered without a lock and written in batches (one ``write`` of
whole lines each), and their time stamps formatted once a second."""

from __future__ import annotations

import os
from collections import deque
from datetime import datetime, timezone

__all__ = ["MILLISECONDS", "LineBatch", "second_stamp", "write_all"]

MILLISECONDS = [f"{number:03d}" for number in range(1000)]  # a line's milliseconds, by table


class LineBatch(deque[str]):
    """Lines waiting to be written together. Adding one is a deque's ``append``, which needs no lock
    (every SMTP command and reply adds lines). Their writer writes them when the second of its time
    stamps changes (it checks that once per line anyway), when its owner asks (the relay asks once a
    second, so an idle relay's lines do not wait) and at stop. (Writing per line cost more than the
    policy decision it records.)"""

    def take(self) -> list[str]:
        """Every pending line, oldest first; what is added meanwhile waits for the next take."""
        return [self.popleft() for _ in range(len(self))]


def second_stamp(second: int) -> tuple[int, str, str]:
    """A second (UTC) as both logs write it: ``(second, "2026-11-28T09:01:12", "20261128")``."""
    moment = datetime.fromtimestamp(second, timezone.utc)
    return second, moment.strftime("%Y-%m-%dT%H:%M:%S"), moment.strftime("%Y%m%d")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
