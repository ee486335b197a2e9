"""``salmon-relayauth serve`` as a real process: clean SIGTERM, and no acknowledged mail lost to SIGKILL."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from salmon_relayauth.testing import RecordingSmarthost, free_port

CONFIG = """
[server]
fqdn = "relay.contoso.com"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.10"]
permission_groups = ["AnonymousUsers"]

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
directory = "queue"
retry_interval = "00:00:01"
"""


class ServeProcess:
    def __init__(self, directory: Path, smarthost_port: int) -> None:
        self.port = free_port()
        self.config = directory / "relay.toml"
        self.config.write_text(CONFIG.replace("{port}", str(self.port)).replace("{smarthost_port}", str(smarthost_port)))
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "salmon_relayauth", "serve", str(self.config), "--grace", "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        for line in self.process.stdout:
            if "relaying on" in line:
                threading.Thread(target=self.process.stdout.read, daemon=True).start()  # keep the pipe drained
                return
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"serve did not start (exit code {self.process.poll()})")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def recording_smarthost():
    server = RecordingSmarthost().start()
    yield server
    server.stop()


def message(number: int) -> bytes:
    return f"Subject: message {number}\r\nMessage-ID: <m{number}@contoso.com>\r\n\r\nbody {number}\r\n".encode()


def test_sigterm_lets_an_open_session_finish(tmp_path, recording_smarthost) -> None:
    relay = ServeProcess(tmp_path, recording_smarthost.port)
    relay.start()
    try:
        client = smtplib.SMTP("127.0.0.1", relay.port, source_address=("127.0.0.10", 0), timeout=10)
        client.ehlo("printer")
        assert client.mail("chris@contoso.com")[0] == 250
        assert client.rcpt("kate@fabrikam.com")[0] == 250
        relay.signal(signal.SIGTERM)
        time.sleep(0.3)
        code, text = client.data(message(1))
        assert code == 250 and text.endswith(b"Queued mail for delivery")
        client.quit()
        assert relay.wait() == 0
        received = recording_smarthost.wait_for(1)
        assert received[0].rcpt_tos == ("kate@fabrikam.com",)
    finally:
        relay.kill()


def test_sigkill_mid_stream_loses_nothing_that_got_250(tmp_path) -> None:
    # The smarthost is down while the client sends, so acknowledged mail piles up in the queue.
    recording_smarthost = RecordingSmarthost(port=free_port())
    relay = ServeProcess(tmp_path, recording_smarthost.port)
    relay.start()
    acknowledged: list[int] = []
    stop = threading.Event()

    def send() -> None:
        number = 0
        while not stop.is_set():
            try:
                client = smtplib.SMTP("127.0.0.1", relay.port, source_address=("127.0.0.10", 0), timeout=5)
                for _ in range(5):
                    number += 1
                    client.sendmail("app@contoso.com", [f"user{number}@fabrikam.com"], message(number))
                    acknowledged.append(number)
                client.quit()
            except (OSError, smtplib.SMTPException):
                return  # the relay died under us; what was acknowledged is recorded

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    relay.kill()  # SIGKILL, mid-stream
    stop.set()
    sender.join(10)
    assert len(acknowledged) >= 40, "the client could not send enough messages before the kill"

    assert len(list((tmp_path / "queue").iterdir())) > 0
    recording_smarthost.start()
    restarted = ServeProcess(tmp_path, recording_smarthost.port)
    restarted.port = relay.port
    restarted.config = relay.config
    restarted.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            delivered = {int(m.content.split(b"body ")[1].split(b"\r\n")[0]) for m in recording_smarthost.messages}
            if set(acknowledged) <= delivered:
                break
            time.sleep(0.1)
        subjects = [int(m.content.split(b"body ")[1].split(b"\r\n")[0]) for m in recording_smarthost.messages]
        missing = sorted(set(acknowledged) - set(subjects))
        duplicates = len(subjects) - len(set(subjects))
        print(f"acknowledged {len(acknowledged)}, delivered {len(set(subjects))} distinct, {duplicates} duplicate(s)")
        assert missing == [], f"acknowledged but never delivered: {missing}"
    finally:
        restarted.signal(signal.SIGTERM)
        restarted.wait()
        recording_smarthost.stop()


def test_serve_refuses_a_bad_config_with_its_errors(tmp_path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text('[[connectors]]\nname = "X"\nbindings = ["0.0.0.0:70000"]\nremote_ip_ranges = ["10.0.0.1"]\n')
    result = subprocess.run([sys.executable, "-m", "salmon_relayauth", "serve", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "bindings[0]" in result.stderr and "70000" in result.stderr
