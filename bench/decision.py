"""Policy decision benchmark: a full decision per message beside connector selection alone.

For two configurations, the sample relay (``sample_app/config/relay.toml`` through ``load_policy``)
and a large one (the sample plus 2,000 connectors holding 30,000 disjoint IPv4 ranges, 10,000
connectors' worth at 3 each, on the same 0.0.0.0:2525 binding as the sample's connectors, built with
``config_from_mapping`` and checked as ``load_policy`` does), it measures microseconds per operation,
best of several repeats:

* selection only: ``RelayPolicy.select_connector`` (through the pluggy hook);
* select + rights: ``RelaySession(policy, connection).open()`` (selection, principals and grants
  hooks, rights fold, banner);
* a full decision per message: ``open()`` + ``helo()`` + ``mail()`` + ``rcpt()`` + ``data()``, for a
  host of the relay connector (accepted) and for an outside host (refused at RCPT), with 1 and with
  5 recipients outside the accepted domains;
* end of data: ``RelaySession.message(raw)`` on a ~2,000-byte message with three Received headers;

checks that both configurations give the same replies, and prints a table with one column pair per
configuration (us per operation, ratio to the selection-only figure of the same host) and the ratio
of the large configuration's figure to the sample's.

Run from the project root::

    .venv/bin/python bench/decision.py            # full run (about 25 s; --profile adds about 10 s)
    .venv/bin/python bench/decision.py --quick    # fewer and shorter repeats
    .venv/bin/python bench/decision.py --profile  # also cProfile the full-decision loop
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import ipaddress
import math
import os
import platform
import pstats
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from salmon_relayauth import ConfigError, ConnectionInfo, RelayPolicy, Severity, config_from_mapping, load_policy
from salmon_relayauth.session import RelaySession

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_app" / "config" / "relay.toml"

# 30,000 remote ranges: what 10,000 connectors of 3 ranges would hold, in 2,000 connectors of 15.
# (10,000 connectors on one binding take about two minutes to validate: config/validate.py's
# _binding_groups tests ``connector not in bound`` on a list, quadratic in the connectors sharing a
# binding. The per-message figures depend on the number of ranges in the index, not of connectors.)
LARGE_CONNECTORS = 2_000
RANGES_PER_CONNECTOR = 15  # single IPs, /28s and a-b ranges in turn, each in its own /24
LARGE_BASE = int(ipaddress.IPv4Address("20.0.0.0"))  # 20.0.0.0 .. ~20.117.x.x: clear of the sample's ranges

LOCAL = "127.0.0.1"  # the sample app listens on 127.0.0.1:2525
PORT = 2525
RELAY_HOST = "192.168.5.10"  # in "Anonymous Relay"
OUTSIDE_HOST = "203.0.113.7"  # only the catch-all "Default Frontend" takes it
SENDER = "<chris@contoso.com>"
ONE_RECIPIENT = ("<kate@fabrikam.com>",)
FIVE_RECIPIENTS = (
    "<kate@fabrikam.com>",
    "<lee@fabrikam.com>",
    "<max@northwind.example>",
    "<ana@tailspin.example>",
    "<ops@fabrikam.com>",
)


# --------------------------------------------------------------------------------------------
# Configurations and the message
# --------------------------------------------------------------------------------------------


def v4(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def large_mapping(connectors: int, ranges_per_connector: int) -> dict:
    """The sample configuration plus ``connectors`` connectors with disjoint ranges, no relay right."""
    mapping = tomllib.loads(SAMPLE.read_text(encoding="utf-8"))
    slot = LARGE_BASE
    for number in range(1, connectors + 1):
        ranges = []
        for index in range(ranges_per_connector):
            kind = (number + index) % 3  # each range in its own /24, so they are disjoint
            if kind == 0:
                ranges.append(v4(slot + 1 + number % 200))
            elif kind == 1:
                ranges.append(f"{v4(slot + 16 * (1 + number % 14))}/28")
            else:
                ranges.append(f"{v4(slot + 10)}-{v4(slot + 10 + number % 50)}")
            slot += 256
        if number % 4 == 0:
            connector = {"name": f"Partner {number:05d}", "usage": "Partner"}
        else:
            connector = {
                "name": f"Anonymous submit {number:05d}",
                "usage": "Custom",
                "permission_groups": ["AnonymousUsers"],
            }
        if number % 10 == 0:  # some explicit entries, none of them a relay right
            connector["permissions"] = [{"user": f"CONTOSO\\app{number:05d}", "extended_rights": ["ms-Exch-SMTP-Submit"]}]
        connector["bindings"] = [f"0.0.0.0:{PORT}"]
        connector["remote_ip_ranges"] = ranges
        mapping["connectors"].append(connector)
    return mapping


def policy_from_mapping(mapping: dict, source: str) -> RelayPolicy:
    """``config_from_mapping`` + ``RelayPolicy``, refused on any error as ``load_policy`` would."""
    config = config_from_mapping(mapping, source=source)
    policy = RelayPolicy(config)
    errors = [p for p in policy.plugin_problems() if p.severity is Severity.ERROR]
    if errors:
        raise ConfigError(errors)
    return policy


def make_message(target: int = 2000) -> bytes:
    """A CRLF message of about ``target`` bytes with three Received headers (and one header the
    firewall removes from an anonymous session)."""
    headers = [
        "Received: from app01.contoso.com (app01.contoso.com [192.168.5.10]) by relay.contoso.com "
        "with ESMTP id 4F2A9C1D; Tue, 11 Jun 2024 09:15:02 +0000",
        "Received: from localhost (localhost [127.0.0.1]) by app01.contoso.com (Postfix) "
        "with ESMTP id 9C1D4F2A; Tue, 11 Jun 2024 09:15:01 +0000",
        "Received: by app01.contoso.com (Postfix, from userid 1001) id 1D4F2A9C; Tue, 11 Jun 2024 09:15:00 +0000",
        "From: Chris <chris@contoso.com>",
        "To: Kate <kate@fabrikam.com>",
        "Subject: Nightly report: 42 jobs, 0 failures",
        "Date: Tue, 11 Jun 2024 09:15:00 +0000",
        "Message-ID: <20240611091500.1D4F2A9C@app01.contoso.com>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "X-MS-Exchange-Organization-SCL: -1",
    ]
    head = "\r\n".join(headers) + "\r\n\r\n"
    line = "job-0000 finished OK in 12.3 s; 1,024 rows exported to the warehouse.\r\n"
    body = []
    while len(head) + sum(map(len, body)) + len(line) <= target:
        body.append(line.replace("0000", f"{len(body):04d}"))
    return (head + "".join(body)).encode("ascii")


# --------------------------------------------------------------------------------------------
# The operations
# --------------------------------------------------------------------------------------------


def connection(remote: str) -> ConnectionInfo:
    return ConnectionInfo(LOCAL, PORT, remote, 49152)


def conversation(policy: RelayPolicy, conn: ConnectionInfo, recipients: tuple[str, ...]) -> tuple[RelaySession, list[int]]:
    """One full decision; the session and the reply codes (banner, HELO, MAIL, each RCPT, DATA)."""
    session = RelaySession(policy, conn)
    codes = [session.open().code, session.helo("app01.contoso.com").code, session.mail(SENDER).code]
    codes.extend(session.rcpt(recipient).code for recipient in recipients)
    codes.append(session.data().code)
    return session, codes


def op_select(policy: RelayPolicy, conn: ConnectionInfo) -> Callable[[int], None]:
    select = policy.select_connector

    def run(loops: int) -> None:
        for _ in range(loops):
            select(conn)

    return run


def op_open(policy: RelayPolicy, conn: ConnectionInfo) -> Callable[[int], None]:
    def run(loops: int) -> None:
        for _ in range(loops):
            RelaySession(policy, conn).open()

    return run


def op_full(policy: RelayPolicy, conn: ConnectionInfo, recipients: tuple[str, ...]) -> Callable[[int], None]:
    def run(loops: int) -> None:
        for _ in range(loops):
            session = RelaySession(policy, conn)
            session.open()
            session.helo("app01.contoso.com")
            session.mail(SENDER)
            for recipient in recipients:
                session.rcpt(recipient)
            session.data()

    return run


def op_message(policy: RelayPolicy, conn: ConnectionInfo, raw: bytes) -> Callable[[int], None]:
    session, _ = conversation(policy, conn, ONE_RECIPIENT)  # message() leaves the session as it is
    judge = session.message

    def run(loops: int) -> None:
        for _ in range(loops):
            judge(raw)

    return run


@dataclass(frozen=True)
class Op:
    key: str
    label: str
    host: str  # whose selection-only figure the row is compared with
    make: Callable[[RelayPolicy], Callable[[int], None]]


def operations(raw: bytes) -> list[Op]:
    relay, outside = connection(RELAY_HOST), connection(OUTSIDE_HOST)
    return [
        Op("sel-relay", "selection only, relay host", "relay", lambda p: op_select(p, relay)),
        Op("sel-out", "selection only, outside host", "outside", lambda p: op_select(p, outside)),
        Op("open-relay", "select + rights (open), relay host", "relay", lambda p: op_open(p, relay)),
        Op("open-out", "select + rights (open), outside host", "outside", lambda p: op_open(p, outside)),
        Op("full1-relay", "full decision, 1 rcpt, relay (accepted)", "relay", lambda p: op_full(p, relay, ONE_RECIPIENT)),
        Op("full1-out", "full decision, 1 rcpt, outside (refused)", "outside", lambda p: op_full(p, outside, ONE_RECIPIENT)),
        Op("full5-relay", "full decision, 5 rcpt, relay (accepted)", "relay", lambda p: op_full(p, relay, FIVE_RECIPIENTS)),
        Op("full5-out", "full decision, 5 rcpt, outside (refused)", "outside", lambda p: op_full(p, outside, FIVE_RECIPIENTS)),
        Op("message", f"end of data: message() {len(raw):,} bytes", "relay", lambda p: op_message(p, relay, raw)),
    ]


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def calibrate(run: Callable[[int], None], min_seconds: float) -> int:
    """Loops needed for one sample to last at least ``min_seconds``."""
    loops = 1
    while True:
        start = time.perf_counter()
        run(loops)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return loops
        loops = max(loops * 2, math.ceil(loops * min_seconds / max(elapsed, 1e-9) * 1.1))


def measure(cells: dict[tuple[str, str], Callable[[int], None]], repeats: int, min_seconds: float) -> dict[tuple[str, str], float]:
    """Best seconds per operation of every cell. The repeats go round-robin over all cells, so a
    noisy stretch of the machine hits every cell alike instead of one cell's whole series."""
    loops = {key: calibrate(run, min_seconds) for key, run in cells.items()}
    best = {key: math.inf for key in cells}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for key, run in cells.items():
                start = time.perf_counter()
                run(loops[key])
                best[key] = min(best[key], (time.perf_counter() - start) / loops[key])
    finally:
        if gc_was_enabled:
            gc.enable()
    return best


def profile_full_decision(policy: RelayPolicy, loops: int, top: int = 15) -> None:
    """cProfile the full-decision loop (1 recipient, relay and outside host, equal shares)."""
    runs = [op_full(policy, connection(host), ONE_RECIPIENT) for host in (RELAY_HOST, OUTSIDE_HOST)]
    profiler = cProfile.Profile()
    profiler.enable()
    for run in runs:
        run(loops)
    profiler.disable()
    print(f"\ncProfile of the full-decision loop (sample config, 1 recipient, {loops:,} x relay + {loops:,} x outside host), top {top} by cumulative time:")
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("cumulative").print_stats(top)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter repeats")
    parser.add_argument("--profile", action="store_true", help="also cProfile the full-decision loop")
    parser.add_argument("--connectors", type=int, default=LARGE_CONNECTORS, help="connectors added for the large config")
    parser.add_argument(
        "--ranges-per-connector", type=int, default=RANGES_PER_CONNECTOR, help="remote ranges of each added connector"
    )
    args = parser.parse_args()
    repeats, min_seconds = (5, 0.02) if args.quick else (25, 0.02)

    flags = "".join(f" --{name}" for name in ("quick", "profile") if getattr(args, name))
    if args.connectors != LARGE_CONNECTORS:
        flags += f" --connectors {args.connectors}"
    if args.ranges_per_connector != RANGES_PER_CONNECTOR:
        flags += f" --ranges-per-connector {args.ranges_per_connector}"
    print(f"$ python bench/decision.py{flags}")
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(
        f"best of {repeats} round-robin repeats, >= {min_seconds} s per sample, GC off while timing, time.perf_counter; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
    )
    wall = time.perf_counter()

    start = time.perf_counter()
    sample = load_policy(SAMPLE)
    t_sample = time.perf_counter() - start
    start = time.perf_counter()
    mapping = large_mapping(args.connectors, args.ranges_per_connector)
    t_generate = time.perf_counter() - start
    start = time.perf_counter()
    large = policy_from_mapping(mapping, f"<bench {args.connectors:,} extra connectors>")
    t_large = time.perf_counter() - start
    configs = {"sample": sample, "large": large}

    def describe(policy: RelayPolicy) -> str:
        ranges = sum(len(c.remote_ip_ranges) for c in policy.config.connectors)
        segments = sum(len(t.starts) for t in getattr(policy.index, "_tables", {}).values())
        return f"{len(policy.config.connectors):,} connectors, {ranges:,} remote ranges, {segments:,} index segments"

    print(f"sample: {SAMPLE.relative_to(ROOT)} via load_policy ({t_sample:.3f} s): {describe(sample)}")
    print(
        f"large:  sample + {args.connectors:,} connectors x {args.ranges_per_connector} disjoint IPv4 ranges on 0.0.0.0:{PORT} "
        f"(generate {t_generate:.2f} s, config_from_mapping + RelayPolicy + plugin checks {t_large:.2f} s): {describe(large)}"
    )
    raw = make_message()
    print(
        f"connections {LOCAL}:{PORT} <- relay host {RELAY_HOST} / outside host {OUTSIDE_HOST}; MAIL FROM:{SENDER}; "
        f"RCPT TO:{ONE_RECIPIENT[0]} or 5 recipients in other domains; message {len(raw):,} bytes, 3 Received headers"
    )

    # Correctness: both configurations pick the same connectors and give the same replies.
    expected = {RELAY_HOST: ("Anonymous Relay", 250, 354), OUTSIDE_HOST: ("Default Frontend", 550, 503)}
    for name, policy in configs.items():
        for host, (connector, rcpt_code, data_code) in expected.items():
            selection = policy.select_connector(connection(host))
            assert selection is not None and selection.connector.name == connector, (name, host, selection)
            for recipients in (ONE_RECIPIENT, FIVE_RECIPIENTS):
                session, codes = conversation(policy, connection(host), recipients)
                want = [220, 250, 250] + [rcpt_code] * len(recipients) + [data_code]
                assert codes == want, (name, host, codes, want)
        session, _ = conversation(policy, connection(RELAY_HOST), ONE_RECIPIENT)
        verdict = session.message(raw)
        assert verdict.decision.code == 250 and verdict.removed_headers == {"x-ms-exchange-organization-scl"}, verdict
    print(
        f"replies checked in both configs: relay host -> 'Anonymous Relay', 220 250 250 250... 354; "
        f"outside host -> 'Default Frontend', 220 250 250 550... 503; message() -> 250, "
        f"1 firewalled header removed"
    )

    ops = operations(raw)
    cells = {(name, op.key): op.make(policy) for name, policy in configs.items() for op in ops}
    best = measure(cells, repeats, min_seconds)

    print()
    header = (
        f"{'operation':<42} {'sample us':>10} {'x sel':>7} {'large us':>10} {'x sel':>7} {'large/sample':>13}"
    )
    print(header)
    print("-" * len(header))
    selection_key = {"relay": "sel-relay", "outside": "sel-out"}
    worst = 0.0
    for op in ops:
        cols = []
        for name in configs:
            us = best[(name, op.key)] * 1e6
            ratio = best[(name, op.key)] / best[(name, selection_key[op.host])]
            cols.append(f"{us:>10.2f} {ratio:>6.1f}x")
        growth = best[("large", op.key)] / best[("sample", op.key)]
        worst = max(worst, growth)
        print(f"{op.label:<42} {' '.join(cols)} {growth:>12.2f}x")
    print()
    print("x sel: the row over the selection-only figure of the same host and configuration")
    print(f"largest large/sample ratio: {worst:.2f}x (1.00x = no growth with the configuration size)")
    print(f"total run time {time.perf_counter() - wall:.1f} s")

    if args.profile:
        profile_full_decision(sample, 500 if args.quick else 2_000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
