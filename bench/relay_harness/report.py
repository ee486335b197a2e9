"""The printed tables: one per (sessions, recipients) group, a row per target and connection mode,
each figure beside its ratio to Postfix and to the relay's allow-everything run of the same cell."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from .driver import Cell, Result

Metric = Callable[[Result], float | None]

METRICS: list[tuple[str, Metric, str]] = [
    ("accepted/s", lambda r: r.accepted_rate, "{:.0f}"),
    ("delivered/s", lambda r: r.delivered_rate, "{:.0f}"),
    ("CPU s/1k", lambda r: r.cpu_per_1k, "{:.2f}"),
    ("PSS MB", lambda r: r.pss_mb, "{:.1f}"),
]
REFERENCE_TARGETS = (("pfx", "postfix"), ("allow", "relay-allow"))


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return "-"
    return f"{value / base:.2f}x"


def table(group: Sequence[Result], targets: Sequence[str]) -> list[str]:
    """Rows for one (sessions, recipients) group: every mode, every target."""
    header1 = f"{'':<12} {'':<5}"
    header2 = f"{'target':<12} {'conn':<5}"
    for title, _, _ in METRICS:
        header1 += f" | {title:^22}"
        header2 += f" | {'value':>8} {'xpfx':>6} {'xallow':>6}"
    header1 += f" | {'peak RSS':>8} {'procs':>5}"
    header2 += f" | {'MB':>8} {'':>5}"
    lines = [header1, header2, "-" * len(header2)]
    notes: list[str] = []
    modes = sorted({r.cell.reuse for r in group})
    for mode in modes:
        rows = {r.target: r for r in group if r.cell.reuse == mode}
        for name in targets:
            result = rows.get(name)
            if result is None:
                continue
            conn = "reuse" if mode else "new"
            line = f"{name:<12} {conn:<5}"
            if result.skipped:
                line += f" | {result.skipped}"
                lines.append(line)
                continue
            for _, metric, fmt in METRICS:
                value = metric(result)
                shown = fmt.format(value) if value is not None else "-"
                if result.capped and metric is METRICS[0][1] and value is not None:
                    shown += "*"
                cells = [f"{shown:>8}"]
                for _, ref_name in REFERENCE_TARGETS:
                    ref = rows.get(ref_name)
                    cells.append(f"{_ratio(value, metric(ref) if ref and not ref.skipped else None):>6}")
                line += " | " + " ".join(cells)
            rss = f"{result.rss_mb:.1f}" if result.rss_mb else "-"
            line += f" | {rss:>8} {result.processes:>5}"
            lines.append(line)
            for note in result.notes:
                notes.append(f"  {name}/{conn}: {note}")
        if mode != modes[-1]:
            lines.append("")
    return lines + notes


def group_title(cell: Cell, messages: int, size: int) -> str:
    rcpt = "1 recipient" if cell.recipients == 1 else f"{cell.recipients} recipients"
    sessions = "1 session" if cell.sessions == 1 else f"{cell.sessions} sessions"
    return f"=== {sessions}, {rcpt} per message; {messages:,} messages of {size:,} bytes per run ==="


LEGEND = """\
accepted/s: messages acknowledged (250 after DATA) / smtp-source wall time; * = run stopped at the time cap.
delivered/s: messages counted at the smarthost (smtp-sink -c) / time from the start of the run to the last one;
  '-' for salmon and aiosmtpd, which only store into a Maildir (nothing to deliver).
CPU s/1k: user+system CPU seconds of the target's whole process tree per 1,000 accepted messages, from the start
  of the run until the last delivery (so relay and Postfix include their outbound SMTP; smtp-source and
  smtp-sink are not counted).
PSS MB: peak proportional set size summed over the process tree (shared pages divided among the processes that
  map them: fair for Postfix's ~10-70 processes); peak RSS MB sums RSS and counts shared libraries once per process.
xpfx / xallow: the figure over Postfix's / the relay-allow run's figure in the same cell of this invocation
  (above 1 is faster for the rates, costlier for CPU and memory)."""


def paired_line(a: str, b: str, pairs: Sequence[tuple[Result, Result]]) -> str | None:
    """``a`` over ``b`` run by run: the runs of one repeat are back to back, so each pair saw about
    the same machine; the median of those ratios resists a slow spell better than best-of does."""
    parts = []
    rates_and_cpu = (("accepted/s", METRICS[0][1]), ("delivered/s", METRICS[1][1]), ("CPU per message", METRICS[2][1]))
    for title, metric in rates_and_cpu:
        ratios = sorted(
            value / base
            for first, second in pairs
            if (value := metric(first)) is not None and (base := metric(second))
        )
        if ratios:
            parts.append(f"{title} {statistics.median(ratios):.2f}x ({ratios[0]:.2f}x-{ratios[-1]:.2f}x)")
    if not parts:
        return None
    return f"  {a} / {b}, run by run (median of {len(pairs)} back-to-back pairs, lowest-highest): " + ", ".join(parts)
