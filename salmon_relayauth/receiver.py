"""The relay as a Salmon receiver: ``settings.receiver = RelayReceiver("config/relay.toml")``.

``salmon start`` calls :meth:`RelayReceiver.start`, which opens one socket per distinct binding of
the enabled connectors and serves them on an asyncio loop in a background thread, with a delivery
worker sending the queue to the ``[smarthost]``. ``salmon-relayauth serve`` runs the same class in
the foreground.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pluggy
from salmon.routing import Router

from ._version import __version__
from .listener.pipeline import MessagePipeline
from .listener.server import RelayServer, distinct_bindings, make_tls_context, open_listening_sockets
from .metrics import MetricsRegistry, MetricsServer, QueueStats, RelayMetrics
from .model.enums import ProtocolLoggingLevel
from .queue.delivery import DeliveryStats
from .oplog import DecisionLog, ProtocolLog
from .policy import RelayPolicy, load_policy
from .queue.delivery import DeliveryWorker
from .queue.store import MessageQueue
from .throttling.factory import throttle_gate

__all__ = ["RelayReceiver"]

log = logging.getLogger("salmon_relayauth.receiver")


class RelayReceiver:
    """Listener, queue and delivery worker for one configuration file.

    :param config: the TOML configuration (validated now: a bad file raises ``ConfigError`` at boot).
    :param queue_dir: where the durable queue lives (default: ``[queue] directory`` of the config).
    :param plugin_manager: a ready plugin manager (default: defaults plus installed entry points).
    :param shutdown_grace: seconds open sessions get to finish when the relay stops.
    """

    def __init__(
        self,
        config: str | Path,
        *,
        queue_dir: str | Path | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        shutdown_grace: float = 10.0,
    ) -> None:
        self.policy: RelayPolicy = load_policy(config, plugin_manager)
        settings = self.policy.config.queue
        self.queue = MessageQueue(Path(queue_dir) if queue_dir is not None else settings.directory, fsync=settings.fsync)
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
        self.metrics_server = (
            MetricsServer(self.metrics.registry, endpoint.host, endpoint.port) if endpoint.host is not None else None
        )
        self.shutdown_grace = shutdown_grace
        self.loop = asyncio.new_event_loop()
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="relayauth-route")
        self.pipeline = MessagePipeline(self.queue, self.executor, self._wake_delivery)
        tls = self.policy.config.tls
        context = make_tls_context(str(tls.certificate), str(tls.key)) if tls.certificate and tls.key else None
        logs = self.policy.config.logging
        self.server = RelayServer(
            self.policy,
            self.pipeline,
            self.loop,
            context,
            throttle_gate(self.policy.config),
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
        )
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

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

    def _wake_delivery(self) -> None:
        if self.delivery is not None:
            self.delivery.wake()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the relay listens, as ``(host, port)``."""
        return [sock.getsockname()[:2] for sock in self._sockets]

    def start(self) -> None:
        """Bind every listening socket (errors raise here), then serve in a background thread."""
        # A handler crash must reach the listener, which answers 451 instead of acknowledging it.
        Router.LOG_EXCEPTIONS = False
        self._sockets = open_listening_sockets(distinct_bindings(self.policy))
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start(self._sockets))
            if self.metrics_server is not None:
                self.loop.run_until_complete(self.metrics_server.start())
            started.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=serve, name="relayauth-listener")
        self._thread.start()
        started.wait()
        if self.delivery is not None:
            self.delivery.start()
        log.info("relay listening on %s", ", ".join(f"{host}:{port}" for host, port in self.addresses))

    def stop(self) -> None:
        """Stop listening, let open sessions finish (or get 421), stop the delivery worker.
        Everything that was acknowledged stays in the queue for the next start."""
        if self._thread is None:
            return
        future = asyncio.run_coroutine_threadsafe(self.server.stop(self.shutdown_grace), self.loop)
        future.result()
        if self.metrics_server is not None:
            asyncio.run_coroutine_threadsafe(self.metrics_server.stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self._thread = None
        self.executor.shutdown(wait=True)
        if self.delivery is not None:
            self.delivery.stop()
        self.queue.close()
        for log_file in (self.server.protocol_log, self.server.decision_log):
            if log_file is not None:
                log_file.close()
        for sock in self._sockets:
            sock.close()
        log.info("relay stopped")

    def close(self) -> None:
        """Salmon's name for stopping a receiver."""
        self.stop()
