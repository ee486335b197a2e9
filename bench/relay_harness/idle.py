"""``bench/relay --idle``: hold many idle SMTP sessions open against a target and report its memory.

Each session connects from its own loopback address (127.0.1.1, 127.0.1.2, ...: a thousand idle
printers, so Exchange's default per-source limit of 20 connections does not apply), reads the banner
and then says nothing. While they are held, one message goes through the target from 127.0.0.1 to show
it still serves, and the target's CPU time over the hold shows whether idle sessions cost anything.
"""

from __future__ import annotations

import asyncio
import ipaddress
import smtplib
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from .driver import Sink, start_target
from .targets import RECIPIENT, SENDER, Target

FIRST_SOURCE = int(ipaddress.IPv4Address("127.0.1.1"))


@dataclass
class IdleResult:
    target: str
    sessions: int
    rss_start: int = 0
    rss_warm: int = 0
    rss_held: int = 0
    pss_held: int = 0
    rss_after: int = 0
    greeted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    open_s: float = 0.0
    hold_s: float = 0.0
    hold_cpu_s: float = 0.0
    probe: str = ""
    probe_ms: float = 0.0
    error: str = ""


def _tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [process]


def _memory(process: psutil.Process) -> tuple[int, int]:
    """RSS and PSS summed over the process and its children (the relay's worker processes)."""
    rss = pss = 0
    for member in _tree(process):
        try:
            info = member.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return rss, pss


def _rss(process: psutil.Process) -> int:
    return _memory(process)[0]


def _cpu(process: psutil.Process) -> float:
    total = 0.0
    for member in _tree(process):
        try:
            total += sum(member.cpu_times()[:2])
        except psutil.NoSuchProcess:
            continue
    return total


def _send_one(port: int) -> tuple[str, float]:
    start = time.perf_counter()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
            smtp.helo("app01.contoso.com")
            smtp.sendmail(SENDER, [RECIPIENT], f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: idle probe\r\n\r\nhello\r\n")
            reply = "250 (sendmail accepted)"
    except (OSError, smtplib.SMTPException) as error:
        reply = f"{type(error).__name__}: {error}"
    return reply, (time.perf_counter() - start) * 1000


async def _open(port: int, count: int, result: IdleResult) -> list[asyncio.StreamWriter]:
    writers: list[asyncio.StreamWriter] = []
    gate = asyncio.Semaphore(100)  # connect in waves, not one SYN burst of a thousand

    async def one(index: int) -> None:
        source = str(ipaddress.IPv4Address(FIRST_SOURCE + index))
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), 30
                )
                banner = (await asyncio.wait_for(reader.readline(), 30)).decode("ascii", "replace")
            except (OSError, asyncio.TimeoutError) as error:
                key = type(error).__name__
                result.refused[key] = result.refused.get(key, 0) + 1
                return
        if banner.startswith("220"):
            result.greeted += 1
            writers.append(writer)
        else:
            key = banner[:3] or "closed"
            result.refused[key] = result.refused.get(key, 0) + 1
            writer.close()

    await asyncio.gather(*(one(index) for index in range(count)))
    return writers


async def _hold(port: int, count: int, hold: float, process: psutil.Process, result: IdleResult) -> None:
    start = time.perf_counter()
    writers = await _open(port, count, result)
    result.open_s = time.perf_counter() - start
    await asyncio.sleep(1.0)  # let the target settle with every session open
    cpu0 = _cpu(process)
    held_start = time.perf_counter()
    loop = asyncio.get_running_loop()
    result.probe, result.probe_ms = await loop.run_in_executor(None, _send_one, port)
    while time.perf_counter() - held_start < hold:
        rss, pss = _memory(process)
        result.rss_held, result.pss_held = max(result.rss_held, rss), max(result.pss_held, pss)
        await asyncio.sleep(0.5)
    result.hold_s = time.perf_counter() - held_start
    result.hold_cpu_s = _cpu(process) - cpu0
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers), return_exceptions=True)


def run_idle(target: Target, sessions: int, hold: float, workdir: Path) -> IdleResult:
    result = IdleResult(target.name, sessions)
    workdir.mkdir(parents=True, exist_ok=True)
    sink = Sink(workdir)
    try:
        notes: list[str] = []
        try:
            port, pid = start_target(target, workdir, sink.port, notes)
        except Exception as error:
            result.error = f"did not start: {error}"
            return result
        try:
            process = psutil.Process(pid)
            time.sleep(1.0)
            result.rss_start = _rss(process)
            reply, _ = _send_one(port)  # warm-up: the first message loads the code paths of a message
            if not reply.startswith("250"):
                result.error = f"warm-up message refused: {reply}"
            time.sleep(1.0)
            result.rss_warm = _rss(process)
            asyncio.run(_hold(port, sessions, hold, process, result))
            time.sleep(2.0)
            result.rss_after = _rss(process)
        finally:
            target.stop()
    finally:
        sink.stop()
    return result


def report(results: list[IdleResult], limit_mb: float) -> list[str]:
    mb = 2**20
    lines = [
        f"{'target':<12} {'start MB':>8} {'warm MB':>8} {'held MB':>8} {'(PSS)':>7} {'after MB':>8} "
        f"{'KB/session':>10} {'greeted':>9} {'open s':>6} {'idle CPU s':>10}  message while held"
    ]
    lines.append("-" * (len(lines[0]) + 10))
    verdicts = []
    for r in results:
        if r.error and not r.rss_held:
            lines.append(f"{r.target:<12} {r.error}")
            continue
        per_session = (r.rss_held - r.rss_warm) / max(r.greeted, 1) / 1024
        lines.append(
            f"{r.target:<12} {r.rss_start / mb:>8.1f} {r.rss_warm / mb:>8.1f} {r.rss_held / mb:>8.1f} "
            f"{r.pss_held / mb:>7.1f} {r.rss_after / mb:>8.1f} {per_session:>10.1f} "
            f"{f'{r.greeted}/{r.sessions}':>9} {r.open_s:>6.1f} {f'{r.hold_cpu_s:.2f}/{r.hold_s:.0f}s':>10}  "
            f"{r.probe} in {r.probe_ms:.0f} ms"
        )
        if r.refused:
            lines.append(f"  {r.target}: not greeted: " + ", ".join(f"{k} x{v}" for k, v in sorted(r.refused.items())))
        if r.error:
            lines.append(f"  {r.target}: {r.error}")
        if r.target.startswith("relay"):
            ok = r.rss_held / mb < limit_mb and r.greeted == r.sessions
            verdicts.append(
                f"{'PASS' if ok else 'FAIL'}: {r.target} holds {r.greeted:,} of {r.sessions:,} idle sessions in "
                f"{r.rss_held / mb:.1f} MB RSS (target < {limit_mb:.0f} MB)"
            )
    return lines + [""] + verdicts
