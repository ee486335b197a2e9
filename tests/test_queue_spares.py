"""Spare files: a delivered message's file is kept and a new message written over it, without ever
letting a former message's bytes show through or survive as a message."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from salmon_relayauth.queue import MessageQueue, QueuedEnvelope

ROOT = Path(__file__).resolve().parent.parent


def spares(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.name.endswith(".spare"))


def test_a_removed_message_file_holds_the_next_message(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
) -> None:
    queue = MessageQueue(tmp_path, spare_files=4)
    old = new_envelope(queue)
    queue.enqueue(old, b"#" * 9000)
    inode = (tmp_path / f"{old.queue_id}.msg").stat().st_ino
    queue.remove(old.queue_id)
    assert old.queue_id not in queue and len(queue) == 0 and queue.list() == []
    [spare] = spares(tmp_path)
    assert spare.stat().st_ino == inode

    new = new_envelope(queue, recipients=("kate@fabrikam.com",))
    queue.enqueue(new, b"short")  # shorter than the former message: its tail must be cut
    path = tmp_path / f"{new.queue_id}.msg"
    assert path.stat().st_ino == inode and spares(tmp_path) == []
    assert queue.load(new.queue_id) == (new, b"short")
    assert b"#" not in path.read_bytes()
    assert [e.queue_id for e in MessageQueue(tmp_path).list()] == [new.queue_id]  # intact for recovery too


def test_the_pool_is_bounded_and_off_by_default(tmp_path: Path, new_envelope: Callable[..., QueuedEnvelope]) -> None:
    bounded = MessageQueue(tmp_path / "bounded", spare_files=2)
    default = MessageQueue(tmp_path / "default")
    for queue in (bounded, default):
        items = [new_envelope(queue) for _ in range(5)]
        for item in items:
            queue.enqueue(item, b"x")
        for item in items:
            queue.remove(item.queue_id)
    assert len(spares(tmp_path / "bounded")) == 2
    assert list((tmp_path / "default").iterdir()) == []


def test_close_deletes_the_spares_and_recovery_deletes_leftovers(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
) -> None:
    queue = MessageQueue(tmp_path, spare_files=8)
    items = [new_envelope(queue) for _ in range(3)]
    for item in items:
        queue.enqueue(item, b"x")
    queue.remove(items[0].queue_id)
    queue.close()
    assert spares(tmp_path) == [] and len(queue) == 2

    crashed = MessageQueue(tmp_path, spare_files=8, recover=False)
    crashed.remove(items[1].queue_id)  # then the process dies without closing the queue
    assert len(spares(tmp_path)) == 1
    recovered = MessageQueue(tmp_path)
    assert spares(tmp_path) == [] and [e.queue_id for e in recovered.list()] == [items[2].queue_id]


def test_a_spare_deleted_behind_the_queue_is_skipped(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
) -> None:
    queue = MessageQueue(tmp_path, spare_files=8)
    items = [new_envelope(queue) for _ in range(2)]
    for item in items:
        queue.enqueue(item, b"x")
        queue.remove(item.queue_id)
    for spare in spares(tmp_path):
        spare.unlink()  # an operator cleaning up
    new = new_envelope(queue)
    queue.enqueue(new, b"still queued")
    assert queue.load(new.queue_id)[1] == b"still queued"


def test_processes_sharing_a_directory_keep_their_own_spares(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
) -> None:
    first = MessageQueue(tmp_path, spare_files=8, recover=False)
    second = MessageQueue(tmp_path, spare_files=8, recover=False)
    item = new_envelope(first)
    first.enqueue(item, b"x")
    first.remove(item.queue_id)
    second.close()
    assert len(spares(tmp_path)) == 1  # another queue's close leaves them alone


def test_a_negative_pool_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="spare_files"):
        MessageQueue(tmp_path, spare_files=-1)


def test_concurrent_writers_and_removers_lose_nothing(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
) -> None:
    queue = MessageQueue(tmp_path, spare_files=16)
    kept: list[str] = []
    lock = threading.Lock()

    def worker(index: int) -> None:
        for round_ in range(40):
            item = new_envelope(queue)
            content = f"{item.queue_id} {'y' * (round_ * 97 % 5000)}".encode()
            queue.enqueue(item, content)
            assert queue.load(item.queue_id)[1] == content
            if round_ % 3:
                queue.remove(item.queue_id)
            else:
                with lock:
                    kept.append(item.queue_id)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reopened = MessageQueue(tmp_path)
    assert [e.queue_id for e in reopened.list()] == sorted(kept)
    for queue_id in kept:
        assert reopened.load(queue_id)[1].startswith(queue_id.encode())


RECYCLER = """
import sys, time
from pathlib import Path
from salmon_relayauth.queue import MessageQueue, QueuedEnvelope

queue = MessageQueue(Path(sys.argv[1]), spare_files=4)
serial = 0
while True:
    queue_id = queue.new_id()
    serial += 1
    content = queue_id.encode() * (60_000 if serial % 2 else 3)  # long and short, over each other's files
    queue.enqueue(QueuedEnvelope(queue_id, "a@b.example", ("c@d.example",), "10.0.0.1", 1, "c", "s", (), (),
                                 time.time()), content)
    print(queue_id, flush=True)
    if serial % 3 == 0:
        queue.remove(queue_id)
        print("removed", queue_id, flush=True)
"""


def test_kill_9_while_recycling_loses_no_acknowledged_message(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", RECYCLER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert writer.stdout is not None
    lines = [writer.stdout.readline().strip() for _ in range(40)]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    lines += [line.strip() for line in writer.stdout if line.strip()]
    acknowledged = [line for line in lines if not line.startswith("removed ")]
    # every third message is removed right after it is acknowledged (perhaps just before the kill)
    meant_to_stay = {queue_id for serial, queue_id in enumerate(acknowledged, 1) if serial % 3}

    queue = MessageQueue(tmp_path)
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith((".tmp", ".spare"))] == []
    assert not (tmp_path / "corrupt").exists()
    listed = {e.queue_id for e in queue.list()}
    assert meant_to_stay <= listed and len(listed - meant_to_stay) <= 2
    for queue_id in listed:
        content = queue.load(queue_id)[1]
        assert content in (queue_id.encode() * 60_000, queue_id.encode() * 3)


def test_a_worker_deletes_the_spares_of_dead_processes_only(tmp_path: Path) -> None:
    """Workers open the queue without recovering it; a crashed worker's spares must not pile up."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f"{dead_pid}-abcdef-1.spare").write_bytes(b"old")
    live = tmp_path / f"{os.getpid()}-abcdef-1.spare"
    live.write_bytes(b"mine")
    MessageQueue(tmp_path, spare_files=4, recover=False)
    assert spares(tmp_path) == [live]
    MessageQueue(tmp_path, recover=False)  # without spare files of its own, it leaves them be
    assert spares(tmp_path) == [live]
