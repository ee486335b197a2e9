"""The lock of the shared throttling tables: it excludes the worker processes of one machine and the
threads of each, and a worker killed while holding it blocks no one.

:class:`RobustMutex` is a process-shared, robust POSIX mutex placed in the shared mapping and called
through ``ctypes``. Taking it while it is free costs no system call and keeps the interpreter lock
(a relay worker takes it on every connection and message, and every let-go of the interpreter
lock is a hand-off to another thread of the worker); only a wait lets go. When a holder dies, the
kernel gives the mutex to the next taker, marked ``EOWNERDEAD``.

:class:`RecordLock` is the fallback where the C library has no robust mutexes: a POSIX record lock
on an unlinked file, which the kernel drops when its process dies, plus a thread lock, since record
locks belong to a process. It costs two system calls per use.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import tempfile
import threading
import weakref
from typing import Protocol

__all__ = ["MUTEX_BYTES", "ProcessLock", "RecordLock", "RobustMutex", "process_lock"]

log = logging.getLogger("salmon_relayauth.throttling")

MUTEX_BYTES = 128  # room for a pthread_mutex_t (40 bytes on x86-64 glibc, 48 on arm64), kept aligned

_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1


class ProcessLock(Protocol):
    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class _PthreadCalls:
    """The C library's mutex functions, twice: called with the interpreter lock held (``PyDLL``) and
    let go (``CDLL``, for the calls that may wait)."""

    def __init__(self) -> None:
        held, letting_go = ctypes.PyDLL(None), ctypes.CDLL(None)  # the process's own symbols: libc, libpthread
        # Every one returns an int, ctypes' default: 0 or an error number.
        self.init = held.pthread_mutex_init
        self.trylock, self.unlock = held.pthread_mutex_trylock, held.pthread_mutex_unlock
        self.consistent = held.pthread_mutex_consistent
        self.lock = letting_go.pthread_mutex_lock
        self.attr_init, self.attr_destroy = held.pthread_mutexattr_init, held.pthread_mutexattr_destroy
        self.attr_setpshared, self.attr_setrobust = held.pthread_mutexattr_setpshared, held.pthread_mutexattr_setrobust


class RobustMutex:
    """A robust, process-shared mutex in ``buffer`` (at least :data:`MUTEX_BYTES` writable bytes of a
    shared mapping); initialise it once, before the processes that share it are forked.

    :raises OSError: when the C library has no such mutexes (``AttributeError`` of a missing
        function is turned into ``OSError`` too).
    """

    def __init__(self, buffer: memoryview) -> None:
        if len(buffer) < MUTEX_BYTES:
            raise ValueError(f"RobustMutex needs {MUTEX_BYTES} bytes, not {len(buffer)}")
        try:
            self._calls = _PthreadCalls()
        except AttributeError as missing:
            raise OSError(errno.ENOSYS, f"no robust process-shared mutexes here: {missing}") from None
        self._memory = (ctypes.c_char * MUTEX_BYTES).from_buffer(buffer)  # passed to C as its address
        calls = self._calls
        self._trylock, self._unlock = calls.trylock, calls.unlock
        attributes = ctypes.create_string_buffer(64)  # a pthread_mutexattr_t is 4 or 8 bytes
        _check("pthread_mutexattr_init", calls.attr_init(attributes))
        try:
            _check("pthread_mutexattr_setpshared", calls.attr_setpshared(attributes, _PTHREAD_PROCESS_SHARED))
            _check("pthread_mutexattr_setrobust", calls.attr_setrobust(attributes, _PTHREAD_MUTEX_ROBUST))
            _check("pthread_mutex_init", calls.init(self._memory, attributes))
        finally:
            calls.attr_destroy(attributes)

    def acquire(self) -> None:
        result = self._trylock(self._memory)
        if result:
            self._acquire_busy(result)

    def _acquire_busy(self, result: int) -> None:
        if result == errno.EBUSY:
            result = self._calls.lock(self._memory)  # waits with the interpreter lock let go
        if result == errno.EOWNERDEAD:
            # Its holder died: the tables are well-formed at every step (see SharedThrottleArea).
            log.warning("shared throttling: a worker died holding the lock; taken over")
            result = self._calls.consistent(self._memory)
        _check("pthread_mutex_lock", result)

    def release(self) -> None:
        result = self._unlock(self._memory)
        if result:
            _check("pthread_mutex_unlock", result)

    def close(self) -> None:
        """Let go of the mapping (the mutex stays usable in the other processes)."""
        del self._memory


class RecordLock:
    """A POSIX record lock on an unlinked file plus a thread lock."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="relayauth-throttle-")
        self._fd = self._file.fileno()
        self._thread_lock = threading.Lock()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _renew_thread_lock(ref))

    def acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def close(self) -> None:
        self._file.close()


def _renew_thread_lock(ref: weakref.ref[RecordLock]) -> None:
    """A thread of the parent may have held the thread lock at fork: the child's copy would stay locked."""
    lock = ref()
    if lock is not None:
        lock._thread_lock = threading.Lock()


def process_lock(buffer: memoryview) -> ProcessLock:
    """A :class:`RobustMutex` in ``buffer``, or a :class:`RecordLock` where there is none."""
    try:
        return RobustMutex(buffer)
    except OSError as error:
        log.info("shared throttling uses a record lock: %s", error)
        return RecordLock()


def _check(call: str, result: int) -> None:
    if result:
        raise OSError(result, f"{call}: {os.strerror(result)}")
