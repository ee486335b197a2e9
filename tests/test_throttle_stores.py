"""One test suite for every throttling store: the in-process store, the shared-memory store of
worker processes and Redis (a real redis-server).

The Redis store reads the server's clock, so the shared tests run on real time for every store:
short intervals (600/min is one every 100 ms) and small sleeps. Tests after the shared ones concern
what only Redis has: one round trip per check, the server's clock, several nodes sharing budgets,
the server going away and coming back, and the gate's fallback while it is away.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio
from redis_server import RedisServer

from salmon_relayauth.model.decision import Decision
from salmon_relayauth.model.enums import BackendFailure
from salmon_relayauth.model.limits import RateLimit, RateVerdict
from salmon_relayauth.testing import free_port
from salmon_relayauth.throttling.base import ThrottleStore, ThrottleUnavailable
from salmon_relayauth.throttling.gate import ThrottleGate
from salmon_relayauth.throttling.memory import MemoryThrottleStore
from salmon_relayauth.throttling.redis_store import EXPIRE_MARGIN_MS, RedisThrottleStore
from salmon_relayauth.throttling.shared import SharedThrottleArea, SharedThrottleStore

REFUSAL = Decision(421, "4.4.2", "Message submission rate for this client has exceeded the configured limit", "", "test")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@dataclass
class Backend:
    """A store under test, made inside the test's event loop, plus a look at what it holds."""

    name: str
    url: str = ""

    def make(self) -> ThrottleStore:
        if self.name == "redis":
            return RedisThrottleStore(self.url)
        if self.name == "shared":
            return SharedThrottleStore(SharedThrottleArea(workers=1))  # what worker processes share
        return MemoryThrottleStore(sweep_every=1)  # forget past TATs at every call, to test expiry

    def run(self, body: Callable[[ThrottleStore], Awaitable[None]]) -> None:
        async def main() -> None:
            store = self.make()
            try:
                await body(store)
            finally:
                await store.close()

        asyncio.run(main())

    async def stored(self, store: ThrottleStore, key: str) -> bool:
        """Whether the store still holds state for ``key``."""
        if isinstance(store, MemoryThrottleStore):
            return key in store._tats
        if isinstance(store, SharedThrottleStore):
            return store.tat(key) is not None
        client = redis.asyncio.Redis.from_url(self.url)
        try:
            return bool(await client.exists(key))
        finally:
            await client.aclose()


@pytest.fixture(params=["memory", "shared", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        return Backend("redis", request.getfixturevalue("redis_server").url)
    return Backend(request.param)


def limit(key: str, per_minute: int, burst: int, *, shadow: bool = False) -> RateLimit:
    return RateLimit(key, per_minute, burst, REFUSAL, "message_rate_limit", shadow)


def unique(name: str) -> str:
    return f"relayauth-test:{uuid.uuid4().hex}:{name}"


async def allowed(store: ThrottleStore, *limits: RateLimit) -> bool:
    verdict = await store.consume(limits)
    return verdict.exceeded is None or verdict.exceeded.shadow


# ------------------------------------------------------------------------------------------------
# The shared semantics: every store
# ------------------------------------------------------------------------------------------------


def test_allows_burst_at_once_then_refuses(backend: Backend) -> None:
    async def body(store: ThrottleStore) -> None:
        one_per_second = limit(unique("burst"), 60, 5)
        for _ in range(5):
            assert await store.consume([one_per_second]) == RateVerdict()
        refused = await store.consume([one_per_second])
        assert refused.exceeded == one_per_second and not refused.degraded
        assert 0.5 < refused.retry_after <= 1.0  # five in the bucket, the next one drips in after 1 s
        again = await store.consume([one_per_second])
        assert again.exceeded == one_per_second
        assert again.retry_after <= refused.retry_after  # a refusal charges nothing

    backend.run(body)


def test_steady_rate_is_allowed_over_time(backend: Backend) -> None:
    async def body(store: ThrottleStore) -> None:
        every_100ms = limit(unique("steady"), 600, 1)
        times: list[float] = []
        start = time.monotonic()
        while time.monotonic() - start < 0.55:
            verdict = await store.consume([every_100ms])
            if verdict.exceeded is None:
                times.append(time.monotonic())
            else:
                assert 0 < verdict.retry_after <= 0.1
            await asyncio.sleep(0.01)
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        assert 4 <= len(times) <= 6, times
        assert min(gaps) > 0.09, gaps  # never two within one interval (client-side times: a little jitter)

    backend.run(body)


def test_no_double_burst_across_window_edges(backend: Backend) -> None:
    """Hammering a limit: any span of time holds at most burst + span x rate allowed messages.
    A fixed window would let a full window's worth through at the end of one window and again at
    the start of the next."""

    async def body(store: ThrottleStore) -> None:
        interval, burst = 0.1, 3
        hammered = limit(unique("edges"), 600, burst)
        times: list[float] = []
        start = time.monotonic()
        while time.monotonic() - start < 0.45:
            if await allowed(store, hammered):
                times.append(time.monotonic())
            await asyncio.sleep(0.005)
        assert len(times) >= burst + 3, times  # refills came in
        for first in range(len(times)):
            for last in range(first, len(times)):
                span = times[last] - times[first]
                assert last - first + 1 <= burst + (span + 0.01) / interval, (first, last, times)

    backend.run(body)


def test_several_limits_are_all_or_nothing(backend: Backend) -> None:
    async def body(store: ThrottleStore) -> None:
        wide = limit(unique("wide"), 60, 5)
        narrow = limit(unique("narrow"), 60, 2)
        assert await allowed(store, wide, narrow)
        assert await allowed(store, wide, narrow)
        refused = await store.consume([wide, narrow])
        assert refused.exceeded == narrow and refused.retry_after > 0.5
        assert (await store.consume([narrow, wide])).exceeded == narrow  # the first limit that refuses
        # ``wide`` was charged twice, not four times: three more fit in its burst of five.
        assert [await allowed(store, wide) for _ in range(4)] == [True, True, True, False]

    backend.run(body)


def test_shadow_limit_reports_but_neither_blocks_nor_charges(backend: Backend) -> None:
    async def body(store: ThrottleStore) -> None:
        key = unique("shadow")
        shadow = limit(key, 60, 1, shadow=True)
        real = limit(unique("real"), 60, 3)
        assert await store.consume([shadow, real]) == RateVerdict()
        for _ in range(2):
            verdict = await store.consume([shadow, real])
            assert verdict.exceeded == shadow and verdict.retry_after == 0.0  # would have refused, let through
        assert (await store.consume([shadow, real])).exceeded == real  # the real limit (charged 3 times) refuses
        # The shadow key was charged once (its TAT is 1 s ahead), not three times (3 s ahead).
        enforced = await store.consume([limit(key, 60, 1)])
        assert enforced.exceeded is not None and 0.5 < enforced.retry_after <= 1.0

    backend.run(body)


def test_keys_are_independent(backend: Backend) -> None:
    async def body(store: ThrottleStore) -> None:
        first, second = limit(unique("a"), 60, 2), limit(unique("b"), 60, 2)
        assert [await allowed(store, first) for _ in range(3)] == [True, True, False]
        assert [await allowed(store, second) for _ in range(3)] == [True, True, False]
        assert not await allowed(store, first)

    backend.run(body)


def test_idle_keys_expire(backend: Backend) -> None:
    async def body(store: ThrottleStore) -> None:
        idle = limit(unique("idle"), 600, 1)  # TAT 100 ms ahead
        assert await allowed(store, idle)
        assert await backend.stored(store, idle.key)
        await asyncio.sleep(0.1 + EXPIRE_MARGIN_MS / 1000 + 0.1)
        assert await allowed(store, limit(unique("other"), 600, 1))  # the memory store sweeps on a call
        assert not await backend.stored(store, idle.key)
        assert await allowed(store, idle)  # and a forgotten key starts afresh

    backend.run(body)


def test_gate_passes_a_working_store_through(backend: Backend) -> None:
    async def body(store: ThrottleStore) -> None:
        gate = ThrottleGate(store, MemoryThrottleStore())
        only = limit(unique("gate"), 60, 1)
        assert await gate.consume([only], BackendFailure.REFUSE) == RateVerdict()
        refused = await gate.consume([only], BackendFailure.REFUSE)
        assert refused.exceeded == only and not refused.degraded

    backend.run(body)


# ------------------------------------------------------------------------------------------------
# Redis only
# ------------------------------------------------------------------------------------------------


def test_redis_one_round_trip_per_check(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = RedisThrottleStore(redis_server.url)
        admin = redis.asyncio.Redis.from_url(redis_server.url)
        limits = [limit(unique(name), 600, 100) for name in ("ip", "user", "sender")]
        try:
            await store.consume(limits)  # connects, loads the script
            await admin.config_resetstat()
            for _ in range(10):
                await store.consume(limits)
            stats = await admin.info("commandstats")
        finally:
            await store.close()
            await admin.aclose()
        calls = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
        calls.pop("config", None)  # the admin's own RESETSTAT
        # Commands a script runs are counted too: TIME once, GET and SET once per limit.
        assert calls == {"evalsha": 10, "time": 10, "get": 30, "set": 30}, calls

    asyncio.run(main())


async def stored_tat(admin: redis.asyncio.Redis, key: str) -> float:
    value = await admin.get(key)
    assert value is not None, key
    return float(value)


def test_redis_tats_are_server_time_in_microseconds_and_keys_carry_a_ttl(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = RedisThrottleStore(redis_server.url)
        admin = redis.asyncio.Redis.from_url(redis_server.url)
        key = unique("clock")
        try:
            await store.consume([limit(key, 600, 5)])
            seconds, micros = await admin.time()
            tat, ttl = await stored_tat(admin, key), await admin.pttl(key)
        finally:
            await store.close()
            await admin.aclose()
        ahead = tat - (seconds * 1_000_000 + micros)
        assert 50_000 < ahead <= 100_000  # one interval (100 ms) ahead of the server's clock, in us
        assert EXPIRE_MARGIN_MS < ttl <= 100 + EXPIRE_MARGIN_MS

    asyncio.run(main())


def test_redis_tats_keep_microsecond_precision(redis_server: RedisServer) -> None:
    """7/min is one every 8,571,428.571... us: a TAT rounded on the way to Redis would drift."""

    async def main() -> list[float]:
        store = RedisThrottleStore(redis_server.url)
        admin = redis.asyncio.Redis.from_url(redis_server.url)
        seven = limit(unique("seven"), 7, 5)
        tats = []
        try:
            for _ in range(5):
                assert await allowed(store, seven)
                tats.append(await stored_tat(admin, seven.key))
        finally:
            await store.close()
            await admin.aclose()
        return tats

    tats = asyncio.run(main())
    for earlier, later in zip(tats, tats[1:]):
        assert later - earlier == pytest.approx(60_000_000 / 7, abs=1.0)


def test_redis_nodes_share_one_budget(redis_server: RedisServer) -> None:
    async def main() -> None:
        nodes = [RedisThrottleStore(redis_server.url), RedisThrottleStore(redis_server.url)]
        shared = limit(unique("shared"), 60, 4)
        try:
            results = [await allowed(nodes[turn % 2], shared) for turn in range(6)]
        finally:
            for node in nodes:
                await node.close()
        assert results == [True, True, True, True, False, False]

    asyncio.run(main())


def test_redis_down_raises_unavailable_and_works_again_when_back() -> None:
    async def main(server: RedisServer) -> None:
        store = RedisThrottleStore(server.url)
        key = unique("outage")
        try:
            assert await allowed(store, limit(key, 60, 2))
            server.stop()
            started = time.monotonic()
            with pytest.raises(ThrottleUnavailable, match=f"127.0.0.1:{server.port}"):
                await store.consume([limit(key, 60, 2)])
            assert time.monotonic() - started < 0.5  # a refused connection fails at once
            with pytest.raises(ThrottleUnavailable):
                await store.consume([limit(key, 60, 2)])
            server.start()  # same port, empty (nothing persisted)
            assert [await allowed(store, limit(key, 60, 2)) for _ in range(3)] == [True, True, False]
        finally:
            await store.close()

    with RedisServer() as server:
        asyncio.run(main(server))


def test_redis_restart_between_checks_costs_no_failure() -> None:
    async def main(server: RedisServer) -> None:
        store = RedisThrottleStore(server.url)
        try:
            assert await allowed(store, limit(unique("a"), 60, 2))
            server.stop()
            server.start()  # the pooled connection is dead; the check reconnects instead of failing
            assert await allowed(store, limit(unique("b"), 60, 2))
        finally:
            await store.close()

    with RedisServer() as server:
        asyncio.run(main(server))


@pytest.mark.parametrize(
    "url", ["redis://relay:s3cr%40t@127.0.0.1:{port}/0", "redis://:s3cr%40t@127.0.0.1:{port}/0", "redis://127.0.0.1:{port}/0?password=s3cr%40t"]
)
def test_redis_unavailable_names_the_server_never_the_password(url: str) -> None:
    port = free_port()

    async def main() -> None:
        store = RedisThrottleStore(url.format(port=port))
        try:
            with pytest.raises(ThrottleUnavailable) as raised:
                await store.consume([limit(unique("x"), 60, 1)])
        finally:
            await store.close()
        message = str(raised.value)
        assert f"redis://{'relay@' if 'relay:' in url else ''}127.0.0.1:{port}/0" in message
        assert "s3cr" not in message and "s3cr" not in repr(raised.value.__cause__)

    asyncio.run(main())


def test_redis_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)

        async def main() -> None:
            store = RedisThrottleStore(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", socket_timeout=0.2)
            started = time.monotonic()
            try:
                with pytest.raises(ThrottleUnavailable, match="Timeout"):
                    await store.consume([limit(unique("x"), 60, 1)])
            finally:
                await store.close()
            assert time.monotonic() - started < 1.0

        asyncio.run(main())


def test_gate_falls_back_to_local_limits_while_redis_is_down(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()

    async def main() -> None:
        gate = ThrottleGate(RedisThrottleStore(f"redis://127.0.0.1:{port}/0"), MemoryThrottleStore())
        only = limit(unique("fallback"), 60, 2)
        try:
            verdicts = [await gate.consume([only], BackendFailure.LOCAL_LIMITS) for _ in range(3)]
        finally:
            await gate.close()
        assert [verdict.degraded for verdict in verdicts] == [True, True, True]
        assert [verdict.exceeded for verdict in verdicts] == [None, None, only]  # local counting still limits

    with caplog.at_level(logging.WARNING, logger="salmon_relayauth.throttling"):
        asyncio.run(main())
    warnings = [record.getMessage() for record in caplog.records if "throttling store unavailable" in record.getMessage()]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0] and "in this process only" in warnings[0]


def test_gate_refuses_with_451_while_redis_is_down() -> None:
    async def main() -> RateVerdict:
        gate = ThrottleGate(RedisThrottleStore(f"redis://127.0.0.1:{free_port()}/0"), MemoryThrottleStore())
        try:
            return await gate.consume([limit(unique("refuse"), 60, 100)], BackendFailure.REFUSE)
        finally:
            await gate.close()

    verdict = asyncio.run(main())
    assert verdict.degraded and verdict.exceeded is not None and not verdict.exceeded.shadow
    assert verdict.exceeded.decision.render().startswith("451 4.3.2 ")
