"""The queue's flushing thread (``enqueue_async``): an acknowledged message is on disk, a failed
flush is reported to its own caller and leaves no file behind, and the relay answers such a failure
with 451 rather than 250."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from salmon_relayauth.queue import MessageQueue, QueuedEnvelope
from salmon_relayauth.testing import connect_from, start_relay


def failing_fsync(monkeypatch: pytest.MonkeyPatch, fails: Callable[[str], bool]) -> None:
    """Make ``os.fsync`` raise EIO for the descriptors ``fails(path)`` picks (by what they name)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if fails(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def open_files() -> list[str]:
    """What this process's file descriptors name (the one listing the directory vanishes meanwhile)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            continue
    return names


async def enqueue_all(queue: MessageQueue, items: list[QueuedEnvelope]) -> list[BaseException | None]:
    results = await asyncio.gather(
        *(queue.enqueue_async(item, item.queue_id.encode()) for item in items), return_exceptions=True
    )
    return [result if isinstance(result, BaseException) else None for result in results]


def test_a_file_that_cannot_be_flushed_fails_alone(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = MessageQueue(tmp_path)
    items = [new_envelope(queue) for _ in range(6)]
    doomed = items[2].queue_id
    failing_fsync(monkeypatch, lambda path: doomed in path)
    outcomes = asyncio.run(enqueue_all(queue, items))
    queue.close()
    assert [isinstance(outcome, OSError) for outcome in outcomes] == [False, False, True, False, False, False]
    assert [path.name for path in tmp_path.iterdir() if doomed in path.name] == []  # neither .tmp nor .msg
    assert sorted(e.queue_id for e in MessageQueue(tmp_path).list()) == sorted(
        item.queue_id for item in items if item.queue_id != doomed
    )


def test_a_directory_that_cannot_be_flushed_withdraws_the_batch(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue = MessageQueue(tmp_path)
    items = [new_envelope(queue) for _ in range(4)]
    failing_fsync(monkeypatch, lambda path: path == str(tmp_path))
    outcomes = asyncio.run(enqueue_all(queue, items))
    queue.close()
    assert all(isinstance(outcome, OSError) for outcome in outcomes)
    assert list(tmp_path.iterdir()) == []  # nothing that was not known durable stays queued


def test_a_cancelled_wait_still_queues_the_message(tmp_path: Path, new_envelope: Callable[..., QueuedEnvelope]) -> None:
    """The client's session may end while its message is being flushed: the message is queued all
    the same (the client, without a reply, sends it again: at least once, never lost)."""
    queue = MessageQueue(tmp_path)
    item = new_envelope(queue)

    async def main() -> None:
        task = asyncio.create_task(queue.enqueue_async(item, b"content"))
        await asyncio.sleep(0)  # the file is written and handed to the flusher
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):  # the flusher settles the batch on the loop, which closes the file
            await asyncio.sleep(0.01)
            if item.queue_id in queue:
                break

    asyncio.run(main())
    queue.close()
    assert MessageQueue(tmp_path).load(item.queue_id) == (item, b"content")
    assert not [path for path in open_files() if str(tmp_path) in path and path.endswith(".msg")]


def test_close_finishes_what_was_handed_over(tmp_path: Path, new_envelope: Callable[..., QueuedEnvelope]) -> None:
    queue = MessageQueue(tmp_path)
    items = [new_envelope(queue) for _ in range(20)]

    async def main() -> None:
        for item in items:
            asyncio.ensure_future(queue.enqueue_async(item, b"x"))
        await asyncio.sleep(0)  # every file written and handed over, none settled yet

    asyncio.run(main())
    queue.close()
    assert len(MessageQueue(tmp_path)) == len(items)


RELAY_CONFIG = """
[server]
fqdn = "relay.contoso.com"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.10"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]
"""


def test_the_relay_answers_a_failed_flush_with_451(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    relay = start_relay(RELAY_CONFIG, tmp_path)
    queue_dir = tmp_path / "queue"
    client = connect_from("127.0.0.10", relay.port)
    try:
        client.ehlo("app01.contoso.com")
        assert client.mail("printer@contoso.com")[0] == 250
        assert client.rcpt("kate@fabrikam.com")[0] == 250
        failing_fsync(monkeypatch, lambda path: path.startswith(str(queue_dir)) and path.endswith(".tmp"))
        reply = client.data(b"Subject: disk trouble\r\n\r\nbody\r\n")
        monkeypatch.undo()
        assert reply == (451, b"4.3.0 Temporary server error, please try again later")
        assert len(relay.queue) == 0 and list(queue_dir.glob("*.msg*")) == []
        # The session goes on, and once the disk is well again the same message is queued.
        assert client.mail("printer@contoso.com")[0] == 250
        assert client.rcpt("kate@fabrikam.com")[0] == 250
        assert client.data(b"Subject: disk trouble\r\n\r\nbody\r\n")[0] == 250
        assert len(relay.queue) == 1
    finally:
        client.close()
        relay.stop()


def test_an_unexpected_failure_of_the_flusher_is_reported_not_waited_for(
    tmp_path: Path,
    new_envelope: Callable[..., QueuedEnvelope],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from salmon_relayauth.queue.flusher import Flusher

    def broken(self: Flusher, batch: list[object]) -> None:
        raise RuntimeError("a bug in the flusher")

    monkeypatch.setattr(Flusher, "_flush", broken)
    queue = MessageQueue(tmp_path)

    async def main() -> BaseException | None:
        [outcome] = await asyncio.wait_for(enqueue_all(queue, [new_envelope(queue)]), timeout=10)
        return outcome

    outcome = asyncio.run(main())
    queue.close()
    assert isinstance(outcome, RuntimeError) and "a bug in the flusher" in str(outcome)
    assert list(tmp_path.iterdir()) == []  # reported as not queued, and not queued
