"""Shared configuration and helpers of the security suite.

The configuration is the sample application's (``sample_app/config/relay.toml``) with every connector
kind switched on, on loopback:

- ``Default Frontend``: everyone (``0.0.0.0-255.255.255.255``), AnonymousUsers, never relays;
- ``Anonymous Relay``: the sample's three hosts (``127.0.0.10`` is the one a test can pose as),
  AnonymousUsers plus ``ms-Exch-SMTP-Accept-Any-Recipient`` for ``ANONYMOUS LOGON``;
- ``Externally Secured Relay``: ENABLED here, on a second port, ``ExternalAuthoritative`` with
  ExchangeServers, for the same hosts.

``{port}`` and ``{smarthost_port}`` are filled by the ``live_relay`` fixture; the second port is
picked with it by :func:`salmon_relayauth.testing.free_ports`, so the two differ. Every tarpit is zero so refusals
come back at once.

:class:`RawSMTP` is a socket client that sends exactly the bytes it is given (no smtplib
normalisation of line ends or dots) and reads one reply at a time, so that nothing the server sends
is read ahead and hidden, and so that a reply to a command that should never have run would show up.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from salmon_relayauth.testing import LiveRelay, free_ports

__all__ = [
    "ALLOWED",
    "DENIED",
    "RawSMTP",
    "Reply",
    "SecureRelay",
    "ServerClosed",
    "bare_line_ends",
    "delivered",
    "error_word",
    "python_internals",
    "sample_config",
]

ALLOWED = "127.0.0.10"  # on Anonymous Relay (first port) and Externally Secured Relay (second port)
DENIED = "127.0.0.20"  # on Default Frontend only: may send to contoso.com, never relay
REPLY_TIMEOUT = 5.0

_CONFIG = r"""
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"
type = "Authoritative"

[[accepted_domains]]
domain = "*.contoso.com"
type = "InternalRelay"

[[connectors]]
name = "Default Frontend"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["0.0.0.0-255.255.255.255"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"
@FRONTEND@

[[connectors]]
name = "Anonymous Relay"
transport_role = "FrontendTransport"
usage = "Custom"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["192.168.5.10", "192.168.5.11", "127.0.0.10"]
permission_groups = ["AnonymousUsers"]
message_rate_limit = 600
message_rate_source = "IPAddress"
tarpit_interval = "00:00:00"
@RELAY@

[[connectors.permissions]]
user = "NT AUTHORITY\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[[connectors]]
name = "Externally Secured Relay"
enabled = true
bindings = ["127.0.0.1:@PORT2@"]
remote_ip_ranges = ["192.168.5.10", "192.168.5.11", "127.0.0.10"]
auth_mechanism = ["ExternalAuthoritative"]
permission_groups = ["ExchangeServers"]
tarpit_interval = "00:00:00"
@SECURED@

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
retry_interval = "00:00:01"
fsync = false
@EXTRA@
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML rendering for {value!r}")


def _keys(settings: dict[str, Any]) -> str:
    return "\n".join(f"{key} = {_toml_value(value)}" for key, value in settings.items())


def sample_config(
    port2: int,
    *,
    frontend: dict[str, Any] | None = None,
    relay: dict[str, Any] | None = None,
    secured: dict[str, Any] | None = None,
    extra: str = "",
) -> str:
    """The sample configuration with the externally secured connector on ``port2``.

    ``frontend``, ``relay`` and ``secured`` are settings for Default Frontend, Anonymous Relay and
    Externally Secured Relay: a key the template already sets is replaced in place (TOML forbids a
    duplicate key), any other is added. ``@PORT2@`` in a value stands for ``port2``; ``extra`` is
    TOML appended at the end (more tables or connectors)."""
    text = _CONFIG
    for marker, settings in (("@FRONTEND@", frontend), ("@RELAY@", relay), ("@SECURED@", secured)):
        settings = dict(settings or {})
        # Replace keys the template already sets, in the block of this connector only.
        start = text.index(marker)
        block_start = text.rindex("[[connectors]]", 0, start)
        block = text[block_start:start]
        for key in list(settings):
            pattern = re.compile(rf"^{re.escape(key)} = .*$", re.MULTILINE)
            if pattern.search(block):
                block = pattern.sub(f"{key} = {_toml_value(settings.pop(key))}", block)
        text = text[:block_start] + block + text[start:]
        text = text.replace(marker, _keys(settings))
    return text.replace("@PORT2@", str(port2)).replace("@EXTRA@", extra)


@dataclass
class SecureRelay:
    """A running relay with the sample's connectors: ``port`` (Default Frontend and Anonymous
    Relay) and ``port2`` (Externally Secured Relay)."""

    live: LiveRelay
    port2: int

    @property
    def port(self) -> int:
        return self.live.port

    @property
    def queue(self) -> Any:
        return self.live.queue


@pytest.fixture
def secure_relay(live_relay: Callable[..., LiveRelay]) -> Callable[..., SecureRelay]:
    """Start the sample configuration; keyword arguments go to :func:`sample_config`."""

    def start(**settings: Any) -> SecureRelay:
        port, port2 = free_ports(2)
        return SecureRelay(live_relay(sample_config(port2, **settings), port=port), port2)

    return start


# -- the raw client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: its code and its lines without the code and separator."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def first(self) -> str:
        return f"{self.code} {self.lines[0]}" if self.lines else str(self.code)

    def __str__(self) -> str:
        return "\n".join(f"{self.code} {line}" for line in self.lines)


class ServerClosed(Exception):
    """The server closed the connection; ``pending`` is what it sent without a line end."""


def _quick_ack(sock: socket.socket) -> None:
    """Acknowledge at once: the listener writes a multi-line reply line by line, and Nagle on its
    side would otherwise wait for this side's delayed ACK (40 ms per EHLO), slowing the suite."""
    option = getattr(socket, "TCP_QUICKACK", None)
    if option is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)
        except OSError:
            pass


@dataclass
class RawSMTP:
    """An SMTP client over a plain socket that sends exact bytes and reads exact replies.

    Every line the server sends is kept in ``transcript`` (for the leak scans), every complete
    reply in ``replies``.
    """

    port: int
    source: str = DENIED
    host: str = "127.0.0.1"
    timeout: float = REPLY_TIMEOUT
    sock: socket.socket = field(init=False)
    pending: bytes = field(default=b"", init=False)
    transcript: list[str] = field(default_factory=list, init=False)
    replies: list[Reply] = field(default_factory=list, init=False)
    banner: Reply | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        try:
            self.sock.bind((self.source, 0))
            self.sock.connect((self.host, self.port))
        except OSError:
            self.sock.close()
            raise

    # -- sending ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def drip(self, data: bytes, interval: float) -> int:
        """Send one byte at a time, ``interval`` seconds apart, stopping as soon as the server
        says something or hangs up; the number of bytes sent."""
        for sent, byte in enumerate(data):
            if self._readable(0):
                return sent
            try:
                self.sock.sendall(bytes([byte]))
            except OSError:
                return sent
            if self._readable(interval):
                return sent + 1
        return len(data)

    def _readable(self, wait: float) -> bool:
        if self.pending:
            return True
        readable, _, _ = select.select([self.sock], [], [], wait)
        return bool(readable)

    # -- reading ---------------------------------------------------------------------------------

    def _line(self) -> str:
        while b"\r\n" not in self.pending:
            try:
                _quick_ack(self.sock)
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise ServerClosed(self.pending.decode("utf-8", "replace"))
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        text = line.decode("utf-8", "replace")
        self.transcript.append(text)
        return text

    def reply(self) -> Reply:
        """Read exactly one (possibly multi-line) reply."""
        lines = [self._line()]
        while lines[-1][3:4] == "-":
            lines.append(self._line())
        code = int(lines[0][:3]) if lines[0][:3].isdigit() else 0
        for line in lines:
            assert line[:3] == lines[0][:3], f"malformed reply {lines!r}"
        result = Reply(code, tuple(line[4:] for line in lines))
        self.replies.append(result)
        return result

    def read_banner(self) -> Reply:
        self.banner = self.reply()
        return self.banner

    def command(self, line: bytes | str) -> Reply:
        """Send one command line (CRLF added) and read its reply."""
        raw = line.encode("ascii") if isinstance(line, str) else line
        self.send(raw + b"\r\n")
        return self.reply()

    def replies_until_closed(self, timeout: float | None = None) -> list[Reply]:
        """Every reply the server still sends until it closes the connection (fails when it does
        not close within ``timeout``)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        collected = []
        while True:
            try:
                collected.append(self.reply())
            except ServerClosed as closed:
                if closed.args[0]:
                    self.transcript.append(closed.args[0])
                return collected
            except socket.timeout:
                raise AssertionError(f"the server did not close the connection; got {collected!r}") from None

    def is_closed(self, timeout: float = 2.0) -> bool:
        """True when the server closed the connection (after anything it still had to send)."""
        try:
            self.replies_until_closed(timeout)
        except AssertionError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        return True

    def nothing_more(self, wait: float = 0.3) -> bool:
        """True when the server sends nothing within ``wait`` seconds (and did not close)."""
        if self.pending:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return True
        finally:
            self.sock.settimeout(self.timeout)
        self.pending += chunk
        return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # -- conversations ---------------------------------------------------------------------------

    def ehlo(self, name: str = "client.example") -> Reply:
        return self.command(f"EHLO {name}")

    def in_step(self) -> bool:
        """Send NOOP and check that the next reply is NOOP's: no reply to anything else (a command
        that should never have run) came in between. Deterministic, unlike waiting for silence."""
        reply = self.command("NOOP")
        return reply.first == "250 2.0.0 OK"


@pytest.fixture
def raw_client(live_relay: Callable[..., LiveRelay]) -> Iterator[Callable[..., RawSMTP]]:
    """A factory for :class:`RawSMTP` connections, closed after the test (before the relay stops,
    hence the dependency on ``live_relay``); the banner is read unless ``banner=False``."""
    opened: list[RawSMTP] = []

    def connect(port: int, source: str = DENIED, host: str = "127.0.0.1", *, banner: bool = True, timeout: float = REPLY_TIMEOUT) -> RawSMTP:
        client = RawSMTP(port, source, host, timeout)
        opened.append(client)
        if banner:
            client.read_banner()
        return client

    connect.opened = opened  # type: ignore[attr-defined]
    yield connect
    for client in opened:
        client.close()


# -- what a reply must never contain --------------------------------------------------------------

_PYTHON_INTERNALS = re.compile(
    r"Traceback|Exception|\b[A-Z][A-Za-z]*(?:Error|Exception|Warning)\b|File \"|line \d+, in |"
    r"\b(?:StopIteration|KeyboardInterrupt|SystemExit|GeneratorExit)\b|<class '|0x[0-9a-f]{6,}>"
)
_ERROR_WORD = re.compile(r"\bError\b")


def python_internals(lines: list[str]) -> list[str]:
    """The lines that name a Python exception class, show a traceback or an object repr."""
    return [line for line in lines if _PYTHON_INTERNALS.search(line)]


def error_word(lines: list[str]) -> list[str]:
    """The lines using the word ``Error`` (aiosmtpd's fallback ``500 Error: (ValueError) ...``)."""
    return [line for line in lines if _ERROR_WORD.search(line)]


def delivered(relay: SecureRelay | LiveRelay, smarthost: Any, timeout: float = 10.0) -> list[Any]:
    """Wait until the relay's queue is empty (everything that got a 250 went to the smarthost),
    then return what the smarthost recorded. A message leaves the queue only after the smarthost
    accepted it, so nothing still on its way can be missed."""
    deadline = time.monotonic() + timeout
    while len(relay.queue) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(relay.queue) == 0, f"the relay's queue did not drain: {relay.queue.list()!r}"
    return list(smarthost.messages)


def bare_line_ends(content: bytes) -> list[int]:
    """Offsets of every CR not followed by LF and every LF not preceded by CR."""
    return [match.start() for match in re.finditer(rb"\r(?!\n)|(?<!\r)\n", content)]
