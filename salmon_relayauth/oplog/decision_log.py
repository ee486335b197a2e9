"""The decision log: one JSON object per line for every policy decision, so an operator can answer
"why was this relayed?" and "why was this refused?" from the log alone."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..model.decision import Decision

__all__ = ["DecisionLog"]


class DecisionLog:
    """Appends decisions to ``path`` (line-buffered; one write per decision)."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8", buffering=1)

    def record(self, decision: Decision, *, command: str, **context: Any) -> None:
        """One line: time, the context given (session, client, connector, principals, ...), the
        command, the reply, its reason and the plugin that decided."""
        entry = {
            "time": datetime.fromtimestamp(self._clock(), timezone.utc).isoformat(timespec="milliseconds"),
            **context,
            "command": command,
            "decision": decision.render(),
            "code": decision.code,
            "reason": decision.reason,
            "source": decision.source,
        }
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self._file.write(line)

    def close(self) -> None:
        with self._lock:
            self._file.close()
