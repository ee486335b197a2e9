"""Driving a target: ``smtp-sink`` as the smarthost and delivery counter, ``smtp-source`` as the
client, and one measured run (accepted/s, delivered/s, CPU seconds per 1,000 messages, peak RSS)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .common import TreeMeter, free_port, wait_banner, which
from .targets import HELO, RECIPIENT, SENDER, Target

_SINK_COUNT = re.compile(rb"mesg=(\d+)")


class Counter:
    """Follows a program's running counter on its stdout (``\\r``-separated updates), keeping the
    latest value and when it last changed."""

    def __init__(self, stream: IO[bytes], pattern: re.Pattern[bytes] | None) -> None:
        self.stream, self.pattern = stream, pattern
        self.value = 0
        self.changed_at = time.perf_counter()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, name="counter", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        pending = b""
        fd = self.stream.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *records, pending = re.split(rb"[\r\n]", pending)
            value = None
            for record in records:
                if self.pattern is None:
                    if record.strip().isdigit():
                        value = int(record)
                else:
                    match = self.pattern.search(record)
                    if match:
                        value = int(match.group(1))
            if value is not None and value != self.value:
                with self.lock:
                    self.value, self.changed_at = value, time.perf_counter()


class Sink:
    """``smtp-sink`` on a free loopback port: the smarthost, counting the messages it receives."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        command = [which("smtp-sink") or "smtp-sink", "-c"]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]  # required when started as root
        command += [f"127.0.0.1:{self.port}", "1024"]
        self.errors = open(workdir / "sink.err", "wb")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.errors)
        assert self.process.stdout is not None
        self.counter = Counter(self.process.stdout, _SINK_COUNT)
        try:  # listening before any target may deliver (a refused first delivery would be retried much later)
            wait_banner("127.0.0.1", self.port, 10, alive=lambda: self.process.poll() is None)
        except Exception:
            self.stop()
            raise

    @property
    def count(self) -> int:
        return self.counter.value

    def wait(self, expected: int, stall: float, limit: float) -> None:
        """Until ``expected`` messages arrived, nothing arrived for ``stall`` s, or ``limit`` s passed."""
        deadline = time.perf_counter() + limit
        while self.counter.value < expected and time.perf_counter() < deadline:
            if time.perf_counter() - self.counter.changed_at > stall:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        self.errors.close()


@dataclass
class SourceResult:
    accepted: int
    elapsed: float
    returncode: int
    capped: bool
    error: str


def run_source(port: int, sessions: int, messages: int, recipients: int, reuse: bool, message_file: Path,
               cap: float, workdir: Path) -> SourceResult:
    """``smtp-source`` against 127.0.0.1:port; stopped after ``cap`` seconds (then the accepted count
    is its running counter: DATA transactions completed)."""
    command = [which("smtp-source") or "smtp-source", "-c", "-s", str(sessions), "-m", str(messages),
               "-r", str(recipients), "-N", "-M", HELO, "-f", SENDER, "-t", RECIPIENT, "-F", str(message_file)]
    if reuse:
        command.append("-d")
    command.append(f"127.0.0.1:{port}")
    with open(workdir / "source.err", "wb") as errors:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        counter = Counter(process.stdout, None)
        capped = False
        try:
            process.wait(cap)
        except subprocess.TimeoutExpired:
            capped = True
            process.terminate()
            process.wait()
        elapsed = time.perf_counter() - start
        counter.thread.join(2)
    error = (workdir / "source.err").read_text(errors="replace").strip().splitlines()
    fatal = [line for line in error if "fatal" in line or "error" in line]
    accepted = messages if process.returncode == 0 and not capped else counter.value
    return SourceResult(accepted, elapsed, process.returncode, capped, (fatal or error or [""])[-1])


@dataclass
class Cell:
    sessions: int
    recipients: int
    reuse: bool


@dataclass
class Result:
    target: str
    cell: Cell
    messages: int
    accepted: int = 0
    accept_s: float = 0.0  # smtp-source wall time
    delivered: int | None = None  # messages at the sink (None: the target does not deliver)
    deliver_s: float = 0.0  # from the start of the run to the last message at the sink
    cpu_s: float = 0.0
    peak_rss: int = 0
    peak_pss: int = 0
    processes: int = 0
    stored: int | None = None
    capped: bool = False
    skipped: str = ""  # why there is no figure
    notes: list[str] = field(default_factory=list)
    runs: int = 1  # how many runs the figures are the best of

    @property
    def accepted_rate(self) -> float | None:
        return self.accepted / self.accept_s if self.accepted and self.accept_s > 0 else None

    @property
    def delivered_rate(self) -> float | None:
        return self.delivered / self.deliver_s if self.delivered and self.deliver_s > 0 else None

    @property
    def cpu_per_1k(self) -> float | None:
        return self.cpu_s * 1000 / self.accepted if self.accepted else None

    @property
    def rss_mb(self) -> float | None:
        return self.peak_rss / 2**20 if self.peak_rss else None

    @property
    def pss_mb(self) -> float | None:
        return self.peak_pss / 2**20 if self.peak_pss else None


def best_of(runs: list[Result]) -> Result:
    """One row for repeated runs of a cell: the highest rates, the lowest CPU per message, the largest
    memory peak; every run's notes."""
    measured = [r for r in runs if not r.skipped]
    if not measured:
        return runs[0]
    best = max(measured, key=lambda r: r.accepted_rate or 0)
    merged = Result(best.target, best.cell, best.messages, best.accepted, best.accept_s, best.delivered,
                    best.deliver_s, best.cpu_s, max(r.peak_rss for r in measured), max(r.peak_pss for r in measured),
                    max(r.processes for r in measured), best.stored, best.capped, "",
                    [note for r in runs for note in (r.notes or ([r.skipped] if r.skipped else []))], len(measured))
    fastest = max(measured, key=lambda r: r.delivered_rate or 0)
    merged.delivered, merged.deliver_s = fastest.delivered, fastest.deliver_s
    cheapest = min(measured, key=lambda r: r.cpu_per_1k if r.cpu_per_1k is not None else float("inf"))
    if cheapest.accepted:  # so that merged.cpu_per_1k is the cheapest run's figure
        merged.cpu_s = cheapest.cpu_s * best.accepted / cheapest.accepted
    return merged


def start_target(target: Target, workdir: Path, sink_port: int, notes: list[str]) -> tuple[int, int]:
    """Start ``target`` on a free port, trying a second time after a failure; ``(port, pid)``."""
    try:
        port = free_port()
        return port, target.start(workdir, port, sink_port)
    except Exception as error:
        time.sleep(1.0)
        port = free_port()
        pid = target.start(workdir, port, sink_port)
        notes.append(f"started at the second attempt; the first failed: {str(error)[:300]}")
        return port, pid


def measure(target: Target, cell: Cell, messages: int, message_file: Path, workdir: Path, cap: float,
            stall: float, delivery_limit: float) -> Result:
    """One run: fresh sink and target, smtp-source, wait for the sink, stop everything."""
    result = Result(target.name, cell, messages)
    workdir.mkdir(parents=True, exist_ok=True)
    sink = Sink(workdir)
    try:
        try:
            port, pid = start_target(target, workdir, sink.port, result.notes)
        except Exception as error:  # a target that cannot start is reported, not fatal
            result.skipped = f"did not start: {error}"
            return result
        try:
            time.sleep(0.2)  # let start-up work (imports, first queue scan) settle before measuring
            meter = TreeMeter(pid)
            meter.start()
            t0 = time.perf_counter()
            source = run_source(port, cell.sessions, messages, cell.recipients, cell.reuse, message_file, cap, workdir)
            result.accepted, result.accept_s, result.capped = source.accepted, source.elapsed, source.capped
            if source.returncode != 0 and not source.capped:
                result.notes.append(f"smtp-source exit {source.returncode}: {source.error}")
            if source.capped:
                result.notes.append(f"stopped after {cap:.0f} s ({source.accepted} of {messages} accepted)")
            if target.delivers:
                sink.wait(result.accepted, stall, delivery_limit)
                result.delivered = sink.count
                result.deliver_s = sink.counter.changed_at - t0
                if result.delivered < result.accepted:
                    result.notes.append(f"{result.delivered} of {result.accepted} delivered when the wait ended")
            usage = meter.stop()
            result.cpu_s, result.peak_rss, result.processes = usage.cpu_seconds, usage.peak_rss, usage.processes
            result.peak_pss = usage.peak_pss
            result.stored = target.stored()
            if not target.delivers and result.stored is not None and result.stored != result.accepted:
                result.notes.append(f"{result.stored} messages stored for {result.accepted} acknowledged")
        finally:
            target.stop()
    finally:
        sink.stop()
    return result


def probe_second_rcpt(target: Target, workdir: Path) -> str:
    """Start ``target`` and ask for a second recipient in one transaction; its reply, for the table."""
    import smtplib

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    try:
        target.start(workdir, port, 0)
    except Exception as error:
        return f"did not start: {error}"
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.helo(HELO)
            smtp.mail(SENDER)
            first = smtp.rcpt(f"1{RECIPIENT}")
            second = smtp.rcpt(f"2{RECIPIENT}")
        if second[0] < 400:
            return f"a second RCPT got {second[0]} (unexpected: it should be benchmarked)"
        return f"2nd RCPT refused: '{second[0]} {second[1].decode(errors='replace')}' (1st: {first[0]})"
    except (OSError, smtplib.SMTPException) as error:
        return f"probe failed: {error}"
    finally:
        target.stop()
