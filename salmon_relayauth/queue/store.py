"""The durable outbound queue: one file per message, written so that an acknowledged message survives a crash.

Layout of the queue directory::

    <id>.msg        one JSON line (the envelope as accepted, with the content's byte count), then the content
    <id>.state      the envelope's latest state (JSON), written by :meth:`MessageQueue.update`; supersedes
                    the envelope line of ``<id>.msg``
    *.tmp           a file being written; at start-up, a crash leftover, deleted
    *.spare         a delivered message's file kept to hold a later one (see ``spare_files``); at
                    start-up, deleted
    corrupt/        ``.msg`` files found damaged at start-up, kept for the operator

A file only gets its final name by ``rename`` after its bytes are written (and, with ``fsync``, flushed);
the directory is flushed before :meth:`MessageQueue.enqueue` returns. Concurrent enqueues share one
flush of the directory (group commit): threads and event loops alike hand their written files to the
queue's flushing thread (``flusher.py``). Delivery is at least once: a crash between delivery and the
state update delivers again, never loses.

One process recovers a queue directory at start-up; the ``queue`` command and the relay's worker
processes open it with ``recover=False`` so that they never touch another process's files in flight.
Worker processes share the directory: each writes new messages freely (ids are unique) and delivers
only its own partition (``partition=(index, count)``, see :func:`queue_partition`).

With ``spare_files``, a delivered message's file is renamed aside instead of deleted, and a new
message is written over it. Creating a file is the costliest step of a queue write on ext4 when
many files were deleted lately (its inode allocator skips the recently freed inodes one by one);
a recycled file needs neither a new inode nor, for a message no larger than the last, new blocks.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import random
import secrets
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .flusher import Flusher

__all__ = ["MessageQueue", "QueuedEnvelope", "queue_partition", "valid_queue_id"]

log = logging.getLogger("salmon_relayauth.queue")

FORMAT_VERSION = 1
MESSAGE_SUFFIX = ".msg"
STATE_SUFFIX = ".state"
TEMP_SUFFIX = ".tmp"
SPARE_SUFFIX = ".spare"
SPARE_FILES = 256  # what the relay keeps per process: 1 MiB of disk for 2 KB messages
CORRUPT_DIR = "corrupt"
_MAX_HEADER = 4 << 20
_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")
_ADDRESS_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f<>]")


def queue_partition(queue_id: str, count: int) -> int:
    """Which of ``count`` worker processes delivers this message: a hash of the id, so every id,
    including those written under another number of workers, belongs to exactly one of them."""
    return zlib.crc32(queue_id.encode("ascii", "replace")) % count


def valid_queue_id(queue_id: str) -> bool:
    """Whether ``queue_id`` is usable as a file name stem (letters, digits, ``-``, ``_``)."""
    return _ID.fullmatch(queue_id) is not None


@dataclass(frozen=True, slots=True)
class QueuedEnvelope:
    """A queued message's envelope and delivery state; ``sender`` is ``""`` for the null sender."""

    queue_id: str
    sender: str
    recipients: tuple[str, ...]
    client_address: str
    client_port: int
    connector: str
    session_id: str
    principals: tuple[str, ...]
    rights: tuple[str, ...]
    received_at: float
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    is_notification: bool = False

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _ENVELOPE_FIELDS}  # dataclasses.asdict deep-copies

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> QueuedEnvelope:
        """The envelope from :meth:`to_json` output; unknown keys (a later format) are ignored."""
        known = {item.name for item in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        try:
            for key in ("recipients", "principals", "rights"):
                values[key] = tuple(values.get(key, ()))
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"not an envelope: {error}") from None


_ENVELOPE_FIELDS = tuple(item.name for item in fields(QueuedEnvelope))


class MessageQueue:
    """Queued messages and their envelopes in one directory (created if missing)."""

    def __init__(
        self,
        directory: Path,
        *,
        fsync: bool = True,
        recover: bool = True,
        partition: tuple[int, int] | None = None,
        spare_files: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        if spare_files < 0:
            raise ValueError(f"spare_files: {spare_files!r} is negative")
        # Files of delivered messages this process keeps to write new ones over (at most spare_files).
        self.spare_files = spare_files
        self._spares: list[Path] = []
        self._spare_lock = threading.Lock()
        self._spare_serial = 0
        # The pid keeps apart the names of the processes sharing the directory, the token those of
        # the queues one process opens on it.
        self._spare_prefix = f"{os.getpid()}-{secrets.token_hex(3)}-"
        # (index, count): this process lists only the messages of its partition, and its new ids are in it.
        if partition is not None and not (partition[1] >= 1 and 0 <= partition[0] < partition[1]):
            raise ValueError(f"partition: {partition!r} is not (index, count) with 0 <= index < count")
        self.partition = partition
        self.directory.mkdir(parents=True, exist_ok=True)
        self._id_lock = threading.Lock()
        self._last_id_time = 0
        self._flusher = Flusher(self.directory)
        if recover:
            self._recover()
        elif spare_files:
            self._delete_orphan_spares()

    # -- writing -------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A unique id that sorts by arrival: nanoseconds since the epoch (hex) and a random suffix
        (drawn again until the id falls in this process's partition, if it has one)."""
        with self._id_lock:
            stamp = max(time.time_ns(), self._last_id_time + 1)
            self._last_id_time = stamp
        while True:
            queue_id = f"{stamp:016x}-{random.getrandbits(32):08x}"  # not os.urandom: see session.new_session_id
            if self.partition is None or queue_partition(queue_id, self.partition[1]) == self.partition[0]:
                return queue_id

    def enqueue(self, envelope: QueuedEnvelope, content: bytes) -> None:
        """Store a new message; with ``fsync`` it is on disk, directory entry included, on return."""
        fd, temp, final = self._write_temp(envelope, content)
        if self.fsync:
            self._flusher.publish_and_wait(fd, temp, final)
        else:
            _publish_unflushed(fd, temp, final)

    async def enqueue_async(self, envelope: QueuedEnvelope, content: bytes) -> None:
        """:meth:`enqueue` for an event loop: the file is written on the loop (no wait on the disk)
        and flushed by the queue's flushing thread while the loop goes on."""
        fd, temp, final = self._write_temp(envelope, content)
        if self.fsync:
            await self._flusher.publish(fd, temp, final)
        else:
            _publish_unflushed(fd, temp, final)

    @property
    def commit_batches(self) -> int:
        """How many group commits (flushes of the directory for new messages and state updates) have been made."""
        return self._flusher.batches

    def update(self, envelope: QueuedEnvelope) -> None:
        """Replace a queued message's state atomically; ``KeyError`` if it is no longer queued."""
        _check_envelope(envelope)
        if not self._path(envelope.queue_id, MESSAGE_SUFFIX).exists():
            raise KeyError(f"no queued message {envelope.queue_id!r}")
        state = _dump(envelope.to_json() | {"v": FORMAT_VERSION})
        self._write_atomically(self._path(envelope.queue_id, STATE_SUFFIX), state)

    def remove(self, queue_id: str, *, state: bool = True) -> None:
        """Delete a message (and its state file, unless ``state`` is False: the caller knows it has
        none); ``KeyError`` if it is not queued."""
        message = self._existing_path(queue_id, MESSAGE_SUFFIX)
        try:
            # The message first: a leftover state file alone is discarded at start-up.
            if not self._keep_as_spare(message):
                os.unlink(message)
        except FileNotFoundError:
            raise KeyError(f"no queued message {queue_id!r}") from None
        if state:
            _unlink_quietly(self._path(queue_id, STATE_SUFFIX))
        # No directory fsync here: a delete lost in a crash only means one delivery more (the queue
        # is at-least-once), while flushing after every delivery halves the delivery rate.

    def close(self) -> None:
        """Stop the flushing thread (after the files handed to it) and delete the spare files this
        process kept."""
        self._flusher.close()
        with self._spare_lock:
            spares, self._spares = self._spares, []
        for spare in spares:
            _unlink_quietly(spare)

    # -- reading -------------------------------------------------------------------------------

    def list(self) -> list[QueuedEnvelope]:
        """Every queued envelope, oldest first. Damaged files are skipped (and logged)."""
        envelopes = []
        for queue_id in self._ids():
            try:
                envelopes.append(self._envelope(queue_id)[0])
            except FileNotFoundError:
                continue  # removed meanwhile
            except ValueError as error:
                log.error("queue file %s is damaged, skipped: %s", queue_id, error)
        return envelopes

    def due(self, now: float) -> builtins.list[QueuedEnvelope]:
        """The envelopes whose next attempt is at or before ``now``, oldest first."""
        return [envelope for envelope in self.list() if envelope.next_attempt <= now]

    def envelope(self, queue_id: str) -> QueuedEnvelope:
        """One message's current envelope, without reading its content; ``KeyError`` if not queued."""
        self._existing_path(queue_id, MESSAGE_SUFFIX)
        try:
            return self._envelope(queue_id)[0]
        except FileNotFoundError:
            raise KeyError(f"no queued message {queue_id!r}") from None
        except ValueError as error:
            raise KeyError(f"queued message {queue_id!r} is damaged: {error}") from None

    def load(self, queue_id: str) -> tuple[QueuedEnvelope, bytes]:
        """The envelope and content of one message; ``KeyError`` naming the id if it is not queued."""
        path = self._existing_path(queue_id, MESSAGE_SUFFIX)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no queued message {queue_id!r}") from None
        newline = data.find(b"\n")
        try:
            header = _parse_header(data[:newline] if newline >= 0 else data)
        except ValueError as error:
            raise KeyError(f"queued message {queue_id!r} is damaged: {error}") from None
        content = data[newline + 1 :]
        if newline < 0 or len(content) != header["size"]:
            raise KeyError(f"queued message {queue_id!r} is damaged: truncated content")
        return self._overlay_state(queue_id, QueuedEnvelope.from_json(header)), content

    def __len__(self) -> int:
        return sum(1 for _ in self._ids())

    def __contains__(self, queue_id: object) -> bool:
        return isinstance(queue_id, str) and valid_queue_id(queue_id) and self._path(queue_id, MESSAGE_SUFFIX).exists()

    # -- internals -----------------------------------------------------------------------------

    def _path(self, queue_id: str, suffix: str) -> Path:
        return self.directory / f"{queue_id}{suffix}"

    def _existing_path(self, queue_id: str, suffix: str) -> Path:
        if not valid_queue_id(queue_id):
            raise KeyError(f"no queued message {queue_id!r}")
        return self._path(queue_id, suffix)

    def _ids(self) -> Iterator[str]:
        names = sorted(entry.name for entry in os.scandir(self.directory) if entry.name.endswith(MESSAGE_SUFFIX))
        for name in names:
            queue_id = name[: -len(MESSAGE_SUFFIX)]
            if valid_queue_id(queue_id) and (
                self.partition is None or queue_partition(queue_id, self.partition[1]) == self.partition[0]
            ):
                yield queue_id

    def _envelope(self, queue_id: str) -> tuple[QueuedEnvelope, int]:
        """The current envelope and the byte count the file must have; ``ValueError`` if damaged."""
        path = self._path(queue_id, MESSAGE_SUFFIX)
        with path.open("rb") as stream:
            line = stream.readline(_MAX_HEADER)
        header = _parse_header(line.rstrip(b"\n"))
        if not line.endswith(b"\n"):
            raise ValueError("envelope line is incomplete")
        envelope = QueuedEnvelope.from_json(header)
        if envelope.queue_id != queue_id:
            raise ValueError(f"file holds queue id {envelope.queue_id!r}")
        return self._overlay_state(queue_id, envelope), len(line) + int(header["size"])

    def _overlay_state(self, queue_id: str, envelope: QueuedEnvelope) -> QueuedEnvelope:
        try:
            data = self._path(queue_id, STATE_SUFFIX).read_bytes()
        except FileNotFoundError:
            return envelope
        try:
            state = QueuedEnvelope.from_json(json.loads(data))
        except (ValueError, TypeError) as error:
            log.error("state of queued message %s is damaged, using the envelope as accepted: %s", queue_id, error)
            return envelope
        return state if state.queue_id == queue_id else envelope

    def _write_temp(self, envelope: QueuedEnvelope, content: bytes) -> tuple[int, Path, Path]:
        """Write a new message under its temporary name; the open file, that name and the final one."""
        _check_envelope(envelope)
        final = self._path(envelope.queue_id, MESSAGE_SUFFIX)
        if final.exists():
            raise ValueError(f"queue id {envelope.queue_id!r} is already queued")
        line = _dump(envelope.to_json() | {"v": FORMAT_VERSION, "size": len(content)}) + b"\n"
        temp = final.with_name(final.name + TEMP_SUFFIX)
        fd, recycled = self._open_for_writing(temp)
        try:
            total = len(line) + len(content)
            written = os.writev(fd, [line, content])
            if written < total:  # a short write: the rest the slow way
                _write_all(fd, (line + content)[written:])
            if recycled:
                os.ftruncate(fd, total)  # the former message may be longer
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp)
            raise
        return fd, temp, final

    def _open_for_writing(self, temp: Path) -> tuple[int, bool]:
        """A file named ``temp`` open for writing, and whether it is a spare file renamed (its former
        bytes still there) rather than a new one."""
        while True:
            with self._spare_lock:
                spare = self._spares.pop() if self._spares else None
            if spare is None:
                return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), False
            try:
                os.rename(spare, temp)
                return os.open(temp, os.O_WRONLY), True
            except FileNotFoundError:
                continue  # deleted behind our back: take the next one

    def _keep_as_spare(self, message: Path) -> bool:
        """Rename a delivered message's file to a spare name, if the pool has room."""
        with self._spare_lock:
            if len(self._spares) >= self.spare_files:
                return False
            self._spare_serial += 1
            spare = self.directory / f"{self._spare_prefix}{self._spare_serial}{SPARE_SUFFIX}"
        os.rename(message, spare)
        with self._spare_lock:
            self._spares.append(spare)
        return True

    def _delete_orphan_spares(self) -> None:
        """Delete the spare files of processes that are gone (a worker that crashed), so that a
        worker restarted again and again does not pile them up until the next recovery."""
        for entry in os.scandir(self.directory):
            if not entry.name.endswith(SPARE_SUFFIX):
                continue
            owner = entry.name.split("-", 1)[0]
            if owner.isdigit() and not _process_alive(int(owner)):
                _unlink_quietly(Path(entry.path))

    def _write_atomically(self, path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data``, published like a new message (by the flushing thread)."""
        temp = path.with_name(path.name + TEMP_SUFFIX)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
        except BaseException:
            os.close(fd)
            _unlink_quietly(temp)
            raise
        if self.fsync:
            self._flusher.publish_and_wait(fd, temp, path)
        else:
            _publish_unflushed(fd, temp, path)

    def _recover(self) -> None:
        """Delete half-written and spare files, set damaged messages aside, drop state files without a
        message."""
        changed = False
        for entry in list(os.scandir(self.directory)):
            if entry.name.endswith(TEMP_SUFFIX) and entry.is_file():
                log.warning("discarding half-written queue file %s", entry.name)
                _unlink_quietly(Path(entry.path))
                changed = True
            elif entry.name.endswith(SPARE_SUFFIX) and entry.is_file():
                _unlink_quietly(Path(entry.path))  # kept by a process that stopped without closing the queue
        for queue_id in list(self._ids()):
            path = self._path(queue_id, MESSAGE_SUFFIX)
            try:
                _, expected = self._envelope(queue_id)
                if path.stat().st_size != expected:
                    raise ValueError(f"{path.stat().st_size} bytes on disk, {expected} expected")
            except ValueError as error:
                corrupt = self.directory / CORRUPT_DIR
                corrupt.mkdir(exist_ok=True)
                os.replace(path, corrupt / path.name)
                log.error("queue file %s is damaged (%s); moved to %s", path.name, error, corrupt)
                changed = True
        for entry in list(os.scandir(self.directory)):
            if entry.name.endswith(STATE_SUFFIX):
                stem = entry.name[: -len(STATE_SUFFIX)]
                if not self._path(stem, MESSAGE_SUFFIX).exists():
                    _unlink_quietly(Path(entry.path))
                    changed = True
        if changed and self.fsync:
            _fsync_directory(self.directory)


def _check_envelope(envelope: QueuedEnvelope) -> None:
    if not valid_queue_id(envelope.queue_id):
        raise ValueError(f"queue_id: {envelope.queue_id!r} is not a usable id (letters, digits, '-', '_')")
    if not envelope.recipients:
        raise ValueError(f"recipients: message {envelope.queue_id} has no recipient")
    for name, address in [("sender", envelope.sender)] + [("recipients", rcpt) for rcpt in envelope.recipients]:
        if _ADDRESS_FORBIDDEN.search(address):
            raise ValueError(f"{name}: {address!r} holds a control character or an angle bracket")
    if any(not rcpt for rcpt in envelope.recipients):
        raise ValueError("recipients: an empty address")


def _parse_header(line: bytes) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except ValueError as error:
        raise ValueError(f"envelope line is not JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("size"), int):
        raise ValueError("envelope line lacks the content size")
    if header.get("v", 0) > FORMAT_VERSION:
        raise ValueError(f"written in format {header['v']}, this version reads {FORMAT_VERSION}")
    return header


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode("ascii")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish_unflushed(fd: int, temp: Path, final: Path) -> None:
    """Give a written file its final name without flushing it (``fsync = false``)."""
    try:
        os.close(fd)
        os.rename(temp, final)
    except BaseException:
        _unlink_quietly(temp)
        raise


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
