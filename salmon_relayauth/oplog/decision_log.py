"""The decision log: one JSON object per line for every policy decision, so an operator can answer
"why was this relayed?" and "why was this refused?" from the log alone."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model.decision import Decision
from .batch import MILLISECONDS, LineBatch, second_stamp, write_all

__all__ = ["DecisionLog"]


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json.dumps would make one per call


class DecisionLog:
    """Appends decisions to ``path``, one JSON line each, written in batches like the protocol log's
    (see :class:`LineBatch`): when a decision of a later second comes, at most a second after they
    were made (:meth:`flush`, which the relay calls every second), and on :meth:`close`. The file is
    opened for appending and every batch is one ``write`` of whole lines, so the relay's worker
    processes may share it."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._pending = LineBatch()
        self._second = second_stamp(0)  # replaced whole once a second

    def record(self, decision: Decision, *, command: str, **context: Any) -> None:
        """One line: time, the context given (session, client, connector, principals, ...), the
        command, the reply, its reason and the plugin that decided."""
        now = self._clock()
        second = int(now)
        stamp = self._second
        if stamp[0] != second:  # write the lines of the seconds before
            self.flush()
            stamp = self._second = second_stamp(second)
        entry = {
            "time": f"{stamp[1]}.{MILLISECONDS[int((now - second) * 1000)]}+00:00",
            **context,
            "command": command,
            "decision": decision.render(),
            "code": decision.code,
            "reason": decision.reason,
            "source": decision.source,
        }
        self._pending.append(_ENCODER.encode(entry) + "\n")

    def flush(self) -> None:
        """Write every pending line."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        lines = self._pending.take()
        if lines and self._fd is not None:
            write_all(self._fd, "".join(lines).encode("utf-8"))

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
