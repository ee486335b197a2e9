"""The scrape endpoint: a minimal HTTP/1.1 server on a loopback address answering ``GET /metrics``.

One request per connection, answered and closed. A request head larger than ``max_request`` bytes is
refused with 431, one not complete within ``read_timeout`` seconds is dropped, and at most
``max_connections`` connections are served at once, so a slow or hostile local client cannot hold
the endpoint. Rendering runs in a worker thread, off the event loop the SMTP listener may share.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, field

from .registry import MetricsRegistry

__all__ = ["CONTENT_TYPE", "MetricsServer", "check_loopback"]

log = logging.getLogger("salmon_relayauth.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_REASONS = {
    200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable",
}


def check_loopback(host: str) -> None:
    """ValueError unless ``host`` is a loopback IP address (127.0.0.0/8 or ::1): metrics are for the
    monitoring agent on this machine only. Host names are refused, since they may resolve elsewhere."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"metrics listen on a loopback address only (127.0.0.1 or ::1), not {host!r}")


class MetricsServer:
    """Serves ``registry.render()`` at ``http://host:port/metrics``."""

    def __init__(
        self,
        registry: MetricsRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        read_timeout: float = 5.0,
        max_request: int = 8192,
        max_connections: int = 16,
    ) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self.read_timeout = read_timeout
        self.max_request = max_request
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen (port 0 picks a free one); returns the bound port. ValueError for a non-loopback host."""
        check_loopback(self.host)
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=self.max_request)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop any connection still being served."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()  # start_server runs each client in a task of its own
        assert task is not None
        self._clients.add(task)
        try:
            if len(self._clients) > self.max_connections:
                response = _Response(503, "too many connections\n")
            else:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.read_timeout)
                except asyncio.LimitOverrunError:
                    response = _Response(431, "request too large\n")
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                else:
                    response = await self._answer(head)
            await self._respond(writer, response)
            if response.status != 200:
                await self._linger(reader, writer)
        finally:
            self._clients.discard(task)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), self.read_timeout)
            except (asyncio.TimeoutError, ConnectionError):
                pass

    async def _answer(self, head: bytes) -> _Response:
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _Response(400, "bad request\n")
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return _Response(405, "method not allowed\n", {"Allow": "GET, HEAD"})
        if target.split("?", 1)[0] != "/metrics":
            return _Response(404, "not found; metrics are at /metrics\n")
        try:
            text = await asyncio.to_thread(self.registry.render)
        except Exception:
            log.exception("metrics: render failed")
            return _Response(500, "render failed\n")
        return _Response(200, text, {"Content-Type": CONTENT_TYPE}, head_only=method == "HEAD")

    async def _respond(self, writer: asyncio.StreamWriter, response: _Response) -> None:
        data = response.body.encode("utf-8")
        fields = {
            "Content-Type": "text/plain; charset=utf-8",
            **response.headers,
            "Content-Length": str(len(data)),
            "Connection": "close",
        }
        lines = [f"HTTP/1.1 {response.status} {_REASONS[response.status]}"]
        lines += [f"{key}: {value}" for key, value in fields.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if response.head_only else data))
        try:
            await asyncio.wait_for(writer.drain(), self.read_timeout)
        except (asyncio.TimeoutError, ConnectionError):
            pass

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an error reply the client may still be sending: read and drop what it sends until it
        closes (briefly, boundedly), since closing on unread data resets the connection, and the client
        could lose the reply."""
        async def discard() -> None:
            for _ in range(16):
                if not await reader.read(4096):
                    return

        try:
            if writer.can_write_eof():
                writer.write_eof()
            await asyncio.wait_for(discard(), min(self.read_timeout, 2.0))
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass


@dataclass(frozen=True)
class _Response:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    head_only: bool = False
