"""The relay as a Salmon receiver: ``settings.receiver = RelayReceiver("config/relay.toml")``.

``salmon start`` calls :meth:`RelayReceiver.start`, which opens one socket per distinct binding of
the enabled connectors and serves them on an asyncio loop in a background thread, with a delivery
worker sending the queue to the ``[smarthost]``. ``salmon-relayauth serve`` runs the same class in
the foreground.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy
from salmon.routing import Router

from ._version import __version__
from .listener.pipeline import MessagePipeline
from .listener.server import RelayServer, distinct_bindings, make_tls_context, open_listening_sockets
from .metrics import MetricsRegistry, MetricsServer, QueueStats, RelayMetrics
from .model.enums import ProtocolLoggingLevel
from .queue.delivery import DeliveryStats
from .oplog import DecisionLog, ProtocolLog
from .config.loader import read_config
from .config.problems import ConfigError, ConfigProblem
from .model.addresses import Binding
from .plugins import PluginLoadError, make_plugin_manager
from .policy import RelayPolicy, load_policy
from .queue.delivery import DeliveryWorker
from .queue.store import SPARE_FILES, MessageQueue, QueuedEnvelope
from .throttling.factory import throttle_gate
from .listener.guard import ConnectionTracker
from .throttling.shared import SharedConnectionTracker

if TYPE_CHECKING:
    from .workers import WorkerPlace

__all__ = ["RelayReceiver", "new_event_loop"]

log = logging.getLogger("salmon_relayauth.receiver")
_METRICS_ATTEMPTS = 30  # one a second, while another generation of workers may hold the port


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (``RELAYAUTH_UVLOOP=0`` declines it), else asyncio's."""
    if os.environ.get("RELAYAUTH_UVLOOP", "1") != "0":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


class RelayReceiver:
    """Listener, queue and delivery worker for one configuration file.

    :param config: the TOML configuration (validated now: a bad file raises ``ConfigError`` at boot).
    :param queue_dir: where the durable queue lives (default: ``[queue] directory`` of the config).
    :param plugin_manager: a ready plugin manager (default: defaults plus installed entry points).
    :param shutdown_grace: seconds open sessions get to finish when the relay stops.
    :param worker: this process's place among the worker processes of ``serve`` (none: the only one).
    """

    def __init__(
        self,
        config: str | Path,
        *,
        queue_dir: str | Path | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        shutdown_grace: float = 10.0,
        worker: WorkerPlace | None = None,
    ) -> None:
        # A worker runs the policy its master loaded and checked (the file may have changed since).
        self.policy: RelayPolicy = worker.policy if worker is not None else load_policy(config, plugin_manager)
        self.worker = worker
        settings = self.policy.config.queue
        self.queue = MessageQueue(
            Path(queue_dir) if queue_dir is not None else settings.directory,
            fsync=settings.fsync,
            recover=worker is None,  # the master recovered it before starting the workers
            partition=(worker.partition, worker.count) if worker is not None else None,
            spare_files=SPARE_FILES,
        )
        self.metrics = RelayMetrics(MetricsRegistry())
        self.metrics.watch_queue(self._queue_stats)
        smarthost = self.policy.config.smarthost
        self.delivery = (
            DeliveryWorker(
                self.queue, smarthost, settings, self.policy.config.server.fqdn, on_run=self._count_deliveries
            )
            if smarthost is not None
            else None
        )
        endpoint = self.policy.config.metrics
        # Each worker process serves its own figures, on the configured port plus its partition.
        metrics_port = endpoint.port + (worker.partition if worker is not None and endpoint.port else 0)
        self.metrics_server = (
            MetricsServer(self.metrics.registry, endpoint.host, metrics_port) if endpoint.host is not None else None
        )
        self.shutdown_grace = shutdown_grace
        self._reload_lock = threading.Lock()
        self.loop = new_event_loop()
        self.pipeline = MessagePipeline(self.queue, self._deliver_soon)
        tls = self.policy.config.tls
        context = make_tls_context(str(tls.certificate), str(tls.key)) if tls.certificate and tls.key else None
        logs = self.policy.config.logging
        self.server = RelayServer(
            self.policy,
            self.pipeline,
            self.loop,
            context,
            throttle_gate(self.policy.config, worker.area if worker is not None else None),
            protocol_log=ProtocolLog(
                logs.directory / "ProtocolLog" / "SmtpReceive",
                max_file_size=logs.protocol_log_max_file_size,
                max_directory_size=logs.protocol_log_max_directory_size,
                max_age=logs.protocol_log_max_age,
                version=__version__,
            )
            if any(c.protocol_logging_level is ProtocolLoggingLevel.VERBOSE for c in self.policy.config.connectors)
            else None,
            decision_log=DecisionLog(logs.directory / "decisions.jsonl") if logs.decision_log else None,
            metrics=self.metrics,
            tracker=SharedConnectionTracker(worker.area, worker.slot) if worker is not None else ConnectionTracker(),
        )
        self._thread: threading.Thread | None = None
        self.config_path = Path(config)
        self._given_plugin_manager = plugin_manager

    def _queue_stats(self) -> QueueStats:
        envelopes = self.queue.list()
        return QueueStats(len(envelopes), min((e.received_at for e in envelopes), default=None))

    def _count_deliveries(self, stats: DeliveryStats) -> None:
        for outcome, count in (
            ("delivered", stats.delivered),
            ("deferred", stats.deferred),
            ("failed", stats.failed),
            ("dsn", stats.notifications),
        ):
            if count:
                self.metrics.delivery(outcome, count)  # type: ignore[arg-type]

    def _deliver_soon(self, envelope: QueuedEnvelope, content: bytes) -> None:
        if self.delivery is not None:
            self.delivery.submit(envelope.queue_id, envelope, content)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the relay listens, as ``(host, port)``."""
        return [sock.getsockname()[:2] for sock, _ in self.server.listeners.values()]

    def start(self) -> None:
        """Bind every listening socket (errors raise here), then serve in a background thread."""
        # A handler crash must reach the listener, which answers 451 instead of acknowledging it.
        Router.LOG_EXCEPTIONS = False
        if self.worker is None and self.policy.config.server.worker_count > 1:
            log.warning("[server] workers = %s: worker processes are started by `salmon-relayauth serve`; "
                        "this receiver runs in one process", self.policy.config.server.workers or "auto")
        if self.worker is not None:
            sockets = dict(self.worker.sockets)  # the master chose the bindings (it read the file first)
        else:
            sockets = open_listening_sockets(distinct_bindings(self.policy))
        started = threading.Event()

        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.server.start(sockets))
            except BaseException as error:  # reported to start()'s caller
                failure.append(error)
                started.set()
                return
            if self.metrics_server is not None:
                self.loop.run_until_complete(self._start_metrics(self.metrics_server))
            started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=serve, name="relayauth-listener")
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        if self.delivery is not None:
            self.delivery.start()
        self._reload_on_signal(signal.SIGUSR1)  # Salmon's own `salmon stop` uses SIGHUP to stop
        log.info("relay listening on %s", ", ".join(f"{host}:{port}" for host, port in self.addresses))

    async def _start_metrics(self, server: MetricsServer, attempts: int = _METRICS_ATTEMPTS) -> None:
        """Listen for scrapes; a port in use is logged and tried again every second for a while
        (another generation of workers may still hold it), and mail goes on meanwhile."""
        try:
            await server.start()
        except OSError as error:
            if attempts <= 1:
                log.error("metrics server not started on %s:%d: %s", server.host, server.port, error)
                return
            if attempts == _METRICS_ATTEMPTS:
                log.warning("metrics server not started on %s:%d yet: %s", server.host, server.port, error)
            self.loop.call_later(1.0, lambda: self.loop.create_task(self._start_metrics(server, attempts - 1)))

    def _reload_on_signal(self, signum: int) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signum, lambda *_: threading.Thread(target=self.reload, name="relayauth-reload").start())

    def reload(self) -> list[ConfigProblem]:
        """Read the configuration file again. A valid one takes effect for new connections (open
        sessions finish under the rules they started with, queued mail is untouched); an invalid
        one changes nothing. Returns the problems found; errors are also logged."""
        with self._reload_lock:
            try:
                manager = self._given_plugin_manager
                if manager is None:
                    result = read_config(self.config_path)
                    disabled = result.config.plugins.disabled if result.config is not None else ()
                    manager = make_plugin_manager(disabled=disabled)
                policy = load_policy(self.config_path, manager)
            except (ConfigError, PluginLoadError) as error:
                problems = error.problems if isinstance(error, ConfigError) else [
                    ConfigProblem(str(self.config_path), "[plugins]", "", str(error))
                ]
                for problem in problems:
                    log.error("reload refused, the running configuration stays: %s", problem)
                return problems
            wanted = distinct_bindings(policy)
            added = [binding for binding in wanted if binding not in self.server.listeners]
            removed = [binding for binding in self.server.listeners if binding not in wanted]
            if self.worker is not None and (added or removed):
                # The master owns the sockets: it starts a new generation of workers for new bindings.
                log.warning("worker %d: bindings changed; the master serves them with new workers", self.worker.slot)
                added, removed = [], []
            try:
                sockets = open_listening_sockets(added)
            except OSError as error:
                problem = ConfigProblem(str(self.config_path), "", "bindings", str(error))
                log.error("reload refused, the running configuration stays: %s", problem)
                return [problem]
            self._warn_about_restart_only_settings(policy)
            asyncio.run_coroutine_threadsafe(self._swap(policy, sockets, removed), self.loop).result()
            log.info("configuration reloaded from %s", self.config_path)
            return []

    async def _swap(self, policy: RelayPolicy, sockets: dict[Binding, socket.socket], removed: list[Binding]) -> None:
        self.policy = policy
        self.server.policy = policy
        await self.server.start(sockets)
        await self.server.close_listeners(removed)

    def _warn_about_restart_only_settings(self, policy: RelayPolicy) -> None:
        old, new = self.policy.config, policy.config
        for name in ("queue", "smarthost", "logging", "metrics", "tls", "throttling"):
            if getattr(old, name) != getattr(new, name):
                log.warning("[%s] changed: it takes effect when the relay is restarted", name)

    def stop(self) -> None:
        """Stop listening, let open sessions finish (or get 421), stop the delivery worker.
        Everything that was acknowledged stays in the queue for the next start."""
        if self._thread is None:
            return
        if self.worker is not None and self.delivery is not None:
            # Another generation of workers may start delivering this partition: stop first, so a
            # message is never sent by two of them; what is queued meanwhile waits for their scan.
            self.delivery.stop()
        future = asyncio.run_coroutine_threadsafe(self.server.stop(self.shutdown_grace), self.loop)
        future.result()
        if self.metrics_server is not None:
            asyncio.run_coroutine_threadsafe(self.metrics_server.stop(), self.loop).result()
        if self.server.throttle is not None:
            asyncio.run_coroutine_threadsafe(self.server.throttle.close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self._thread = None
        if self.delivery is not None:
            self.delivery.stop()
        self.queue.close()
        for log_file in (self.server.protocol_log, self.server.decision_log):
            if log_file is not None:
                log_file.close()
        log.info("relay stopped")

    def close(self) -> None:
        """Salmon's name for stopping a receiver."""
        self.stop()
