"""The protocol log writer: Exchange's header, rolling by size and date, pruning by age and total size."""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import datetime, timedelta, timezone

from salmon_relayauth.model.enums import Right
from salmon_relayauth.oplog import ProtocolLog, permission_flags

DAY = 86400.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(log: ProtocolLog, count: int, data: str = "x" * 50) -> None:
    for number in range(count):
        log.event("relay\\Connector", "0123456789ABCDEF", number, "127.0.0.1:25", "127.0.0.10:4000", "<", data)
    log.flush()


def test_lines_are_written_in_batches(tmp_path) -> None:
    clock = Clock(1_800_000_000.0)
    log = ProtocolLog(tmp_path, clock=clock)
    for number in range(3):
        log.event("relay\\Connector", "0123456789ABCDEF", number, "127.0.0.1:25", "127.0.0.10:4000", "<", "NOOP")
    assert list(tmp_path.glob("RECV*.LOG")) == []  # pending: nothing written yet
    clock.now += 1.0
    log.event("relay\\Connector", "0123456789ABCDEF", 3, "127.0.0.1:25", "127.0.0.10:4000", ">", "250 OK")
    (path,) = tmp_path.glob("RECV*.LOG")

    def numbers() -> list[str]:
        return [line.split(",")[3] for line in path.read_text().splitlines() if not line.startswith("#")]

    assert numbers() == ["0", "1", "2"]  # a line of a later second wrote those of the second before
    log.event("relay\\Connector", "0123456789ABCDEF", 4, "127.0.0.1:25", "127.0.0.10:4000", "-")
    assert numbers() == ["0", "1", "2"]  # same second: pending
    log.flush()  # the relay's once-a-second flush
    assert numbers() == ["0", "1", "2", "3", "4"]
    log.event("relay\\Connector", "0123456789ABCDEF", 5, "127.0.0.1:25", "127.0.0.10:4000", "+")
    log.close()  # closing writes what is pending
    assert numbers() == ["0", "1", "2", "3", "4", "5"]


def test_header_and_csv_quoting(tmp_path) -> None:
    log = ProtocolLog(tmp_path, clock=Clock(1_800_000_000.25), version="0.1.0")
    log.event("relay\\Connector", "0123456789ABCDEF", 0, "127.0.0.1:25", "127.0.0.10:4000", ">", "220 relay, ready\r\nEVIL")
    log.close()
    (path,) = tmp_path.glob("RECV*.LOG")
    assert path.name == "RECV20270115-1.LOG"
    lines = path.read_bytes().decode().split("\r\n")
    assert lines[:3] == ["#Software: salmon-relayauth", "#Version: 0.1.0", "#Log-Type: SMTP Receive Protocol Log"]
    assert lines[3] == "#Date: 2027-01-15T08:00:00.250Z"
    assert lines[5] == '2027-01-15T08:00:00.250Z,relay\\Connector,0123456789ABCDEF,0,127.0.0.1:25,127.0.0.10:4000,>,"220 relay, ready  EVIL",'


def test_rolls_by_size_and_by_date(tmp_path) -> None:
    clock = Clock(time.time())  # pruning compares file times, so stay near the real clock
    today = datetime.fromtimestamp(clock.now, timezone.utc).strftime("%Y%m%d")
    log = ProtocolLog(tmp_path, max_file_size=2_000, clock=clock)
    write(log, 40)
    names = sorted(path.name for path in tmp_path.glob("RECV*.LOG"))
    assert len(names) >= 2 and all(name.startswith(f"RECV{today}-") for name in names)
    assert all(path.stat().st_size <= 2_000 for path in tmp_path.glob("RECV*.LOG"))
    clock.now += DAY
    write(log, 1)
    tomorrow = datetime.fromtimestamp(clock.now, timezone.utc).strftime("%Y%m%d")
    assert (tmp_path / f"RECV{tomorrow}-1.LOG").exists()
    log.close()


def test_prunes_by_age_and_total_size(tmp_path) -> None:
    clock = Clock(time.time())
    old = tmp_path / "RECV20261201-1.LOG"
    old.write_text("#old\r\n")
    os.utime(old, (clock.now - 40 * DAY, clock.now - 40 * DAY))
    recent = tmp_path / "RECV20270114-1.LOG"
    recent.write_text("#recent\r\n" * 10)
    os.utime(recent, (clock.now - DAY, clock.now - DAY))
    log = ProtocolLog(tmp_path, max_age=timedelta(days=30), max_directory_size=10_000_000, clock=clock)
    write(log, 1)
    assert not old.exists() and recent.exists()
    log.close()
    small = ProtocolLog(tmp_path, max_file_size=1_000, max_directory_size=3_000, clock=clock)
    write(small, 200)
    small.close()
    total = sum(path.stat().st_size for path in tmp_path.glob("RECV*.LOG"))
    assert total <= 3_000 + 1_000  # the file being written is never pruned
    assert not recent.exists()  # the oldest went first


def test_permission_flags_in_exchange_order() -> None:
    rights = {Right.ACCEPT_HEADERS_ROUTING, Right.SMTP_SUBMIT, Right.SMTP_ACCEPT_ANY_SENDER}
    assert permission_flags(rights) == "SMTPSubmit SMTPAcceptAnySender AcceptRoutingHeaders"


def test_threads_logging_at_once_lose_no_line(tmp_path) -> None:
    """Lines are added without a lock while other threads flush: every line is written once, whole."""
    log = ProtocolLog(tmp_path)

    def session(number: int) -> None:
        for sequence in range(500):
            log.event("relay\\Connector", f"{number:016X}", sequence, "127.0.0.1:25", "127.0.0.10:4000", "<", "NOOP")
            if sequence % 50 == 0:
                log.flush()

    threads = [threading.Thread(target=session, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log.close()
    lines = [line for path in tmp_path.glob("RECV*.LOG") for line in path.read_text().splitlines() if line[:1] != "#"]
    shape = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z,relay\\Connector,([0-9A-F]{16}),(\d+),127\.0\.0\.1:25,127\.0\.0\.10:4000,<,NOOP,")
    seen = sorted((match.group(1), int(match.group(2))) for match in map(shape.fullmatch, lines) if match)
    assert len(seen) == len(lines) == 8 * 500
    assert seen == sorted((f"{number:016X}", sequence) for number in range(8) for sequence in range(500))


def test_writers_opening_files_at_the_same_moment_get_one_each(tmp_path, monkeypatch) -> None:
    """Worker processes share the log directory: writers that pick a file name at the same moment
    still each write a file of their own, under one header."""
    writers = 4
    everyone_chose = threading.Barrier(writers)
    real_open = os.open
    opened = threading.local()

    def open_together(path, flags, mode=0o777):  # the first open of each writer waits for the others
        if not getattr(opened, "once", False):
            opened.once = True
            everyone_chose.wait(10)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", open_together)
    logs = [ProtocolLog(tmp_path) for _ in range(writers)]
    threads = [threading.Thread(target=write, args=(log, 10)) for log in logs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()
    for log in logs:
        log.close()
    files = sorted(tmp_path.glob("RECV*.LOG"))
    today = datetime.now(timezone.utc).strftime("%Y%m%d")
    assert [path.name for path in files] == [f"RECV{today}-{number}.LOG" for number in range(1, writers + 1)]
    for path in files:
        lines = path.read_text().splitlines()
        assert sum(line.startswith("#Software:") for line in lines) == 1
        assert len([line for line in lines if line[:1] != "#"]) == 10


def test_pruning_spares_the_file_another_writer_is_writing(tmp_path) -> None:
    """Every worker process prunes the directory it shares with the others: never another's current file."""
    other = ProtocolLog(tmp_path)
    write(other, 5)
    (current,) = tmp_path.glob("RECV*.LOG")
    an_hour_ago = time.time() - 3600
    os.utime(current, (an_hour_ago, an_hour_ago))  # the oldest file: first in line for pruning
    pruning = ProtocolLog(tmp_path, max_file_size=1_000, max_directory_size=1_500)
    write(pruning, 100)  # about 11 files' worth
    pruning.close()
    assert current.exists()
    assert len(list(tmp_path.glob("RECV*.LOG"))) <= 4  # the pruning writer's own old files went
    write(other, 5)
    other.close()
    assert len([line for line in current.read_text().splitlines() if line[:1] != "#"]) == 10
