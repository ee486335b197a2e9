"""Queue partitions: which worker process delivers which queued message (``queue_partition``), and
what a partitioned :class:`MessageQueue` writes and shows."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from queued import queued_envelope

from salmon_relayauth.model.connector import QueueSettings, SmarthostSettings
from salmon_relayauth.queue import DeliveryWorker, MessageQueue
from salmon_relayauth.queue.store import queue_partition
from salmon_relayauth.testing import RecordingSmarthost

CONTENT = b"From: app@contoso.com\r\nTo: ops@contoso.com\r\nSubject: disk full\r\n\r\nThe disk is full.\r\n"


def fill(queue: MessageQueue, count: int) -> list[str]:
    """``count`` new messages written through ``queue``; their ids."""
    ids = []
    for _ in range(count):
        queue_id = queue.new_id()
        queue.enqueue(queued_envelope(queue, queue_id=queue_id), CONTENT)
        ids.append(queue_id)
    return ids


# -- queue_partition -------------------------------------------------------------------------------

SAMPLE_IDS = ["18ec1a2b3c4d5e6f-0a1b2c3d", "18ec1a2b3c4d5e70-ffffffff", "0", "legacy_id-1", "Z" * 128]


def test_partition_is_in_range_and_stable_within_a_process() -> None:
    for count in (1, 2, 3, 7, 64):
        for queue_id in SAMPLE_IDS:
            first = queue_partition(queue_id, count)
            assert 0 <= first < count
            assert all(queue_partition(queue_id, count) == first for _ in range(5))


def test_partition_is_the_same_in_another_process() -> None:
    # Python's hash() differs between processes (PYTHONHASHSEED); the partition must not.
    here = [queue_partition(queue_id, count) for queue_id in SAMPLE_IDS for count in (2, 3, 5)]
    script = (
        "from salmon_relayauth.queue.store import queue_partition\n"
        f"print([queue_partition(i, c) for i in {SAMPLE_IDS!r} for c in (2, 3, 5)])"
    )
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=30,
            env=os.environ | {"PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == repr(here)


def test_one_partition_holds_everything() -> None:
    queue_ids = [f"{time.time_ns():016x}-{secrets.token_hex(4)}" for _ in range(200)]
    assert {queue_partition(queue_id, 1) for queue_id in queue_ids} == {0}


@pytest.mark.parametrize("count", [2, 3, 4, 8])
def test_partition_spreads_new_ids_evenly(tmp_path: Path, count: int) -> None:
    queue = MessageQueue(tmp_path, fsync=False)
    total = 400 * count
    spread = Counter(queue_partition(queue.new_id(), count) for _ in range(total))
    assert sorted(spread) == list(range(count))
    # 400 expected in each; a binomial spread stays far inside 300..500
    assert all(300 <= spread[index] <= 500 for index in range(count)), spread


def test_ids_of_one_instant_still_spread() -> None:
    # The suffix, not only the time stamp, decides: ids made in the same nanosecond differ.
    stamp = time.time_ns()
    spread = Counter(queue_partition(f"{stamp:016x}-{secrets.token_hex(4)}", 4) for _ in range(800))
    assert len(spread) == 4 and min(spread.values()) >= 120, spread


# -- new ids of a partitioned queue ----------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_new_id_always_lands_in_its_partition(tmp_path: Path, count: int) -> None:
    for index in range(count):
        queue = MessageQueue(tmp_path, fsync=False, recover=False, partition=(index, count))
        ids = [queue.new_id() for _ in range(300)]
        assert {queue_partition(queue_id, count) for queue_id in ids} == {index}
        assert len(set(ids)) == len(ids)
        assert ids == sorted(ids), "new ids no longer sort by arrival"


def test_new_ids_of_partitioned_queues_sort_by_arrival_across_them(tmp_path: Path) -> None:
    queues = [MessageQueue(tmp_path, fsync=False, recover=False, partition=(index, 2)) for index in range(2)]
    ids = [queues[number % 2].new_id() for number in range(100)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100


@pytest.mark.parametrize("partition", [(2, 2), (5, 3), (-1, 2), (0, 0)])
def test_a_partition_outside_its_count_is_refused(tmp_path: Path, partition: tuple[int, int]) -> None:
    # new_id() draws suffixes until one falls in the partition: one that no id can fall in would spin
    # forever (and a count of 0 divides by zero), so the queue must refuse it when it is made.
    with pytest.raises(ValueError, match="partition"):
        MessageQueue(tmp_path, fsync=False, recover=False, partition=partition)


# -- what a partitioned queue shows ----------------------------------------------------------------


def test_list_and_len_show_only_the_partition(tmp_path: Path) -> None:
    writers = [MessageQueue(tmp_path, fsync=False, recover=False, partition=(index, 2)) for index in range(2)]
    written = [fill(writer, 15) for writer in writers]
    everything = MessageQueue(tmp_path, fsync=False, recover=False)

    for index, writer in enumerate(writers):
        listed = [item.queue_id for item in writer.list()]
        assert listed == sorted(written[index]), f"partition {index} lists {listed}"
        assert len(writer) == 15
        assert [item.queue_id for item in writer.due(time.time() + 1)] == sorted(written[index])
    assert [item.queue_id for item in everything.list()] == sorted(written[0] + written[1])
    assert len(everything) == 30
    # a partitioned queue still reads any message by id (the admin verbs go through one)
    assert writers[0].load(written[1][0])[1] == CONTENT


def test_removing_from_one_partition_leaves_the_other(tmp_path: Path) -> None:
    writers = [MessageQueue(tmp_path, fsync=False, recover=False, partition=(index, 2)) for index in range(2)]
    written = [fill(writer, 5) for writer in writers]
    for queue_id in written[0]:
        writers[0].remove(queue_id)
    assert len(writers[0]) == 0
    assert sorted(item.queue_id for item in writers[1].list()) == sorted(written[1])


@pytest.mark.parametrize(("written_by", "read_by"), [(3, 2), (2, 3), (1, 4), (4, 1), (2, 2)])
def test_ids_written_under_another_count_belong_to_exactly_one_partition(
    tmp_path: Path, written_by: int, read_by: int
) -> None:
    # The relay restarted with another number of workers: every queued message is still delivered
    # by exactly one of the new workers.
    ids: list[str] = []
    for index in range(written_by):
        partition = (index, written_by) if written_by > 1 else None
        ids += fill(MessageQueue(tmp_path, fsync=False, recover=False, partition=partition), 8)
    ids += ["legacy-id", "0a", "Z9_-"]  # ids from another writer entirely
    for queue_id in ids[-3:]:
        queue = MessageQueue(tmp_path, fsync=False, recover=False)
        queue.enqueue(queued_envelope(queue, queue_id=queue_id), CONTENT)

    readers = [
        MessageQueue(tmp_path, fsync=False, recover=False, partition=(index, read_by)) for index in range(read_by)
    ]
    seen = Counter(item.queue_id for reader in readers for item in reader.list())
    assert sorted(seen) == sorted(ids)
    assert set(seen.values()) == {1}, [queue_id for queue_id, times in seen.items() if times != 1]
    assert sum(len(reader) for reader in readers) == len(ids)
    for index, reader in enumerate(readers):
        assert all(queue_partition(item.queue_id, read_by) == index for item in reader.list())


# -- delivery by partition -------------------------------------------------------------------------


def test_each_partition_delivers_its_own_messages_once(tmp_path: Path) -> None:
    smarthost = RecordingSmarthost().start()
    try:
        settings = QueueSettings(retry_interval=timedelta(seconds=1))
        queues = [MessageQueue(tmp_path, fsync=False, recover=False, partition=(index, 2)) for index in range(2)]
        written = [fill(queue, 6) for queue in queues]
        # ids written by a single process before the relay ran with workers
        single = fill(MessageQueue(tmp_path, fsync=False, recover=False), 6)
        workers = [
            DeliveryWorker(queue, SmarthostSettings(port=smarthost.port), settings, "relay.contoso.com", timeout=10)
            for queue in queues
        ]
        first = workers[0].run_once()
        assert first.delivered == 6 + sum(queue_partition(queue_id, 2) == 0 for queue_id in single)
        assert all(queue_id not in queues[0] for queue_id in written[0])
        assert all(queue_id in queues[1] for queue_id in written[1]), "partition 0 delivered partition 1's mail"
        workers[1].run_once()
        assert len(smarthost.messages) == 18
        assert len(MessageQueue(tmp_path, fsync=False, recover=False)) == 0
        assert workers[0].run_once().delivered == 0 and workers[1].run_once().delivered == 0
        assert len(smarthost.messages) == 18
    finally:
        smarthost.stop()
