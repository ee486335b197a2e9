"""Makes queue files durable, on one thread, in batches (the queue's group commit).

The caller writes a message's file itself (into the page cache: no waiting on the disk) and hands
the open file to the flusher. The flusher flushes every file it was given since its last round,
gives each its final name, flushes the directory once for all of them, and settles the batch: with
one call into each event loop that waits (:meth:`Flusher.publish`), directly for the threads that
wait (:meth:`Flusher.publish_and_wait`).

One thread rather than a pool: every time a thread takes the interpreter lock back from a busy
event loop costs a round of futex calls and context switches, so the thread does as little as
possible, and only what has to wait for the disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Flusher"]

log = logging.getLogger("salmon_relayauth.queue")


@dataclass(slots=True)
class _Written:
    """A file written under its temporary name, still open, waiting to be made durable."""

    fd: int
    temp: Path
    final: Path
    loop: asyncio.AbstractEventLoop | None  # None: a thread waits on a concurrent future
    future: asyncio.Future[None] | concurrent.futures.Future[None]
    error: BaseException | None = field(default=None)


_STOP = object()


class Flusher:
    """The flushing thread of one queue directory (started on first use, stopped by :meth:`close`)."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._directory_fd: int | None = None  # open while the thread runs: one call less per flush
        self._inbox: queue.SimpleQueue[_Written | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0

    def publish(self, fd: int, temp: Path, final: Path) -> asyncio.Future[None]:
        """Flush ``fd`` (the file named ``temp``, closed once settled), rename it to ``final``
        and flush the directory; the future is done when all of that is, or holds the error
        (the file then no longer exists under either name)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._start()
        self._inbox.put(_Written(fd, temp, final, loop, future))
        return future

    def publish_and_wait(self, fd: int, temp: Path, final: Path) -> None:
        """:meth:`publish` for a thread: returns when the file is durable, raises its error."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._start()
        self._inbox.put(_Written(fd, temp, final, None, future))
        future.result()

    def close(self) -> None:
        """Finish the files handed over so far, then stop the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._inbox.put(_STOP)
            thread.join()
        if self._directory_fd is not None:
            os.close(self._directory_fd)
            self._directory_fd = None

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="relayauth-queue-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            batch: list[_Written] = []
            stop = False
            while True:
                if item is _STOP:
                    stop = True
                else:
                    assert isinstance(item, _Written)
                    batch.append(item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._flush(batch)
                except BaseException as error:  # a bug here must not leave the sessions waiting forever
                    log.exception("queue flush of %d file(s) failed", len(batch))
                    for written in batch:  # reported as not queued, so withdrawn under either name
                        written.error = written.error or error
                        _unlink_quietly(written.temp)
                        _unlink_quietly(written.final)
                self._settle(batch)
            if stop:
                return

    def _flush(self, batch: list[_Written]) -> None:
        published: list[_Written] = []
        for item in batch:
            try:
                os.fsync(item.fd)  # closed when the batch is settled
                os.rename(item.temp, item.final)
                published.append(item)
            except BaseException as error:  # each caller learns its own failure
                item.error = error
                _unlink_quietly(item.temp)
        if not published:
            return
        self.batches += 1
        try:
            if self._directory_fd is None:
                self._directory_fd = os.open(self._directory, os.O_RDONLY)
            os.fsync(self._directory_fd)
        except BaseException as error:
            for item in published:  # not known to be durable: withdraw it, the client will retry
                item.error = error
                _unlink_quietly(item.final)

    def _settle(self, batch: list[_Written]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Written]] = {}
        for item in batch:
            if item.loop is None:
                _resolve([item])  # a thread waits: its future may be settled from here
            else:
                by_loop.setdefault(item.loop, []).append(item)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:  # the loop is closed: nobody waits for these any more
                log.debug("queue flush of %d file(s) finished after their event loop closed", len(items))
                _close_files(items)


def _resolve(items: list[_Written]) -> None:
    _close_files(items)
    for item in items:
        if item.future.done():
            continue  # cancelled: the message is queued all the same (delivery is at least once)
        if item.error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(item.error)


def _close_files(items: list[_Written]) -> None:
    for item in items:
        try:
            os.close(item.fd)
        except OSError as error:  # nothing of the message depends on it any more
            log.debug("closing queue file %s: %s", item.final, error)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
