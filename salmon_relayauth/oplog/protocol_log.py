"""The SMTP receive protocol log, in Exchange's format (reference §11).

One CSV line per event (``+`` connect, ``-`` disconnect, ``>`` sent, ``<`` received, ``*``
information) under the ``#Software/#Version/#Log-Type/#Date/#Fields`` header, in files named
``RECVyyyymmdd-N.LOG`` (UTC date). A file is rolled when it reaches ``max_file_size`` or the date
changes; files older than ``max_age`` and the oldest files beyond ``max_directory_size`` are
removed. Message content and credentials are never written.
"""

from __future__ import annotations

import fcntl
import functools
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ..model.enums import Right
from .batch import MILLISECONDS, LineBatch, second_stamp, write_all

__all__ = ["FIELDS", "ProtocolLog", "ProtocolSession", "permission_flags"]

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
    :class:`LineBatch`): when a line of a later second comes, at most a second after the event
    (:meth:`flush`, which the relay calls every second), and on :meth:`close`. Each writer creates
    files of its own, so the relay's worker processes log side by side. Every SMTP command and reply of a
    Verbose connector makes a line: adding one takes no lock and no helper call unless the text
    needs quoting or the second changed; the lock guards the files.
    """

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
        self._header_size = 0
        self._day = ""
        self._pending = LineBatch()
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
        """One line, outside any session's numbering."""
        self.session(connector_id, session_id, local, remote, first=sequence).line(event, data, context)

    def session(self, connector_id: str, session_id: str, local: str, remote: str, first: int = 0) -> ProtocolSession:
        """The writer of one session's lines, numbered from ``first``."""
        return ProtocolSession(self, connector_id, session_id, local, remote, first)

    def _stamp(self, second: int) -> tuple[int, str, str]:
        """Write the lines of the seconds before this one (so a line waits at most until a line of a
        later second, or the owner's flush), then stamp this second."""
        self.flush()
        stamp = self._second = second_stamp(second)
        return stamp

    def flush(self) -> None:
        """Write every pending line."""
        with self._lock:
            self._flush(self._clock())

    def _flush(self, now: float) -> None:
        lines = self._pending.take()
        if not lines:
            return
        # A batch holds one second's lines (a later second writes those before it), so one day's,
        # except a line another thread stamped as midnight passed: it goes with the new day's.
        day = _day_of(lines[-1])
        if day != self._day or self._fd is None:
            self._roll(day, now)
        data = "".join(lines).encode("utf-8")
        if self._size + len(data) <= self.max_file_size:
            self._write(data)
        else:
            self._write_rolling(day, lines, now)

    def _write_rolling(self, day: str, lines: list[str], now: float) -> None:
        """Lines that do not all fit in the current file: as many as fit, then a new file."""
        chunk: list[bytes] = []
        chunk_size = 0
        for line in lines:
            data = line.encode("utf-8")
            if self._size + chunk_size + len(data) > self.max_file_size and (chunk or self._size > self._header_size):
                self._write(b"".join(chunk))
                chunk, chunk_size = [], 0
                self._roll(day, now)
            chunk.append(data)
            chunk_size += len(data)
        self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        if not data:
            return
        assert self._fd is not None
        write_all(self._fd, data)
        self._size += len(data)

    def _roll(self, day: str, now: float) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._day = day
        self._path, self._fd = self._create_next(day)
        self._size = 0
        moment = datetime.fromtimestamp(now, timezone.utc)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        header = (
            f"#Software: salmon-relayauth\r\n#Version: {self.version}\r\n#Log-Type: SMTP Receive Protocol Log\r\n"
            f"#Date: {stamp}\r\n#Fields: {FIELDS}\r\n"
        )
        self._write(header.encode("utf-8"))
        self._header_size = self._size
        self._prune(moment)

    def _create_next(self, day: str) -> tuple[Path, int]:
        """The day's first file number no one has created yet, created here and locked while this
        writer writes it: a file has one writer (and one header) even when the relay's worker
        processes roll at the same moment, and no worker's pruning removes another's current file."""
        number = 1
        while True:
            path = self.directory / f"RECV{day}-{number}.LOG"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o640)
            except FileExistsError:
                number += 1
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: no one else holds it
            return path, fd

    def _prune(self, now: datetime) -> None:
        """Remove the files older than ``max_age``, then the oldest while the directory is over
        ``max_directory_size``; never a file a writer still writes."""
        files = []
        for path in self.directory.glob("RECV*.LOG"):
            try:
                status = path.stat()
            except FileNotFoundError:  # another worker's pruning removed it meanwhile
                continue
            files.append((status.st_mtime, status.st_size, path))
        files.sort()
        oldest_allowed = now.timestamp() - self.max_age.total_seconds()
        total = sum(size for _, size, _ in files)
        for modified, size, path in files:
            too_old = bool(self.max_age) and modified < oldest_allowed
            if not too_old and total <= self.max_directory_size:
                break  # the files after this one are newer still
            if path == self._path or not _free_to_remove(path):
                continue
            path.unlink(missing_ok=True)
            total -= size

    def close(self) -> None:
        with self._lock:
            self._flush(self._clock())
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _free_to_remove(path: Path) -> bool:
    """Whether ``path`` is still there and no writer (of this process or another worker) holds it
    as its current file."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # another worker's pruning removed it meanwhile
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if it was taken
    return True


def _day_of(line: str) -> str:
    """``20261128`` of a line stamped ``2026-11-28T...``."""
    return line[0:4] + line[5:7] + line[8:10]


class ProtocolSession:
    """The lines of one session: its constant fields quoted once, its sequence numbers.

    :meth:`line` does the whole work of a line in one call, every SMTP command and reply making one
    (it reads the log's clock, stamp and pending lines itself rather than call the log)."""

    __slots__ = ("_log", "_head", "_middle", "_sequence")

    def __init__(
        self, log: ProtocolLog, connector_id: str, session_id: str, local: str, remote: str, first: int = 0
    ) -> None:
        self._log = log
        # The fields before the sequence number, and those between it and the event.
        self._head = f"{_csv_field(_one_line(connector_id))},{_csv_field(session_id)},"
        self._middle = f",{_csv_field(local)},{_csv_field(remote)},"
        self._sequence = itertools.count(first).__next__

    def line(self, event: str, data: str = "", context: str = "") -> None:
        if data and ("," in data or '"' in data or "\r" in data or "\n" in data):
            data = _csv_field(_one_line(data))
        if context and ("," in context or '"' in context or "\r" in context or "\n" in context):
            context = _csv_field(_one_line(context))
        log = self._log
        now = log._clock()
        second = int(now)
        stamp = log._second
        if stamp[0] != second:
            stamp = log._stamp(second)
        millisecond = MILLISECONDS[int((now - second) * 1000)]
        log._pending.append(
            f"{stamp[1]}.{millisecond}Z,{self._head}{self._sequence()}{self._middle}{event},{data},{context}\r\n"
        )


def _one_line(text: str) -> str:
    if "\r" in text or "\n" in text:
        return text.replace("\r", " ").replace("\n", " ")
    return text


def _csv_field(text: str) -> str:
    """A CSV field as the csv module's minimal quoting writes it (line breaks are already gone)."""
    if "," in text or '"' in text:
        return '"' + text.replace('"', '""') + '"'
    return text
