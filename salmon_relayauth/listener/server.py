"""Listening sockets and the asyncio server: one socket per distinct binding of the enabled connectors."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass, field

from ..engine.smtp_address import MailPath
from ..model.addresses import AddressError, Binding, client_address
from ..model.limits import RateLimit
from ..metrics import RelayMetrics
from ..oplog import DecisionLog, ProtocolLog
from ..model.session import SessionState
from ..policy import RelayPolicy
from ..throttling.gate import ThrottleGate
from ..throttling.memory import MemoryThrottleStore
from ..throttling.shared import SharedConnectionTracker
from .guard import ConnectionTracker
from .pipeline import MessagePipeline
from .smtp import ConnectorSMTP

__all__ = ["LISTEN_BACKLOG", "RelayServer", "open_listening_sockets"]

log = logging.getLogger("salmon_relayauth.listener")

# Salmon's stock receiver listens with a backlog of 5; bursts of clients then see refused connects.
LISTEN_BACKLOG = 1024
LOG_FLUSH_SECONDS = 1.0


def open_listening_sockets(bindings: list[Binding], backlog: int = LISTEN_BACKLOG) -> dict[Binding, socket.socket]:
    """Bound, listening, non-blocking sockets; IPv6 sockets are IPv6-only (bind 0.0.0.0 for IPv4)."""
    sockets: list[socket.socket] = []
    try:
        for binding in bindings:
            family = socket.AF_INET if binding.version == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((binding.host, binding.port))
            except OSError as error:
                raise OSError(error.errno, f"cannot listen on {binding}: {error.strerror}") from error
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return dict(zip(bindings, sockets))


def distinct_bindings(policy: RelayPolicy) -> list[Binding]:
    seen: dict[Binding, None] = {}
    for connector in policy.config.live_connectors:
        for binding in connector.bindings:
            seen.setdefault(binding)
    return list(seen)


@dataclass
class RelayServer:
    """The relay's SMTP server on an event loop. ``policy`` may be replaced for new connections."""

    policy: RelayPolicy
    pipeline: MessagePipeline
    loop: asyncio.AbstractEventLoop
    tls_context: ssl.SSLContext | None = None
    throttle: ThrottleGate | None = None
    protocol_log: ProtocolLog | None = None
    decision_log: DecisionLog | None = None
    metrics: RelayMetrics | None = None
    sessions_opened: int = 0
    # Open connections per connector and source: this process's, or those of every worker process.
    tracker: ConnectionTracker | SharedConnectionTracker = field(default_factory=ConnectionTracker)

    def __post_init__(self) -> None:
        self.listeners: dict[Binding, tuple[socket.socket, asyncio.base_events.Server]] = {}
        self.connections: set[ConnectorSMTP] = set()
        if self.throttle is None:
            self.throttle = ThrottleGate(MemoryThrottleStore())
        self._log_flusher: asyncio.TimerHandle | None = None

    def _flush_logs(self) -> None:
        """Log lines are written within a second, even while the relay is quiet."""
        for log_file in (self.protocol_log, self.decision_log):
            if log_file is not None:
                log_file.flush()
        self._log_flusher = self.loop.call_later(LOG_FLUSH_SECONDS, self._flush_logs)

    async def charge_rate_limits(self, session: SessionState, sender: MailPath) -> RateLimit | None:
        """Charge one message to every rate limit of the session; the limit that was exceeded, if
        any (a limit in shadow mode is returned too, for logging, but let through)."""
        limits = self.policy.rate_limits(session, sender)
        if not limits:
            return None
        assert self.throttle is not None
        verdict = await self.throttle.consume(limits, session.connector.throttling_backend_failure)
        exceeded = verdict.exceeded
        if exceeded is None:
            return None
        if exceeded.shadow:
            log.info(
                "session %s %s: shadow %s would have refused: %s (%s)",
                session.session_id,
                session.connection.remote_address,
                exceeded.name,
                exceeded.decision.render(),
                exceeded.decision.reason,
            )
        return exceeded

    def is_trusted_proxy(self, address: str) -> bool:
        trusted = self.policy.config.proxy.trusted_proxies
        if not trusted:
            return False
        try:
            version, value = client_address(address)
        except AddressError:
            return False
        return any(proxy.contains(version, value) for proxy in trusted)

    def _protocol(self) -> ConnectorSMTP:
        return ConnectorSMTP(self)

    async def start(self, sockets: dict[Binding, socket.socket]) -> None:
        """Serve on newly opened sockets, one per binding."""
        if self._log_flusher is None and (self.protocol_log is not None or self.decision_log is not None):
            self._log_flusher = self.loop.call_later(LOG_FLUSH_SECONDS, self._flush_logs)
        for binding, sock in sockets.items():
            server = await self.loop.create_server(self._protocol, sock=sock)
            self.listeners[binding] = (sock, server)
            log.info("listening on %s", binding)

    async def close_listeners(self, bindings: list[Binding]) -> None:
        """Stop accepting on these bindings; sessions already open on them go on."""
        for binding in bindings:
            sock, server = self.listeners.pop(binding)
            server.close()
            log.info("stopped listening on %s", binding)

    async def stop(self, grace: float) -> None:
        """Stop accepting, give open sessions ``grace`` seconds to finish, then close the rest with
        ``421 4.3.2``: nothing is lost, since a message is only ours once it got its 250."""
        await self.close_listeners(list(self.listeners))
        deadline = self.loop.time() + grace
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            await connection.shut_down()
        if self._log_flusher is not None:
            self._log_flusher.cancel()
            self._log_flusher = None


def make_tls_context(certificate: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    return context
