"""The SMTP receive protocol log, in Exchange's format (reference §11).

One CSV line per event (``+`` connect, ``-`` disconnect, ``>`` sent, ``<`` received, ``*``
information) under the ``#Software/#Version/#Log-Type/#Date/#Fields`` header, in files named
``RECVyyyymmdd-N.LOG`` (UTC date). A file is rolled when it reaches ``max_file_size`` or the date
changes; files older than ``max_age`` and the oldest files beyond ``max_directory_size`` are
removed. Message content and credentials are never written.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..model.enums import Right
from .batch import MILLISECONDS, LineBatch, second_stamp, write_all

__all__ = ["FIELDS", "ProtocolLog", "permission_flags", "session_fields"]

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
    return _flags_of(frozenset(rights))


@functools.lru_cache(maxsize=256)
def _flags_of(granted: frozenset[Right]) -> str:  # sessions of a connector share their rights
    return " ".join(flag for right, flag in _FLAGS.items() if right in granted)


class ProtocolLog:
    """A thread-safe writer of protocol log files in one directory.

    Lines are buffered and written in batches (one ``write`` for many events, see
    :class:`LineBatch`): at most a second after the event (:meth:`flush`, which the relay calls every
    second), every ``LineBatch.FLUSH_LINES`` lines, and on :meth:`close`. Files are opened for
    appending, so the relay's worker processes may share them. Every SMTP command and reply of a
    Verbose connector makes a line: adding one takes no lock and no helper call unless the text
    needs quoting; the lock guards the files.
    """

    FLUSH_SECONDS = LineBatch.FLUSH_SECONDS

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
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # of the current file, kept here rather than asked of the file system per line
        self._day = ""
        self._pending: LineBatch[tuple[str, str]] = LineBatch(clock())  # (day, line)
        self._second = second_stamp(0)  # replaced whole once a second
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
        self.session_event(session_fields(connector_id, session_id, local, remote), sequence, event, data, context)

    def session_event(self, fields: tuple[str, str], sequence: int, event: str, data: str = "", context: str = "") -> None:
        """:meth:`event` with a session's constant fields already made by :func:`session_fields`."""
        if data and ("," in data or '"' in data or "\r" in data or "\n" in data):
            data = _csv_field(_one_line(data))
        if context and ("," in context or '"' in context or "\r" in context or "\n" in context):
            context = _csv_field(_one_line(context))
        now = self._clock()
        second = int(now)
        stamp = self._second
        if stamp[0] != second:
            stamp = self._second = second_stamp(second)
        millisecond = MILLISECONDS[int((now - second) * 1000)]
        line = f"{stamp[1]}.{millisecond}Z,{fields[0]}{sequence}{fields[1]}{event},{data},{context}\r\n"
        self._pending.append((stamp[2], line))
        if self._pending.due(now):
            self.flush()

    def flush(self) -> None:
        """Write every pending line."""
        with self._lock:
            self._flush(self._clock())

    def _flush(self, now: float) -> None:
        chunk: list[str] = []
        chunk_size = 0
        for day, line in self._pending.take(now):
            size = len(line.encode("utf-8")) if not line.isascii() else len(line)
            if day != self._day or self._fd is None or self._size + chunk_size + size > self.max_file_size:
                self._write("".join(chunk))
                chunk, chunk_size = [], 0
                self._roll(day, now)
            chunk.append(line)
            chunk_size += size
        self._write("".join(chunk))

    def _write(self, text: str) -> None:
        if not text:
            return
        assert self._fd is not None
        data = text.encode("utf-8")
        write_all(self._fd, data)
        self._size += len(data)

    def _roll(self, day: str, now: float) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._day = day
        self._path = self._next_path(day)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._size = 0
        moment = datetime.fromtimestamp(now, timezone.utc)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        self._write(
            f"#Software: salmon-relayauth\r\n#Version: {self.version}\r\n#Log-Type: SMTP Receive Protocol Log\r\n"
            f"#Date: {stamp}\r\n#Fields: {FIELDS}\r\n"
        )
        self._prune(moment)

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
            self._flush(self._clock())
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _one_line(text: str) -> str:
    if "\r" in text or "\n" in text:
        return text.replace("\r", " ").replace("\n", " ")
    return text


def session_fields(connector_id: str, session_id: str, local: str, remote: str) -> tuple[str, str]:
    """The fields every line of one session repeats, quoted once: those before the sequence number
    and those between it and the event."""
    return (
        f"{_csv_field(_one_line(connector_id))},{_csv_field(session_id)},",
        f",{_csv_field(local)},{_csv_field(remote)},",
    )


def _csv_field(text: str) -> str:
    """A CSV field as the csv module's minimal quoting writes it (line breaks are already gone)."""
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text
