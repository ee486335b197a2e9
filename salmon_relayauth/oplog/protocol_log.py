"""The SMTP receive protocol log, in Exchange's format (reference §11).

One CSV line per event (``+`` connect, ``-`` disconnect, ``>`` sent, ``<`` received, ``*``
information) under the ``#Software/#Version/#Log-Type/#Date/#Fields`` header, in files named
``RECVyyyymmdd-N.LOG`` (UTC date). A file is rolled when it reaches ``max_file_size`` or the date
changes; files older than ``max_age`` and the oldest files beyond ``max_directory_size`` are
removed. Message content and credentials are never written.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..model.enums import Right

__all__ = ["FIELDS", "ProtocolLog", "permission_flags"]

FIELDS = "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context"

# The flag names Exchange's "Set Session Permissions" line uses (reference §2.1).
_FLAGS = {
    Right.SMTP_SUBMIT: "SMTPSubmit",
    Right.SMTP_ACCEPT_ANY_RECIPIENT: "SMTPAcceptAnyRecipient",
    Right.SMTP_ACCEPT_ANY_SENDER: "SMTPAcceptAnySender",
    Right.SMTP_ACCEPT_AUTHORITATIVE_DOMAIN_SENDER: "SMTPAcceptAuthoritativeDomainSender",
    Right.SMTP_ACCEPT_AUTHENTICATION_FLAG: "SMTPAcceptAuthenticationFlag",
    Right.SMTP_ACCEPT_EXCH50: "SMTPAcceptEXCH50",
    Right.ACCEPT_HEADERS_ROUTING: "AcceptRoutingHeaders",
    Right.ACCEPT_HEADERS_ORGANIZATION: "AcceptOrganizationHeaders",
    Right.ACCEPT_HEADERS_FOREST: "AcceptForestHeaders",
    Right.BYPASS_ANTI_SPAM: "BypassAntiSpam",
    Right.BYPASS_MESSAGE_SIZE_LIMIT: "BypassMessageSizeLimit",
    Right.SMTP_ACCEPT_XSHADOW: "SMTPAcceptXShadow",
    Right.SMTP_ACCEPT_XPROXYFROM: "SMTPAcceptXProxyFrom",
    Right.SMTP_ACCEPT_XSESSIONPARAMS: "SMTPAcceptXSessionParams",
    Right.SMTP_ACCEPT_XATTR: "SMTPAcceptXAttr",
    Right.SMTP_ACCEPT_XSYSPROBE: "SMTPAcceptXSysProbe",
}


def permission_flags(rights: Iterable[Right]) -> str:
    """``SMTPSubmit SMTPAcceptAnySender ...`` in Exchange's order."""
    granted = set(rights)
    return " ".join(flag for right, flag in _FLAGS.items() if right in granted)


class ProtocolLog:
    """A thread-safe writer of protocol log files in one directory."""

    def __init__(
        self,
        directory: Path,
        *,
        max_file_size: int = 10 << 20,
        max_directory_size: int = 250 << 20,
        max_age: timedelta = timedelta(days=30),
        version: str = "0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_file_size = max_file_size
        self.max_directory_size = max_directory_size
        self.max_age = max_age
        self.version = version
        self._clock = clock
        self._lock = threading.Lock()
        self._file: io.TextIOWrapper | None = None
        self._path: Path | None = None
        self._size = 0  # of the current file, kept here rather than asked of the file system per event
        self._day = ""
        directory.mkdir(parents=True, exist_ok=True)

    def event(
        self,
        connector_id: str,
        session_id: str,
        sequence: int,
        local: str,
        remote: str,
        event: str,
        data: str = "",
        context: str = "",
    ) -> None:
        now = datetime.fromtimestamp(self._clock(), timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerow(
            [stamp, connector_id, session_id, sequence, local, remote, event, _one_line(data), _one_line(context)]
        )
        line = buffer.getvalue()
        with self._lock:
            handle = self._handle(now, len(line))
            handle.write(line)
            handle.flush()
            self._size += len(line)

    def _handle(self, now: datetime, incoming: int) -> io.TextIOWrapper:
        day = now.strftime("%Y%m%d")
        assert self._path is not None or self._file is None
        if self._file is not None and self._path is not None and day == self._day:
            if self._size + incoming <= self.max_file_size:
                return self._file
        if self._file is not None:
            self._file.close()
        self._day = day
        self._path = self._next_path(day)
        self._file = open(self._path, "a", encoding="utf-8", newline="")
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        header = (
            f"#Software: salmon-relayauth\r\n#Version: {self.version}\r\n#Log-Type: SMTP Receive Protocol Log\r\n"
            f"#Date: {stamp}\r\n#Fields: {FIELDS}\r\n"
        )
        self._file.write(header)
        self._size = len(header)
        self._prune(now)
        return self._file

    def _next_path(self, day: str) -> Path:
        number = 1
        while (self.directory / f"RECV{day}-{number}.LOG").exists():
            number += 1
        return self.directory / f"RECV{day}-{number}.LOG"

    def _prune(self, now: datetime) -> None:
        files = sorted(self.directory.glob("RECV*.LOG"), key=lambda path: path.stat().st_mtime)
        oldest_allowed = now.timestamp() - self.max_age.total_seconds()
        kept = []
        for path in files:
            if path != self._path and self.max_age and path.stat().st_mtime < oldest_allowed:
                path.unlink(missing_ok=True)
            else:
                kept.append(path)
        total = sum(path.stat().st_size for path in kept)
        for path in kept:
            if total <= self.max_directory_size or path == self._path:
                break
            total -= path.stat().st_size
            path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")
