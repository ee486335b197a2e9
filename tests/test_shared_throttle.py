"""The shared-memory throttling store and connection tracker, across real forked processes.

Single-process tests inject a clock and compare with the in-process store and tracker; the rest fork
workers (the ``fork`` start method, as the relay's master does) that talk to the test over pipes,
never over multiprocessing's shared semaphores, which a worker killed with SIGKILL could wedge.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from salmon_relayauth.engine.limits import ConnectionCounts
from salmon_relayauth.listener.guard import ConnectionTracker
from salmon_relayauth.model.decision import Decision
from salmon_relayauth.model.limits import RateLimit, RateVerdict
from salmon_relayauth.throttling import shared
from salmon_relayauth.throttling.memory import MemoryThrottleStore
from salmon_relayauth.throttling.process_lock import RecordLock, RobustMutex
from salmon_relayauth.throttling.shared import (
    SharedConnectionTracker,
    SharedThrottleArea,
    SharedThrottleStore,
    key_hash,
)

FORK = multiprocessing.get_context("fork")
REFUSAL = Decision(421, "4.4.2", "Message submission rate for this client has exceeded the configured limit", "", "test")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limit(key: str, per_minute: int, burst: int, *, shadow: bool = False) -> RateLimit:
    return RateLimit(key, per_minute, burst, REFUSAL, "message_rate_limit", shadow)


def allowed(store: SharedThrottleStore, *limits: RateLimit) -> bool:
    return store.consume_now(limits).exceeded is None


@pytest.fixture
def area_factory(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SharedThrottleArea]]:
    """Areas locked by a robust mutex; by the fallback record lock when the test asks for ``"record lock"``."""
    areas: list[SharedThrottleArea] = []
    if getattr(request, "param", "robust mutex") == "record lock":
        monkeypatch.setattr(shared, "process_lock", lambda buffer: RecordLock())

    def make(workers: int = 1, **options: Any) -> SharedThrottleArea:
        areas.append(SharedThrottleArea(workers, **options))
        return areas[-1]

    yield make
    for area in areas:
        area.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[Callable[[Connection], None]], tuple[BaseProcess, Connection]]]:
    """Fork a child running ``body(pipe)``; children still alive at the end are killed."""
    started: list[BaseProcess] = []

    def start(body: Callable[[Connection], None]) -> tuple[BaseProcess, Connection]:
        ours, theirs = FORK.Pipe()
        process = FORK.Process(target=body, args=(theirs,), daemon=True)
        process.start()
        started.append(process)
        return process, ours

    yield start
    for process in started:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGKILL)
        process.join(5)


def receive(pipe: Connection, timeout: float = 10.0) -> Any:
    assert pipe.poll(timeout), "the child did not answer"
    return pipe.recv()


def kill(process: BaseProcess) -> None:
    assert process.pid is not None
    os.kill(process.pid, signal.SIGKILL)
    process.join(5)
    assert process.exitcode == -signal.SIGKILL


# ------------------------------------------------------------------------------------------------
# Same semantics as the in-process store
# ------------------------------------------------------------------------------------------------


def test_same_verdicts_as_the_memory_store(area_factory: Callable[..., SharedThrottleArea]) -> None:
    clock = FakeClock()
    shared, memory = SharedThrottleStore(area_factory(clock=clock)), MemoryThrottleStore(clock=clock, sweep_every=7)
    limits = [limit("a", 60, 3), limit("b", 30, 1), limit("c", 120, 2, shadow=True), limit("d", 600, 10), limit("e", 7, 4)]
    rng = random.Random(20240611)
    outcomes = set()
    for step in range(3000):
        clock.now += rng.choice([0.0, 0.0, 0.0, 0.05, 0.3, 1.0, 4.0])
        chosen = rng.choices(limits, k=rng.randint(1, 3))  # sometimes one key twice in a call
        expected = memory.consume_now(chosen)
        assert shared.consume_now(chosen) == expected, (step, chosen)
        outcomes.add("allowed" if expected.exceeded is None else "shadow" if expected.exceeded.shadow else "refused")
    assert outcomes == {"allowed", "shadow", "refused"}


def test_a_refused_call_charges_none_of_its_limits(area_factory: Callable[..., SharedThrottleArea]) -> None:
    store = SharedThrottleStore(area_factory(clock=FakeClock()))
    wide, narrow = limit("wide", 60, 5), limit("narrow", 60, 1)
    assert allowed(store, wide, narrow)
    charged = store.tat("wide")
    refused = store.consume_now([wide, narrow])
    assert refused.exceeded == narrow and refused.retry_after == pytest.approx(1.0)
    assert store.tat("wide") == charged
    assert [allowed(store, wide) for _ in range(5)] == [True, True, True, True, False]


def test_a_shadow_limit_reports_without_refusing_or_charging(area_factory: Callable[..., SharedThrottleArea]) -> None:
    store = SharedThrottleStore(area_factory(clock=FakeClock()))
    shadow, real = limit("shadow", 60, 1, shadow=True), limit("real", 60, 3)
    assert store.consume_now([shadow, real]) == RateVerdict()
    charged = store.tat("shadow")
    assert store.consume_now([shadow, real]) == RateVerdict(shadow, 0.0)
    assert store.tat("shadow") == charged


def test_async_interface(area_factory: Callable[..., SharedThrottleArea]) -> None:
    async def main() -> list[RateVerdict]:
        store = SharedThrottleStore(area_factory())
        try:
            return [await store.consume([limit("async", 60, 1)]) for _ in range(2)]
        finally:
            await store.close()

    first, second = asyncio.run(main())
    assert first == RateVerdict() and second.exceeded is not None


def test_same_counts_as_the_connection_tracker(area_factory: Callable[..., SharedThrottleArea]) -> None:
    """Names containing the separator must not meet: ("a:b", "c") is not ("a", "b:c")."""
    shared, local = SharedConnectionTracker(area_factory(2), 1), ConnectionTracker()
    pairs = [(connector, source) for connector in ("a", "a:b", "relay") for source in ("b:c", "c", "192.0.2.1")]
    rng = random.Random(7)
    open_now: list[tuple[str, str]] = []
    for _ in range(2000):
        if open_now and rng.random() < 0.45:
            pair = open_now.pop(rng.randrange(len(open_now)))
            shared.closed(*pair)
            local.closed(*pair)
        else:
            pair = rng.choice(pairs)
            open_now.append(pair)
            shared.opened(*pair)
            local.opened(*pair)
        assert all(shared.counts(*each) == local.counts(*each) for each in pairs)
    assert max(local.counts(*each).from_source for each in pairs) > 3


def test_closing_more_than_was_opened_never_goes_negative(area_factory: Callable[..., SharedThrottleArea]) -> None:
    tracker = SharedConnectionTracker(area_factory(), 0)
    tracker.closed("relay", "192.0.2.1")
    tracker.opened("relay", "192.0.2.1")
    tracker.closed("relay", "192.0.2.1")
    tracker.closed("relay", "192.0.2.1")
    tracker.opened("relay", "192.0.2.1")
    assert tracker.counts("relay", "192.0.2.1") == ConnectionCounts(1, 1)


@pytest.mark.parametrize("area_factory", ["robust mutex", "record lock"], indirect=True)
def test_threads_of_one_process_exclude_each_other(area_factory: Callable[..., SharedThrottleArea]) -> None:
    """A record lock does not exclude threads of its own process: its thread lock does (a mutex does by itself)."""
    area = area_factory()
    store = SharedThrottleStore(area)
    done = threading.Event()

    def consume() -> None:
        store.consume_now([limit("threads", 60, 1)])
        done.set()

    area.acquire()
    try:
        thread = threading.Thread(target=consume)
        thread.start()
        assert not done.wait(0.3)
    finally:
        area.release()
    assert done.wait(5)
    thread.join()


def test_key_hash_is_the_same_in_a_fresh_interpreter() -> None:
    """Unlike ``hash()``, which is salted per interpreter (a re-executed worker would disagree)."""
    code = "from salmon_relayauth.throttling.shared import key_hash; print(key_hash('relay:192.0.2.1'))"
    env = {**os.environ, "PYTHONHASHSEED": "random"}
    outputs = {subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert outputs == {f"{key_hash('relay:192.0.2.1')}\n"}


# ------------------------------------------------------------------------------------------------
# Across forked worker processes
# ------------------------------------------------------------------------------------------------


def test_forked_workers_share_one_burst(area_factory: Callable[..., SharedThrottleArea], spawn: Any) -> None:
    area = area_factory(4)
    store = SharedThrottleStore(area)
    slow = limit("message_rate:relay:ip:192.0.2.10", 1, 25)  # one a minute: no refill during the test
    start = FORK.Barrier(4)

    def worker(pipe: Connection) -> None:
        start.wait(10)
        pipe.send(sum(allowed(store, slow) for _ in range(400)))

    pipes = [spawn(worker)[1] for _ in range(4)]
    counts = [receive(pipe) for pipe in pipes]
    assert sum(counts) == 25, counts
    assert not allowed(store, slow)  # the master sees the same table


def test_connection_counts_add_up_and_a_dead_worker_is_cleared(
    area_factory: Callable[..., SharedThrottleArea], spawn: Any
) -> None:
    area = area_factory(3)
    opened_by = {0: 2, 1: 3, 2: 4}

    def worker(index: int) -> Callable[[Connection], None]:
        def body(pipe: Connection) -> None:
            tracker = SharedConnectionTracker(area, index)
            for _ in range(opened_by[index]):
                tracker.opened("relay", "192.0.2.1")
            tracker.opened("relay", f"198.51.100.{index}")
            pipe.send("open")
            pipe.recv()  # told to close
            for _ in range(opened_by[index]):
                tracker.closed("relay", "192.0.2.1")
            pipe.send("closed")

        return body

    children = {index: spawn(worker(index)) for index in opened_by}
    assert [receive(pipe) for _, pipe in children.values()] == ["open"] * 3
    master = SharedConnectionTracker(area, 0)
    assert master.counts("relay", "192.0.2.1") == ConnectionCounts(12, 9)
    assert master.counts("relay", "198.51.100.1") == ConnectionCounts(12, 1)

    kill(children[1][0])
    assert master.counts("relay", "192.0.2.1") == ConnectionCounts(12, 9)  # a dead worker's count stays ...
    area.clear_worker(1)  # ... until the master clears its column
    assert master.counts("relay", "192.0.2.1") == ConnectionCounts(8, 6)
    assert master.counts("relay", "198.51.100.1") == ConnectionCounts(8, 0)
    assert master.counts("relay", "198.51.100.2") == ConnectionCounts(8, 1)

    process, pipe = children[2]
    pipe.send("close")
    assert receive(pipe) == "closed"
    assert master.counts("relay", "192.0.2.1") == ConnectionCounts(4, 2)


@pytest.mark.parametrize("area_factory", ["robust mutex", "record lock"], indirect=True)
def test_a_worker_killed_holding_the_lock_blocks_no_one(area_factory: Callable[..., SharedThrottleArea], spawn: Any) -> None:
    area = area_factory(2)
    store = SharedThrottleStore(area)
    one = limit("lock", 60, 5)

    def holder(pipe: Connection) -> None:
        area.acquire()
        pipe.send("holding")
        pipe.recv()  # never answered: killed here

    def waiter(pipe: Connection) -> None:
        pipe.send(allowed(store, one))

    holding, holder_pipe = spawn(holder)
    assert receive(holder_pipe) == "holding"
    _, waiter_pipe = spawn(waiter)
    assert not waiter_pipe.poll(0.5)  # the lock does exclude other processes ...
    kill(holding)
    assert receive(waiter_pipe, timeout=5) is True  # ... and dies with its holder
    assert allowed(store, one)

    def suicide(pipe: Connection) -> None:
        area.acquire()
        os.kill(os.getpid(), signal.SIGKILL)

    process, _ = spawn(suicide)
    process.join(5)
    assert process.exitcode == -signal.SIGKILL
    _, waiter_pipe = spawn(waiter)
    assert receive(waiter_pipe, timeout=5) is True


@pytest.mark.parametrize("area_factory", ["robust mutex", "record lock"], indirect=True)
def test_a_fork_while_another_thread_holds_the_lock_leaves_the_child_usable(
    area_factory: Callable[..., SharedThrottleArea], spawn: Any
) -> None:
    area = area_factory(2)
    store = SharedThrottleStore(area)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        area.acquire()
        held.set()
        release.wait(10)
        area.release()

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(5)
    _, pipe = spawn(lambda pipe: pipe.send(allowed(store, limit("fork", 60, 1))))
    assert not pipe.poll(0.3)  # the parent still holds the lock ...
    release.set()
    thread.join()
    assert receive(pipe, timeout=5) is True  # ... and the child's copy of a record lock's thread lock was renewed


def test_the_lock_is_a_robust_mutex_here(area_factory: Callable[..., SharedThrottleArea]) -> None:
    """The record lock is only a fallback (it costs two system calls, each letting go of the
    interpreter lock): this machine's C library has robust mutexes."""
    assert isinstance(area_factory().lock, RobustMutex)


# ------------------------------------------------------------------------------------------------
# A small table: expiry, eviction, and the two tables kept apart
# ------------------------------------------------------------------------------------------------


def keys_at_home(slot: int, capacity: int, count: int) -> list[str]:
    """Keys that all hash to the same home slot, so they probe one after another."""
    found = (f"key-{n}" for n in range(100_000))
    return [key for key in found if key_hash(key) % capacity == slot][:count]


def test_expired_slots_are_reused_and_lookups_scan_past_them(
    area_factory: Callable[..., SharedThrottleArea], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = SharedThrottleStore(area_factory(rate_slots=4, clock=clock))
    a, b, c, d, e = (limit(key, 60 if n == 0 else 6, 1) for n, key in enumerate(keys_at_home(0, 4, 5)))
    assert all(allowed(store, each) for each in (a, b, c, d))  # slots 0, 1, 2, 3: the table is full
    clock.now += 2.0  # a (one a second) has expired; b, c, d (one in ten seconds) are live
    assert not allowed(store, b)  # found in slot 1, past the expired slot 0
    with caplog.at_level(logging.WARNING, logger="salmon_relayauth.throttling"):
        assert allowed(store, e)  # takes slot 0
        assert not any(allowed(store, each) for each in (b, c, d, e))
    assert caplog.records == []  # reuse, not eviction


def test_a_full_window_evicts_the_smallest_tat_and_warns_once(
    area_factory: Callable[..., SharedThrottleArea], caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    store = SharedThrottleStore(area_factory(rate_slots=4, clock=clock))
    live = [limit(f"live-{n}", per_minute, 1) for n, per_minute in enumerate((30, 60, 20, 15))]  # TATs +2, +1, +3, +4 s
    newcomer = limit("newcomer", 6, 1)  # TAT +10 s
    assert all(allowed(store, each) for each in live)
    with caplog.at_level(logging.WARNING, logger="salmon_relayauth.throttling"):
        assert allowed(store, newcomer)  # evicts live-1, the soonest to expire
        assert not any(allowed(store, each) for each in (live[0], live[2], live[3], newcomer))
        assert allowed(store, live[1])  # forgotten: a fresh burst (evicting live-0, now the smallest)
        assert allowed(store, live[0])
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "rate table full" in warnings[0]


def test_a_full_connection_window_evicts_the_fewest_connections(
    area_factory: Callable[..., SharedThrottleArea], caplog: pytest.LogCaptureFixture
) -> None:
    tracker = SharedConnectionTracker(area_factory(2, connection_slots=3), 0)
    for source in ("192.0.2.1", "192.0.2.1", "192.0.2.2"):
        tracker.opened("relay", source)  # three keys: relay 3, .1 2, .2 1
    with caplog.at_level(logging.WARNING, logger="salmon_relayauth.throttling"):
        tracker.opened("relay", "192.0.2.3")  # evicts .2
    assert tracker.counts("relay", "192.0.2.3") == ConnectionCounts(4, 1)
    assert tracker.counts("relay", "192.0.2.1") == ConnectionCounts(4, 2)
    assert tracker.counts("relay", "192.0.2.2") == ConnectionCounts(4, 0)
    assert ["connection table full" in record.getMessage() for record in caplog.records] == [True]


def test_a_rate_key_and_a_connection_key_with_one_hash_stay_apart(area_factory: Callable[..., SharedThrottleArea]) -> None:
    area = area_factory(2, rate_slots=1, connection_slots=2, clock=FakeClock())
    store, tracker = SharedThrottleStore(area), SharedConnectionTracker(area, 1)
    same = limit("connector:relay", 60, 1)  # hashes exactly like the tracker's key for connector "relay"
    assert allowed(store, same)
    charged = store.tat(same.key)
    for _ in range(5):
        tracker.opened("relay", "192.0.2.1")
    assert tracker.counts("relay", "192.0.2.1") == ConnectionCounts(5, 5)
    assert store.tat(same.key) == charged
    refused = store.consume_now([same])
    assert refused.exceeded == same and refused.retry_after == pytest.approx(1.0)
    assert tracker.counts("relay", "192.0.2.1") == ConnectionCounts(5, 5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SharedThrottleArea(0),
        lambda: SharedThrottleArea(2, rate_slots=0),
        lambda: SharedConnectionTracker(SharedThrottleArea(2), 2),
        lambda: SharedThrottleArea(2).clear_worker(-1),
    ],
)
def test_bad_sizes_and_worker_indexes_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="workers|rate_slots|worker index"):
        make()
