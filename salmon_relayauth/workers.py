"""Several worker processes serving the same listening sockets (``[server] workers``).

One Python process uses one core for the SMTP work of all its sessions. With ``workers = N`` (or
``"auto"``: one per CPU), ``serve`` becomes a small master process that validates the configuration,
recovers the queue, opens the listening sockets and the shared throttling memory, then forks N
workers. Each worker is a whole relay (:class:`~salmon_relayauth.receiver.RelayReceiver`) accepting
on the inherited sockets; the kernel hands each new connection to one of them. Workers share:

* the throttling state (rate limits, connection counts) through a shared-memory table
  (:mod:`salmon_relayauth.throttling.shared`), or Redis when the configuration names it;
* the queue directory: every worker writes new messages, and each delivers its own partition of the
  queue ids (:func:`~salmon_relayauth.queue.store.queue_partition`), so nothing is sent twice;
* the log directory: the decision log is one file, appended in whole batches of lines; each
  worker writes protocol log files of its own.

The master restarts a worker that dies (its connections stop counting at once), forwards SIGHUP as a
reload to every worker, and on a reload that changes the bindings starts a new generation of
workers on the new sockets and lets the old one finish its sessions. SIGTERM or SIGINT stops every
worker the way a single relay stops: open sessions get their grace period, queued mail stays queued.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config.problems import ConfigError
from .listener.server import distinct_bindings, open_listening_sockets
from .model.addresses import Binding
from .plugins import PluginLoadError
from .policy import RelayPolicy, load_policy
from .queue.store import MessageQueue
from .throttling.shared import SharedThrottleArea

if TYPE_CHECKING:
    from .receiver import RelayReceiver

__all__ = ["Supervisor", "WorkerPlace", "block_stop_signals", "serve_until_stopped"]

log = logging.getLogger("salmon_relayauth.workers")

_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_SIGNALS = _STOP_SIGNALS | {signal.SIGCHLD}
_QUICK_DEATH = 10.0  # a worker that dies sooner than this after its start is restarted with a backoff
_MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class WorkerPlace:
    """What a worker process gets from the master.

    :param slot: its column in the shared throttling memory, held by no other live worker.
    :param partition: the queue partition it delivers (0 to count - 1).
    :param count: workers per generation (the number of queue partitions).
    :param sockets: the listening sockets, opened by the master.
    :param area: the shared throttling memory.
    :param policy: the configuration the master runs, already loaded and checked (a worker
        restarted later runs it too, even if the file was changed since without a reload).
    """

    slot: int
    partition: int
    count: int
    sockets: dict[Binding, socket.socket]
    area: SharedThrottleArea
    policy: RelayPolicy


def block_stop_signals() -> None:
    """Block SIGTERM, SIGINT and SIGHUP in the calling thread and the threads it starts from now on,
    for :func:`serve_until_stopped` to wait for them. (A Python handler that sets an Event can
    deadlock when a second signal interrupts the first handler; waiting for signals cannot.)"""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)


def serve_until_stopped(receiver: RelayReceiver, announce: bool = True) -> None:
    """Run a started receiver until SIGTERM or SIGINT; SIGHUP reloads its configuration. Call
    :func:`block_stop_signals` before starting the receiver."""
    while True:
        if signal.sigwaitinfo(_STOP_SIGNALS).si_signo != signal.SIGHUP:
            break
        problems = receiver.reload()
        if announce:
            print("salmon-relayauth: " + ("reload refused, see the log" if problems else "configuration reloaded"), flush=True)
    receiver.stop()


@dataclass
class _Worker:
    slot: int
    partition: int
    generation: int
    pid: int
    started: float


# Columns of the shared memory per worker of a generation: old generations finishing their sessions
# after reloads that changed the bindings keep theirs until they exit.
_GENERATIONS_AT_ONCE = 4


class Supervisor:
    """The master process of ``serve`` with ``workers > 1``."""

    def __init__(self, config: str | Path, count: int, *, queue_dir: str | Path | None = None, grace: float = 10.0) -> None:
        self.config_path = Path(config)
        self.count = count
        self.queue_dir = Path(queue_dir) if queue_dir is not None else None
        self.grace = grace
        self.workers: dict[int, _Worker] = {}  # by pid
        self.generation = 0  # only ever grows: a reload with new bindings starts the next one
        self.sockets: dict[Binding, socket.socket] = {}
        self.policy: RelayPolicy | None = None
        self._restart_at: dict[int, float] = {}  # partition of the current generation -> when
        self._backoff: dict[int, float] = {}
        self.area: SharedThrottleArea | None = None
        self._stopping = False

    def prepare(self) -> list[tuple[str, int]]:
        """Validate the configuration, recover the queue, open the sockets and the shared memory.
        Raises ``ConfigError``, ``PluginLoadError`` or ``OSError`` (nothing started then)."""
        self.policy = load_policy(self.config_path)
        settings = self.policy.config.queue
        MessageQueue(self.queue_dir or settings.directory, fsync=settings.fsync, recover=True).close()
        self.sockets = open_listening_sockets(distinct_bindings(self.policy))
        self.area = SharedThrottleArea(workers=_GENERATIONS_AT_ONCE * self.count)
        return [sock.getsockname()[:2] for sock in self.sockets.values()]

    def run(self) -> int:
        """Start the workers and supervise them until SIGTERM or SIGINT; returns the exit status."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        self._start_generation()
        log.info("%d workers started", self.count)
        while True:
            info = signal.sigtimedwait(_SIGNALS, 0.5)
            if info is None or info.si_signo == signal.SIGCHLD:
                self._reap()
                self._restart_due()
            elif info.si_signo == signal.SIGHUP:
                self._reload()
            else:
                break
        self._stop_all()
        return 0

    # -- workers --------------------------------------------------------------------------------

    def _free_slots(self) -> list[int]:
        assert self.area is not None
        held = {worker.slot for worker in self.workers.values()}
        return [slot for slot in range(self.area.workers) if slot not in held]

    def _start_generation(self) -> None:
        for partition, slot in zip(range(self.count), self._free_slots()):
            self._spawn(slot, partition)

    def _spawn(self, slot: int, partition: int) -> None:
        assert self.area is not None and self.policy is not None
        place = WorkerPlace(slot, partition, self.count, dict(self.sockets), self.area, self.policy)
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                status = _worker_main(self.config_path, self.queue_dir, self.grace, place)
            except BaseException:
                log.exception("worker %d failed", slot)
            finally:
                logging.shutdown()
                os._exit(status)
        self.workers[pid] = _Worker(slot, partition, self.generation, pid, time.monotonic())
        log.info("worker %d started (pid %d)", slot, pid)

    def _reap(self) -> None:
        assert self.area is not None
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.area.clear_worker(worker.slot)  # its connections are gone with it; the column is free
            if self._stopping or worker.generation != self.generation:
                log.info("worker %d (pid %d) finished", worker.slot, pid)
                continue
            lived = time.monotonic() - worker.started
            partition = worker.partition
            backoff = min(self._backoff.get(partition, 0.5) * 2, _MAX_BACKOFF) if lived < _QUICK_DEATH else 1.0
            self._backoff[partition] = backoff
            self._restart_at[partition] = time.monotonic() + backoff
            log.error("worker %d (pid %d) exited with status %d; restarting it in %.0f s",
                      worker.slot, pid, os.waitstatus_to_exitcode(status), backoff)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for partition, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[partition]
                self._spawn(self._free_slots()[0], partition)

    def _signal_all(self, signum: int, generation: int | None = None) -> None:
        for worker in list(self.workers.values()):
            if generation is None or worker.generation == generation:
                try:
                    os.kill(worker.pid, signum)
                except ProcessLookupError:
                    pass

    def _stop_all(self) -> None:
        self._stopping = True
        self._restart_at.clear()
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 20
        while self.workers and time.monotonic() < deadline:
            self._reap_blocking(0.1)
        if self.workers:
            log.error("workers %s still running after %.0f s: killed", sorted(w.slot for w in self.workers.values()),
                      self.grace + 20)
            self._signal_all(signal.SIGKILL)
            while self.workers:
                self._reap_blocking(0.1)
        for sock in self.sockets.values():
            sock.close()
        log.info("all workers stopped")

    def _reap_blocking(self, pause: float) -> None:
        before = len(self.workers)
        self._reap()
        if len(self.workers) == before:
            time.sleep(pause)

    # -- reload ---------------------------------------------------------------------------------

    def _reload(self) -> None:
        """Check the file; same bindings: every worker reloads it; new bindings: a new generation."""
        try:
            policy = load_policy(self.config_path)
        except (ConfigError, PluginLoadError) as error:
            log.error("reload refused, the running configuration stays: %s", error)
            return
        wanted = distinct_bindings(policy)
        if set(wanted) == set(self.sockets):
            self.policy = policy
            self._signal_all(signal.SIGHUP, self.generation)
            log.info("reload: every worker reads %s again", self.config_path)
            return
        if len(self._free_slots()) < self.count:
            log.error("reload refused: workers of %d earlier generations are still finishing their sessions; "
                      "send SIGHUP again once they are gone", _GENERATIONS_AT_ONCE - 1)
            return
        added = [binding for binding in wanted if binding not in self.sockets]
        try:
            opened = open_listening_sockets(added)
        except OSError as error:
            log.error("reload refused, the running configuration stays: %s", error)
            return
        self.policy = policy
        for binding, sock in self.sockets.items():
            if binding not in wanted:
                sock.close()  # the old workers hold their own descriptors until they finish
        self.sockets = {binding: self.sockets.get(binding) or opened[binding] for binding in wanted}
        # The old generation stops accepting first (connections wait in the sockets' queues), so
        # that its metrics ports and queue partitions are free for the new one.
        self._signal_all(signal.SIGTERM, self.generation)
        self.generation += 1
        self._restart_at.clear()
        self._start_generation()
        log.info("reload: bindings changed, a new generation of workers serves %s",
                 ", ".join(str(binding) for binding in wanted))


def _worker_main(config: Path, queue_dir: Path | None, grace: float, place: WorkerPlace) -> int:
    from .receiver import RelayReceiver

    try:
        receiver = RelayReceiver(config, queue_dir=queue_dir, shutdown_grace=grace, worker=place)
    except (ConfigError, PluginLoadError) as error:
        log.error("worker %d cannot start: %s", place.slot, error)
        return 1
    receiver.start()
    serve_until_stopped(receiver, announce=False)
    return 0
