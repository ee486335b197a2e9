"""A pytest plugin for relay-rule authors (registered through the ``pytest11`` entry point).

Fixtures:

- ``relayauth_plugin_manager``: a fresh plugin manager with the default plugins (factory: pass
  extra ``(name, plugin)`` pairs and names to disable).
- ``smarthost``: a real SMTP server on 127.0.0.1 that records every message it receives.
- ``live_relay``: a factory starting the relay on loopback from TOML text, with extra plugins;
  ``{smarthost_port}`` and ``{port}`` in the text are filled in (``{port}`` is a free port).
- ``smtp_client``: a factory for ``smtplib.SMTP`` connected from a chosen source address
  (any 127.x address poses as another client).

The project's own end-to-end tests use these same fixtures. Connectors hold error replies to
unauthenticated clients for ``tarpit_interval`` (five seconds by default, as in Exchange): set
``tarpit_interval = "00:00:00"`` in test configurations that expect refusals, or the tests crawl.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pluggy
import pytest
from aiosmtpd.controller import Controller

from .plugins import make_plugin_manager
from .receiver import RelayReceiver
from .salmon_handlers import use_handlers

__all__ = [
    "LiveRelay",
    "ReceivedMessage",
    "RecordingSmarthost",
    "free_port",
    "free_ports",
    "live_relay",
    "relayauth_plugin_manager",
    "smarthost",
    "smtp_client",
    "start_relay",
]

RELAY_HANDLER = "salmon_relayauth.handlers.relay"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different TCP ports nobody listens on right now, for one configuration: they are
    held together while chosen (ports chosen one by one and let go may come back the same)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            sock = held.enter_context(socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET))
            sock.bind((host, 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


@dataclass(frozen=True)
class ReceivedMessage:
    """One transaction the test smarthost accepted."""

    peer: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


@dataclass
class RecordingSmarthost:
    """An aiosmtpd server on loopback recording what it receives.

    ``replies`` maps a recipient to a list of RCPT replies given in turn (the last one repeats),
    e.g. ``{"x@fabrikam.com": ["451 4.3.0 Try later", "250 OK"]}``.
    """

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[ReceivedMessage] = field(default_factory=list)
    replies: dict[str, list[str]] = field(default_factory=dict)
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._controller: Controller | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        script = self.replies.get(address.lower())
        if script:
            answer = script.pop(0) if len(script) > 1 else script[0]
            if not answer.startswith("2"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.messages.append(
                ReceivedMessage(str(session.peer[0]), envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content)
            )
            self._lock.notify_all()
        return "250 2.0.0 OK"

    def start(self) -> RecordingSmarthost:
        self.port = self.port or free_port(self.host)
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Wait until ``count`` messages arrived; returns them (fails the test on timeout)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(f"the smarthost received {len(self.messages)} message(s), expected {count}")
            return list(self.messages)


@dataclass
class LiveRelay:
    """A running relay: its receiver, the port it listens on and its configuration file."""

    receiver: RelayReceiver
    port: int
    config_path: Path

    @property
    def queue(self) -> Any:
        return self.receiver.queue

    def stop(self) -> None:
        self.receiver.stop()


def start_relay(
    config_text: str,
    directory: Path,
    *,
    smarthost_port: int = 0,
    plugins: list[tuple[str, object]] | None = None,
    disabled: list[str] | None = None,
    handlers: list[str] | None = None,
    port: int | None = None,
) -> LiveRelay:
    """Write the configuration and start the relay on loopback; the caller stops it."""
    port = port or free_port()
    config_path = directory / "relay.toml"
    config_path.write_text(config_text.replace("{port}", str(port)).replace("{smarthost_port}", str(smarthost_port)))
    use_handlers(handlers if handlers is not None else [RELAY_HANDLER])
    manager = make_plugin_manager(plugins=plugins or [], disabled=disabled or [])
    receiver = RelayReceiver(config_path, queue_dir=directory / "queue", plugin_manager=manager, shutdown_grace=2.0)
    receiver.start()
    return LiveRelay(receiver, port, config_path)


def connect_from(source: str, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> smtplib.SMTP:
    """An SMTP client whose connection comes from ``source`` (a 127.x address poses as another host)."""
    return smtplib.SMTP(host, port, timeout=timeout, source_address=(source, 0))


@pytest.fixture
def relayauth_plugin_manager() -> Callable[..., pluggy.PluginManager]:
    def make(plugins: list[tuple[str, object]] | None = None, disabled: list[str] | None = None) -> pluggy.PluginManager:
        return make_plugin_manager(plugins=plugins or [], disabled=disabled or [])

    return make


@pytest.fixture
def smarthost() -> Iterator[RecordingSmarthost]:
    server = RecordingSmarthost().start()
    yield server
    server.stop()


@pytest.fixture
def live_relay(smarthost: RecordingSmarthost) -> Iterator[Callable[..., LiveRelay]]:
    started: list[LiveRelay] = []
    with tempfile.TemporaryDirectory(prefix="relayauth-") as temp:

        def start(config_text: str, **options: Any) -> LiveRelay:
            directory = Path(tempfile.mkdtemp(dir=temp))
            relay = start_relay(config_text, directory, smarthost_port=smarthost.port, **options)
            started.append(relay)
            return relay

        yield start
        for relay in started:
            relay.stop()


@pytest.fixture
def smtp_client() -> Iterator[Callable[..., smtplib.SMTP]]:
    clients: list[smtplib.SMTP] = []

    def connect(source: str, port: int, host: str = "127.0.0.1") -> smtplib.SMTP:
        client = connect_from(source, port, host)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        try:
            client.close()
        except OSError:
            pass
