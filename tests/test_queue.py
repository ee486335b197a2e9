"""The durable queue: round trips, durability across restarts and crashes, concurrency, the CLI."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from queued import queued_envelope

from salmon_relayauth.cli import queue as queue_cli
from salmon_relayauth.queue import MessageQueue, QueuedEnvelope

ROOT = Path(__file__).resolve().parent.parent  # the repository


CONTENT = b"From: app@contoso.com\r\nTo: ops@contoso.com\r\nSubject: disk full\r\n\r\nThe disk is full.\r\n"


def envelope(queue: MessageQueue, **changes: object) -> QueuedEnvelope:
    """Two recipients, and the right to relay."""
    changes = {"recipients": ("ops@contoso.com", "audit@contoso.com"),
               "rights": ("ms-Exch-SMTP-Submit", "ms-Exch-SMTP-Accept-Any-Recipient"), **changes}
    return queued_envelope(queue, **changes)


# -- store ---------------------------------------------------------------------------------------


def test_round_trip_and_restart(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path)
    first, second = envelope(queue), envelope(queue, sender="", recipients=("bcc@fabrikam.com",))
    queue.enqueue(first, CONTENT)
    queue.enqueue(second, b"x" * 70_000)
    assert queue.load(first.queue_id) == (first, CONTENT)
    assert [e.queue_id for e in queue.list()] == [first.queue_id, second.queue_id]
    assert len(queue) == 2 and first.queue_id in queue

    later = replace(first, recipients=("audit@contoso.com",), attempts=2, next_attempt=123.5, last_error="451 4.3.0 busy")
    queue.update(later)
    assert queue.load(first.queue_id) == (later, CONTENT)

    reopened = MessageQueue(tmp_path)
    assert reopened.list() == [later, second]
    assert reopened.load(second.queue_id)[1] == b"x" * 70_000

    reopened.remove(first.queue_id)
    assert reopened.list() == [second]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{second.queue_id}.msg"]
    with pytest.raises(KeyError, match=first.queue_id):
        reopened.load(first.queue_id)
    with pytest.raises(KeyError, match=first.queue_id):
        reopened.remove(first.queue_id)
    with pytest.raises(KeyError, match=first.queue_id):
        reopened.update(later)


def test_due_and_ids(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path, fsync=False)
    now = time.time()
    ready, waiting = envelope(queue), envelope(queue, next_attempt=now + 60)
    for item in (waiting, ready):
        queue.enqueue(item, CONTENT)
    assert [e.queue_id for e in queue.due(now)] == [ready.queue_id]
    assert {e.queue_id for e in queue.due(now + 60)} == {ready.queue_id, waiting.queue_id}
    ids = [queue.new_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_bad_envelopes_are_refused_naming_the_field(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path)
    with pytest.raises(ValueError, match="recipients"):
        queue.enqueue(envelope(queue, recipients=()), CONTENT)
    with pytest.raises(ValueError, match="sender"):
        queue.enqueue(envelope(queue, sender="a@b.c>\r\nRCPT TO:<x@y.z"), CONTENT)
    with pytest.raises(ValueError, match="queue_id"):
        queue.enqueue(envelope(queue, queue_id="../escape"), CONTENT)
    item = envelope(queue)
    queue.enqueue(item, CONTENT)
    with pytest.raises(ValueError, match="already queued"):
        queue.enqueue(item, b"other")
    with pytest.raises(KeyError):
        queue.load("../" + item.queue_id)
    assert queue.load(item.queue_id)[1] == CONTENT
    assert [p.name for p in tmp_path.iterdir()] == [f"{item.queue_id}.msg"]


def test_enqueue_flushes_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    MessageQueue(tmp_path / "durable").enqueue(envelope(MessageQueue(tmp_path / "ids")), CONTENT)
    assert len(calls) == 2  # the message file, then the directory entry
    calls.clear()
    relaxed = MessageQueue(tmp_path / "relaxed", fsync=False)
    relaxed.enqueue(envelope(relaxed), CONTENT)
    assert calls == []


def test_crash_leftovers_are_discarded_and_complete_messages_kept(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path)
    kept, truncated, updated = envelope(queue), envelope(queue), envelope(queue)
    for item in (kept, truncated, updated):
        queue.enqueue(item, CONTENT)
    queue.update(replace(updated, attempts=1))
    # what a crash leaves: a file still being written, a state file being replaced, a message whose
    # tail never reached the disk (possible only with fsync off), a state file whose message was removed
    half = tmp_path / f"{queue.new_id()}.msg.tmp"
    half.write_bytes((tmp_path / f"{kept.queue_id}.msg").read_bytes()[:40])
    (tmp_path / f"{updated.queue_id}.state.tmp").write_bytes(b'{"queue_id":')
    path = tmp_path / f"{truncated.queue_id}.msg"
    path.write_bytes(path.read_bytes()[:-5])
    (tmp_path / f"{queue.new_id()}.state").write_bytes(b"{}")

    recovered = MessageQueue(tmp_path)
    assert [e.queue_id for e in recovered.list()] == [kept.queue_id, updated.queue_id]
    assert recovered.load(updated.queue_id)[0].attempts == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(
        [f"{kept.queue_id}.msg", f"{updated.queue_id}.msg", f"{updated.queue_id}.state"]
    )
    assert (tmp_path / "corrupt" / f"{truncated.queue_id}.msg").exists()  # set aside, not lost


WRITER = """
import sys, time
from pathlib import Path
from salmon_relayauth.queue import MessageQueue, QueuedEnvelope

queue = MessageQueue(Path(sys.argv[1]))
while True:
    queue_id = queue.new_id()
    content = queue_id.encode() * 60_000
    queue.enqueue(QueuedEnvelope(queue_id, "a@b.example", ("c@d.example",), "10.0.0.1", 1, "c", "s", (), (),
                                 time.time()), content)
    print(queue_id, flush=True)
"""


def test_kill_9_loses_no_acknowledged_message(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert writer.stdout is not None
    acknowledged = [writer.stdout.readline().strip() for _ in range(8)]
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    acknowledged += [line.strip() for line in writer.stdout if line.strip()]

    queue = MessageQueue(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    listed = [e.queue_id for e in queue.list()]
    assert set(acknowledged) <= set(listed) and len(listed) <= len(acknowledged) + 1
    for queue_id in listed:
        assert queue.load(queue_id)[1] == queue_id.encode() * 60_000


def test_concurrent_threads_all_land(tmp_path: Path) -> None:
    queue = MessageQueue(tmp_path)
    written: list[str] = []

    def writer() -> None:
        for _ in range(10):
            item = envelope(queue)
            queue.enqueue(item, item.queue_id.encode())
            written.append(item.queue_id)

    threads = [threading.Thread(target=writer) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reopened = MessageQueue(tmp_path)
    assert sorted(written) == [e.queue_id for e in reopened.list()]
    assert all(reopened.load(qid)[1] == qid.encode() for qid in written)


def test_enqueue_async_shares_fsync_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):  # not another test's leftover thread
            calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    queue = MessageQueue(tmp_path)
    items = [envelope(queue) for _ in range(64)]

    async def main() -> None:
        ticks = 0

        async def ticker() -> None:  # the event loop keeps running while messages are flushed
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        tick_task = asyncio.create_task(ticker())
        await asyncio.gather(*(queue.enqueue_async(item, item.queue_id.encode()) for item in items))
        tick_task.cancel()
        assert ticks > 0

    asyncio.run(main())
    queue.close()
    assert sorted(e.queue_id for e in MessageQueue(tmp_path).list()) == sorted(i.queue_id for i in items)
    assert queue.commit_batches < len(items)
    assert len(calls) == len(items) + queue.commit_batches  # one per file, one per batch for the directory


# -- CLI -----------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="salmon-relayauth")
    queue_cli.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    status: int = args.run(args)
    return status


@pytest.fixture
def filled(tmp_path: Path) -> tuple[MessageQueue, list[QueuedEnvelope]]:
    queue = MessageQueue(tmp_path)
    items = [
        envelope(queue, received_at=time.time() - 7200),
        envelope(queue, sender="", attempts=3, next_attempt=time.time() + 600, last_error="451 4.4.1 no answer"),
    ]
    for item in items:
        queue.enqueue(item, CONTENT)
    return queue, items


def test_cli_list(filled: tuple[MessageQueue, list[QueuedEnvelope]], capsys: pytest.CaptureFixture[str]) -> None:
    queue, (old, retried) = filled
    assert run_cli("queue", "list", str(queue.directory)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ID", "AGE", "SENDER", "RECIPIENTS"]
    assert lines[1].startswith(old.queue_id) and "2h00m" in lines[1] and "<app@contoso.com>" in lines[1]
    assert "now" in lines[1] and "ops@contoso.com, audit@contoso.com" in lines[1]
    assert lines[2].startswith(retried.queue_id) and "<>" in lines[2] and "in 9m" in lines[2]
    assert lines[2].endswith("451 4.4.1 no answer") and lines[3] == "2 message(s) queued"

    assert run_cli("queue", "list", str(queue.directory), "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [QueuedEnvelope.from_json(entry) for entry in listed] == [old, retried]


def test_cli_retry(filled: tuple[MessageQueue, list[QueuedEnvelope]], capsys: pytest.CaptureFixture[str]) -> None:
    queue, (_, retried) = filled
    assert run_cli("queue", "retry", str(queue.directory), retried.queue_id) == 0
    assert queue.load(retried.queue_id)[0] == replace(retried, next_attempt=0.0)
    queue.update(retried)
    assert run_cli("queue", "retry", str(queue.directory), "--all") == 0
    assert "2 message(s) due now" in capsys.readouterr().out
    assert len(queue.due(time.time())) == 2
    assert run_cli("queue", "retry", str(queue.directory)) == 2
    assert run_cli("queue", "retry", str(queue.directory), "nosuchid") == 1
    assert "nosuchid" in capsys.readouterr().err


def test_cli_delete_and_show(
    filled: tuple[MessageQueue, list[QueuedEnvelope]], capsys: pytest.CaptureFixture[str]
) -> None:
    queue, (old, retried) = filled
    assert run_cli("queue", "show", str(queue.directory), old.queue_id) == 0
    out = capsys.readouterr().out
    assert "client_address: 192.168.5.10" in out and "Subject: disk full" in out
    assert run_cli("queue", "delete", str(queue.directory), old.queue_id, "nosuchid") == 1
    assert "nosuchid" in capsys.readouterr().err
    assert queue.list() == [retried]
    assert run_cli("queue", "list", str(queue.directory / "missing")) == 2
