"""Two ``salmon-relayauth serve`` processes sharing one real Redis: one combined message rate for a
client that alternates between them; Redis stopping mid-test crashes neither (they fall back to local
limits and log it); when Redis is back on the same port, the shared limit applies again."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_server import RedisServer

from salmon_relayauth.throttling.gate import ThrottleGate

from salmon_relayauth.testing import RecordingSmarthost, free_port

CONFIG = """
[server]
fqdn = "relay.contoso.com"

[throttling]
backend = "redis"
redis_url = "{redis_url}"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.10"]
permission_groups = ["AnonymousUsers"]
message_rate_limit = 4
tarpit_interval = "00:00:00"

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
directory = "queue"
retry_interval = "00:00:01"
fsync = false
"""

RATE_EXCEEDED = "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
ACCEPTED = "250 "


class Relay:
    """``python -m salmon_relayauth serve`` in its own directory (its own queue), output kept."""

    def __init__(self, directory: Path, redis_url: str, smarthost_port: int) -> None:
        directory.mkdir()
        self.port = free_port()
        self.config = directory / "relay.toml"
        self.config.write_text(
            CONFIG.replace("{port}", str(self.port))
            .replace("{redis_url}", redis_url)
            .replace("{smarthost_port}", str(smarthost_port))
        )
        self.output: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "salmon_relayauth", "serve", str(self.config), "--grace", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=directory,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if "relaying on" in line:
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(30):
            raise AssertionError(f"serve did not start (exit {self.process.poll()}): {''.join(self.output)}")

    def log_mentions(self, text: str, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.output):
                return True
            time.sleep(0.05)
        return False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, number: int) -> str:
        """One message from the rate-limited client; the reply to MAIL FROM if it refused, else to DATA."""
        with smtplib.SMTP("127.0.0.1", self.port, source_address=("127.0.0.10", 0), timeout=10) as client:
            client.ehlo("printer")
            code, text = client.mail("app@contoso.com")
            if code == 250:
                assert client.rcpt("kate@fabrikam.com")[0] == 250
                body = f"Subject: {number}\r\nMessage-ID: <m{number}@contoso.com>\r\n\r\nbody {number}\r\n"
                code, text = client.data(body.encode())
            return f"{code} {text.decode()}"

    def stop(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def relays(tmp_path: Path, redis_server: RedisServer, smarthost: RecordingSmarthost) -> Iterator[list[Relay]]:
    started = [Relay(tmp_path / name, redis_server.url, smarthost.port) for name in ("node-a", "node-b")]
    try:
        for relay in started:
            relay.wait_ready()
        yield started
    finally:
        for relay in started:
            relay.stop()


def test_two_relays_share_one_rate_and_survive_redis_going_away(
    relays: list[Relay], redis_server: RedisServer, smarthost: RecordingSmarthost
) -> None:
    a, b = relays
    numbers = iter(range(1, 100))

    # One budget for both nodes: 4 messages in total, alternating, then 421 from either.
    assert [relay.send(next(numbers)).startswith(ACCEPTED) for relay in (a, b, a, b)] == [True] * 4
    assert a.send(next(numbers)) == RATE_EXCEEDED
    assert b.send(next(numbers)) == RATE_EXCEEDED

    # Redis stops: both keep serving, each counting on its own (4 per node), and say so.
    redis_server.stop()
    assert b.send(next(numbers)).startswith(ACCEPTED)
    assert [a.send(next(numbers)).startswith(ACCEPTED) for _ in range(4)] == [True] * 4
    assert a.send(next(numbers)) == RATE_EXCEEDED  # local limits are limits
    for relay in (a, b):
        assert relay.alive
        assert relay.log_mentions("throttling store unavailable"), "".join(relay.output)
        assert relay.log_mentions("counting limits in this process only")
        assert relay.log_mentions(f"127.0.0.1:{redis_server.port}")

    # Redis is back (empty) on the same port: the shared budget applies again once each relay tries
    # the store again (it leaves a failed store alone for ThrottleGate.RETRY_AFTER seconds).
    redis_server.start()
    time.sleep(ThrottleGate.RETRY_AFTER + 0.3)
    assert [relay.send(next(numbers)).startswith(ACCEPTED) for relay in (b, a, b, a)] == [True] * 4
    assert b.send(next(numbers)) == RATE_EXCEEDED
    assert a.send(next(numbers)) == RATE_EXCEEDED

    assert a.alive and b.alive
    assert len(smarthost.wait_for(13)) == 13  # 4 shared + 5 local + 4 shared: every acceptance delivered
    time.sleep(0.3)
    assert len(smarthost.messages) == 13
