"""Queue drain benchmark: delivering a backlog to a smarthost a network away.

With PIPELINING, the delivery worker sends a waiting message's MAIL, RCPT and DATA in the same write
as the end of the previous message's content (RFC 2920), so each message costs one round trip to
the smarthost instead of two. This benchmark queues ``--messages`` messages (no fsync), then drains
them with ``DeliveryWorker.run_once`` into ``smtp-sink``, reached through a proxy that delays each
direction by ``--delay-ms`` (a LAN-like round trip; ``0``: straight to the sink), two ways,
interleaved round by round so that drift hits both alike:

* ``ahead``: the worker as it is;
* ``one by one``: the same worker never sending a message's commands ahead (the behaviour before).

It prints messages/s and CPU ms per message of this process (the delivery runs on its thread; the
proxy and the sink are other processes), per round and as medians, and ahead over one by one.

Run from the project root (needs smtp-sink: ``apt-get install postfix``)::

    .venv/bin/python bench/drain.py                  # 2,000 messages, 0.5 ms each way, 3 rounds
    .venv/bin/python bench/drain.py --delay-ms 0     # loopback, no proxy
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from relay_harness.common import free_port, wait_banner, which  # noqa: E402
from relay_harness.driver import Sink  # noqa: E402

from salmon_relayauth.model.connector import QueueSettings, SmarthostSettings  # noqa: E402
from salmon_relayauth.queue import DeliveryWorker, MessageQueue, QueuedEnvelope  # noqa: E402
from salmon_relayauth.queue.delivery import DeliveryStats  # noqa: E402

CONTENT = b"From: printer@contoso.com\r\nTo: kate@fabrikam.com\r\nSubject: scan\r\n\r\n" + b"x" * 1900 + b"\r\n"


class OneByOne(DeliveryWorker):
    """The worker never sending a message's commands ahead: two round trips per message."""

    def _attempt(self, smarthost, envelope, content, upcoming=None):  # type: ignore[no-untyped-def]
        return super()._attempt(smarthost, envelope, content, None)


def fill(directory: Path, messages: int) -> MessageQueue:
    queue = MessageQueue(directory, fsync=False)
    for _ in range(messages):
        envelope = QueuedEnvelope(
            queue_id=queue.new_id(), sender="printer@contoso.com", recipients=("kate@fabrikam.com",),
            client_address="192.168.5.10", client_port=40000, connector="Anonymous Relay", session_id="bench",
            principals=(), rights=(), received_at=time.time(),
        )
        queue.enqueue(envelope, CONTENT)
    return queue


def drain(
    worker_class: type[DeliveryWorker], directory: Path, messages: int, port: int
) -> tuple[float, float, DeliveryStats]:
    """Messages/s and CPU ms per message for one drain of a fresh backlog."""
    queue = fill(directory, messages)
    worker = worker_class(queue, SmarthostSettings(host="127.0.0.1", port=port), QueueSettings(), "relay.contoso.com",
                          timeout=30)
    started, cpu = time.perf_counter(), time.process_time()
    stats = worker.run_once()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    queue.close()
    return stats.delivered / elapsed, cpu * 1000 / messages, stats


# -- the delaying proxy (a process of its own: ``drain.py --proxy LISTEN TARGET DELAY_MS``) ----------


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy reader to writer, every chunk ``delay`` seconds late, in order."""
    pending: collections.deque[tuple[float, bytes]] = collections.deque()
    arrived = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def deliver() -> None:
        while True:
            while not pending:
                arrived.clear()
                await arrived.wait()
            due, data = pending.popleft()
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            if not data:
                writer.close()
                return
            writer.write(data)

    sender = asyncio.create_task(deliver())
    while True:
        data = await reader.read(65536)
        pending.append((loop.time() + delay, data))
        arrived.set()
        if not data:
            break
    await sender


async def _proxy(listen: int, target: int, delay: float) -> None:
    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            _forward(client_reader, server_writer, delay), _forward(server_reader, client_writer, delay)
        )

    server = await asyncio.start_server(connection, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


# -- the run -----------------------------------------------------------------------------------------


def main() -> int:
    if sys.argv[1:2] == ["--proxy"]:
        listen, target, delay_ms = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        asyncio.run(_proxy(listen, target, delay_ms / 1000))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per drain (default 2000)")
    parser.add_argument("--delay-ms", type=float, default=0.5, help="one-way delay to the smarthost (default 0.5)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each draining both ways (default 3)")
    args = parser.parse_args()
    print("$ " + shlex.join([".venv/bin/python", "bench/drain.py", *sys.argv[1:]]))
    print(f"Python {platform.python_version()} on {platform.platform()}; {args.messages:,} messages of "
          f"{len(CONTENT):,} bytes per drain, smarthost smtp-sink "
          + (f"behind a proxy delaying each direction {args.delay_ms:g} ms" if args.delay_ms else "on loopback"))
    if not which("smtp-sink"):
        print("cannot run: smtp-sink (Debian package postfix) is the smarthost")
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as work:
        workdir = Path(work)
        sink = Sink(workdir)
        proxy = None
        port = sink.port
        try:
            if args.delay_ms:
                port = free_port()
                proxy = subprocess.Popen(
                    [sys.executable, __file__, "--proxy", str(port), str(sink.port), str(args.delay_ms)]
                )
                wait_banner("127.0.0.1", port, 10, alive=lambda: proxy.poll() is None)
            figures: dict[str, list[tuple[float, float]]] = {"ahead": [], "one by one": []}
            ways = [("ahead", DeliveryWorker), ("one by one", OneByOne)]
            for round_number in range(args.rounds):
                line = []
                for name, worker_class in ways if round_number % 2 == 0 else list(reversed(ways)):
                    rate, cpu, stats = drain(worker_class, workdir / f"{name}-{round_number}", args.messages, port)
                    if stats.delivered != args.messages or stats.connections != 1:
                        print(f"  {name}: {stats} (expected {args.messages} delivered on one connection)")
                    figures[name].append((rate, cpu))
                    line.append(f"{name} {rate:,.0f}/s, {cpu:.3f} ms CPU/message")
                print(f"round {round_number + 1}: " + "; ".join(line), flush=True)
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait()
            sink.stop()
    medians = {name: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
               for name, runs in figures.items()}
    for name, (rate, cpu) in medians.items():
        print(f"median {name:<10}: {rate:,.0f} messages/s, {cpu:.3f} ms CPU per message")
    ahead, one_by_one = medians["ahead"], medians["one by one"]
    print(f"ahead / one by one: {ahead[0] / one_by_one[0]:.2f}x the rate, "
          f"{ahead[1] / one_by_one[1]:.2f}x the CPU per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
