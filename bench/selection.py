"""Connector selection benchmark: the selection index against a naive linear scan.

For configurations holding 10, 1,000 and 100,000 remote IP ranges in total (one catch-all Internet
connector on 0.0.0.0:25 / [::]:25, a Client connector on port 587, one connector bound to a specific
local IP, one disabled connector, and many relay connectors whose ranges are disjoint single IPs,
CIDR blocks and a-b ranges, some nested inside larger blocks, about a tenth IPv6), it measures:

* how long ``config_from_mapping`` (parse + validate), ``ConnectorIndex.build`` and ``RelayPolicy``
  take;
* ``ConnectorIndex.lookup`` per second;
* ``RelayPolicy.select_connector`` per second (the same lookup through the pluggy hook);
* a naive linear scan per second, written here after the reference algorithm (reference §6.5);

checks that the index, the policy and the scan pick the same connector and range for every query
address, and prints the results side by side with PASS/FAIL lines for the two targets: at 100,000
ranges a lookup is at least 100x faster than the linear scan, and within 3x of a lookup at 10 ranges.

Run from the project root::

    .venv/bin/python bench/selection.py            # full run (about 25 s on a 2-core machine)
    .venv/bin/python bench/selection.py --quick    # fewer repetitions and query addresses
"""

from __future__ import annotations

import argparse
import functools
import gc
import ipaddress
import math
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from salmon_relayauth import ConnectionInfo, Connector, ConnectorIndex, RelayPolicy, config_from_mapping
from salmon_relayauth.defaults.selection import MostSpecificSelection
from salmon_relayauth.model.addresses import RemoteIPRange, client_address

SIZES = (10, 1_000, 100_000)
SEED = 20240611

WILDCARD_LOCAL_V4 = "192.0.2.20"  # a local address with no binding of its own: reached through 0.0.0.0:25
SPECIFIC_LOCAL_V4 = "192.0.2.10"  # bound by the "Relay on 192.0.2.10" connector
LOCAL_V6 = "2001:db8:ffff::25"
V4_START, V4_END = 1 << 24, 224 << 24  # 1.0.0.0 .. 223.255.255.255: unicast space for relay ranges
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))  # relay IPv6 ranges live in 2001:db8::/32, one per /64
V6_SLOTS = 1 << 32  # number of /64 networks in the /32
LINK_LOCAL = int(ipaddress.IPv6Address("fe80::"))
ALL_V4 = "0.0.0.0-255.255.255.255"
ALL_V6 = "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


# --------------------------------------------------------------------------------------------
# Configuration generation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenRange:
    """A remote range as written in the generated configuration, with its bounds for query generation."""

    text: str
    version: int
    first: int
    last: int
    kind: str  # single / cidr / range / zone / superblock


def v4(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def v6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


class Allocator:
    """Hands out disjoint remote ranges (a superblock comes with a few ranges nested inside it)."""

    def __init__(self, rng: random.Random, n_v4: int, n_v6: int) -> None:
        self.rng = rng
        self.v4_cursor = V4_START
        # Gaps are at most ~0.9 of an even share of the space (less the largest group), so the
        # cursors cannot run off the end; on average the ranges spread over about half the space.
        self.v4_gap = max(2, int(0.9 * (V4_END - V4_START) / max(n_v4, 1)) - 8192)
        self.v6_slot = 0
        self.v6_gap = max(2, int(0.9 * V6_SLOTS / max(n_v6, 1)))
        self.zone_counter = 0

    def v4_group(self, room: int) -> list[GenRange]:
        """One IPv4 range, or (when ``room`` allows) a /20 superblock plus 1-4 ranges nested inside."""
        rng = self.rng
        start = self.v4_cursor
        roll = rng.random()
        if room >= 2 and roll < 0.03:
            base = -(-start // 4096) * 4096
            group = [GenRange(f"{v4(base)}/20", 4, base, base + 4095, "superblock")]
            inner = base + rng.randint(0, 255)
            for _ in range(rng.randint(1, min(4, room - 1))):
                group.append(self._small_v4(inner))
                inner = group[-1].last + 1 + rng.randint(1, 700)
            end = base + 4096
        else:
            group = [self._small_v4(start)]
            end = group[0].last + 1
        self.v4_cursor = end + rng.randint(1, self.v4_gap)
        if self.v4_cursor >= V4_END:
            raise RuntimeError("IPv4 allocation ran past 223.255.255.255")
        return group

    def _small_v4(self, start: int) -> GenRange:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return GenRange(v4(start), 4, start, start, "single")
        if roll < 0.75:
            prefix = rng.randint(24, 30)
            size = 1 << (32 - prefix)
            first = -(-start // size) * size
            shown = first + rng.randrange(size) if rng.random() < 0.3 else first  # host bits allowed
            return GenRange(f"{v4(shown)}/{prefix}", 4, first, first + size - 1, "cidr")
        last = start + rng.randint(1, 299)
        return GenRange(f"{v4(start)}-{v4(last)}", 4, start, last, "range")

    def v6_range(self) -> GenRange:
        rng = self.rng
        roll = rng.random()
        if roll < 0.1:
            self.zone_counter += 1
            value = LINK_LOCAL + self.zone_counter * 0x1_0000 + rng.randint(1, 0xFFFF)
            return GenRange(f"{v6(value)}%{rng.randint(2, 20)}", 6, value, value, "zone")
        network = V6_BASE + (self.v6_slot << 64)
        self.v6_slot += rng.randint(1, self.v6_gap)
        if self.v6_slot >= V6_SLOTS:
            raise RuntimeError("IPv6 allocation ran past 2001:db8::/32")
        if roll < 0.45:
            value = network + rng.randint(1, 0xFFFF)
            return GenRange(v6(value), 6, value, value, "single")
        if roll < 0.65:
            return GenRange(f"{v6(network)}/64", 6, network, network + (1 << 64) - 1, "cidr")
        if roll < 0.8:
            first = network + (rng.randint(0, 0xFF) << 8)
            return GenRange(f"{v6(first)}/120", 6, first, first + 255, "cidr")
        first = network + rng.randint(0, 0xFFFF)
        last = first + rng.randint(1, 0xFFFF)
        return GenRange(f"{v6(first)}-{v6(last)}", 6, first, last, "range")


@dataclass
class Generated:
    mapping: dict[str, Any]
    total_ranges: int
    relay_ranges: list[tuple[str, GenRange]] = field(default_factory=list)  # (connector, range)
    specific_ranges: list[GenRange] = field(default_factory=list)
    forms: Counter[str] = field(default_factory=Counter)
    connectors: int = 0


CONNECTOR_SIZE_CHOICES = (1, 2, 3, 5, 8, 12, 20, 40, 80, 150, 400, 1000, 3000)
CONNECTOR_SIZE_WEIGHTS = (10, 10, 8, 8, 7, 6, 6, 6, 6, 5, 4, 3, 2)


def make_config_mapping(total: int, seed: int) -> Generated:
    """A valid configuration holding exactly ``total`` remote ranges over all its connectors."""
    rng = random.Random(seed)
    catch_all = {
        "name": "Default Frontend",
        "usage": "Internet",
        "bindings": ["0.0.0.0:25", "[::]:25"],
        "remote_ip_ranges": [ALL_V4, ALL_V6],
    }
    client = {  # port 587 by usage default; no BasicAuthRequireTLS, so the config needs no [tls] certificate
        "name": "Client Frontend",
        "usage": "Client",
        "auth_mechanism": ["Tls", "BasicAuth", "Integrated"],
        "remote_ip_ranges": [ALL_V4, "::/0"],
    }
    n_specific = max(1, total // 100)
    n_disabled = max(1, total // 1000)
    n_relay = total - 4 - n_specific - n_disabled
    if n_relay < 1:
        raise ValueError(f"{total} ranges is too few for this layout")

    n_fresh_specific = n_specific - n_specific // 2  # the rest are copies of relay ranges
    n_v6 = max(1, n_relay // 10)
    n_v4 = n_relay - n_v6 + n_fresh_specific
    alloc = Allocator(rng, n_v4, n_v6)
    relay_pool: list[GenRange] = []
    while len(relay_pool) < n_relay - n_v6:
        relay_pool.extend(alloc.v4_group(n_relay - n_v6 - len(relay_pool)))
    relay_pool.extend(alloc.v6_range() for _ in range(n_v6))
    fresh_specific: list[GenRange] = []
    while len(fresh_specific) < n_fresh_specific:  # singles or small blocks, never a superblock
        fresh_specific.extend(alloc.v4_group(1))

    # Spread the relay ranges over connectors of very different sizes, in shuffled order.
    rng.shuffle(relay_pool)
    connectors: list[dict[str, Any]] = [catch_all]
    gen = Generated({}, total)
    position = 0
    number = 0
    while position < len(relay_pool):
        size = min(rng.choices(CONNECTOR_SIZE_CHOICES, CONNECTOR_SIZE_WEIGHTS)[0], len(relay_pool) - position)
        chunk = relay_pool[position : position + size]
        position += size
        number += 1
        kind = rng.random()
        if kind < 0.6:
            name = f"Anonymous relay {number:05d}"
            raw = {"usage": "Custom", "bindings": ["0.0.0.0:25", "[::]:25"], "permission_groups": ["AnonymousUsers"]}
        elif kind < 0.85:
            name = f"Partner {number:05d}"
            raw = {"usage": "Partner", "bindings": ["0.0.0.0:25", "[::]:25"]}
        else:
            name = f"Internal servers {number:05d}"
            raw = {"usage": "Internal"}  # default bindings 0.0.0.0:25 and [::]:25
        raw = {"name": name, **raw, "remote_ip_ranges": [r.text for r in chunk]}
        connectors.append(raw)
        gen.relay_ranges.extend((name, r) for r in chunk)

    # A connector bound to one local IP: fresh ranges plus exact copies of relay ranges (equal range on
    # a specific binding beats the wildcard one, reference §6.3/§6.4).
    v4_relay = [r for _, r in gen.relay_ranges if r.version == 4]
    copies = rng.sample(v4_relay, n_specific // 2)
    gen.specific_ranges = fresh_specific + copies
    connectors.append(
        {
            "name": "Relay on 192.0.2.10",
            "usage": "Custom",
            "bindings": [f"{SPECIFIC_LOCAL_V4}:25"],
            "permission_groups": ["AnonymousUsers"],
            "remote_ip_ranges": [r.text for r in gen.specific_ranges],
        }
    )
    # A disabled connector whose ranges partly overlap enabled ones: it must be ignored everywhere.
    disabled_ranges = []
    for r in rng.sample(v4_relay, n_disabled):
        disabled_ranges.append(f"{v4(r.first + 1)}-{v4(r.last + 2)}")
    connectors.append(
        {
            "name": "Old relay (disabled)",
            "usage": "Custom",
            "enabled": False,
            "bindings": ["0.0.0.0:25"],
            "permission_groups": ["AnonymousUsers"],
            "remote_ip_ranges": disabled_ranges,
        }
    )
    connectors.append(client)

    count = sum(len(c["remote_ip_ranges"]) for c in connectors)
    assert count == total, (count, total)
    gen.mapping = {"server": {"fqdn": "relay.example.com"}, "connectors": connectors}
    gen.connectors = len(connectors)
    gen.forms = Counter(f"IPv{r.version} {r.kind}" for _, r in gen.relay_ranges)
    gen.forms.update(f"IPv{r.version} {r.kind}" for r in gen.specific_ranges)
    return gen


# --------------------------------------------------------------------------------------------
# Query addresses
# --------------------------------------------------------------------------------------------


def make_queries(gen: Generated, count: int, seed: int) -> tuple[list[ConnectionInfo], Counter[str]]:
    """A fixed, seeded mix of connections: hits on relay ranges, hits on the specific binding, misses.

    The kind of each query comes from its own seeded stream, so every N gets the same sequence of
    kinds (and so the same share of IPv4, IPv6 and IPv4-mapped addresses to parse); only the
    addresses, drawn from that N's ranges, differ.
    """
    kinds = random.Random(seed)
    rng = random.Random(seed + len(gen.relay_ranges))
    v4_hits = [r for _, r in gen.relay_ranges if r.version == 4]
    v6_hits = [r for _, r in gen.relay_ranges if r.version == 6]
    queries: list[ConnectionInfo] = []
    mix: Counter[str] = Counter()
    for _ in range(count):
        roll, flip = kinds.random(), kinds.random()
        client_port = rng.randint(1024, 65535)
        if roll < 0.50:  # IPv4 client inside a relay range
            r = rng.choice(v4_hits)
            remote = v4(rng.randint(r.first, r.last))
            local = WILDCARD_LOCAL_V4
            if flip < 0.1:  # dual-stack socket reporting IPv4 as IPv4-mapped IPv6
                remote, local = f"::ffff:{remote}", f"::ffff:{local}"
            queries.append(ConnectionInfo(local, 25, remote, client_port))
            mix["IPv4 relay-range hit"] += 1
        elif roll < 0.60:  # on the specific local IP
            r = rng.choice(gen.specific_ranges) if flip < 0.7 else rng.choice(v4_hits)
            remote = v4(rng.randint(r.first, r.last))
            queries.append(ConnectionInfo(SPECIFIC_LOCAL_V4, 25, remote, client_port))
            mix["IPv4 on specific local IP"] += 1
        elif roll < 0.75:  # random IPv4 client: nearly always a miss that falls to the catch-all
            remote = v4(rng.randint(V4_START, V4_END - 1))
            local = WILDCARD_LOCAL_V4 if flip < 0.5 else SPECIFIC_LOCAL_V4
            queries.append(ConnectionInfo(local, 25, remote, client_port))
            mix["IPv4 random (miss)"] += 1
        elif roll < 0.82:  # IPv6 client inside a relay range
            r = rng.choice(v6_hits)
            value = rng.randint(r.first, r.last)
            remote = v6(value) + (f"%{rng.randint(2, 20)}" if r.kind == "zone" and flip < 0.5 else "")
            queries.append(ConnectionInfo(LOCAL_V6, 25, remote, client_port))
            mix["IPv6 relay-range hit"] += 1
        elif roll < 0.90:  # random IPv6 client in 2001:db8::/32
            remote = v6(V6_BASE + rng.getrandbits(96))
            queries.append(ConnectionInfo(LOCAL_V6, 25, remote, client_port))
            mix["IPv6 random (miss)"] += 1
        elif roll < 0.96:  # submission port
            r = rng.choice(v4_hits)
            queries.append(ConnectionInfo(WILDCARD_LOCAL_V4, 587, v4(rng.randint(r.first, r.last)), client_port))
            mix["port 587"] += 1
        else:  # a port no connector binds
            queries.append(ConnectionInfo(WILDCARD_LOCAL_V4, 2525, v4(rng.randint(V4_START, V4_END - 1)), client_port))
            mix["port 2525 (no connector)"] += 1
    return queries, mix


# --------------------------------------------------------------------------------------------
# The naive linear scan (reference §6.5)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinearResult:
    connector: Connector
    matched_range: RemoteIPRange
    specific_binding: bool


def linear_select(connectors: Sequence[Connector], connection: ConnectionInfo) -> LinearResult | None:
    """Reference §6.5: every connector whose bindings take the connection and whose ranges contain the
    client is a candidate; the smallest containing range wins, then a specific binding, then file order."""
    local_version, local = client_address(connection.local_address)
    remote_version, remote = client_address(connection.remote_address)
    port = connection.local_port
    best_key: tuple[int, int, int] | None = None
    best: LinearResult | None = None
    order = -1
    for connector in connectors:
        if not connector.enabled:
            continue
        order += 1
        bound = specific = False
        for binding in connector.bindings:
            if binding.port == port and binding.version == local_version:
                if binding.address is None:
                    bound = True
                elif binding.address == local:
                    bound = specific = True
        if not bound:
            continue
        smallest: RemoteIPRange | None = None
        smallest_size = 0
        for r in connector.remote_ip_ranges:
            if r.version == remote_version and r.first <= remote <= r.last:
                size = r.last - r.first + 1
                if smallest is None or size < smallest_size:
                    smallest, smallest_size = r, size
        if smallest is None:
            continue
        key = (smallest_size, 0 if specific else 1, order)
        if best_key is None or key < best_key:
            best_key, best = key, LinearResult(connector, smallest, specific)
    return best


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def best_per_call(
    runs: Sequence[tuple[Callable[[], object], int]], repeats: int, min_seconds: float
) -> list[float]:
    """Best seconds per call of each ``(run, calls per run)``, over ``repeats`` samples taken round-robin
    (so a noisy moment hits every measurement alike); a sample loops ``run`` for >= ``min_seconds``."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        loops = []
        for run, _ in runs:  # calibrate (and warm up)
            start = time.perf_counter()
            run()
            once = time.perf_counter() - start
            loops.append(max(1, math.ceil(min_seconds / once)) if once < min_seconds else 1)
        best = [math.inf] * len(runs)
        for _ in range(repeats):
            for position, (run, calls) in enumerate(runs):
                start = time.perf_counter()
                for _ in range(loops[position]):
                    run()
                best[position] = min(best[position], (time.perf_counter() - start) / (loops[position] * calls))
        return best
    finally:
        if gc_was_enabled:
            gc.enable()


@dataclass
class Case:
    """One configuration size, built, checked and ready to time."""

    n: int
    connectors: int
    queries: int
    linear_calls: int
    run_index: Callable[[], None]
    run_policy: Callable[[], None]
    linear_runs: list[Callable[[], object]]  # one per query of the linear sample
    mismatches: list[str]
    index_s: float = math.nan
    policy_s: float = math.nan
    linear_s: float = math.nan


def describe(result: object) -> tuple[str, str, bool] | None:
    if result is None:
        return None
    return (result.connector.name, str(result.matched_range), result.specific_binding)  # type: ignore[attr-defined]


def prepare(n: int, args: argparse.Namespace) -> Case:
    """Generate, validate and index a configuration of ``n`` ranges, and check every query address."""
    print(f"--- N = {n:,} remote ranges " + "-" * 60)
    start = time.perf_counter()
    gen = make_config_mapping(n, SEED + n)
    t_generate = time.perf_counter() - start

    gc.collect()
    start = time.perf_counter()
    config = config_from_mapping(gen.mapping, source=f"<bench N={n}>")
    t_config = time.perf_counter() - start
    start = time.perf_counter()
    ConnectorIndex.build(config.connectors, source=MostSpecificSelection.name)
    t_index = time.perf_counter() - start
    start = time.perf_counter()
    policy = RelayPolicy(config)  # makes the plugin manager and builds its own index
    t_policy = time.perf_counter() - start
    index = policy.index
    tables = getattr(index, "_tables", {})
    segments = sum(len(t.starts) for t in tables.values())
    forms = ", ".join(f"{kind} {count:,}" for kind, count in sorted(gen.forms.items()))
    print(
        f"connectors: {gen.connectors:,} ({len(config.enabled_connectors):,} enabled); "
        f"range forms (relay and specific-binding connectors): {forms}"
    )
    print(
        f"generate mapping {t_generate:.3f} s | config_from_mapping (parse + validate) {t_config:.3f} s | "
        f"ConnectorIndex.build {t_index:.3f} s | RelayPolicy() {t_policy:.3f} s "
        f"(index: {len(tables)} tables, {segments:,} segments)"
    )
    if t_config > 60:
        print(f"WARNING: validating {n:,} ranges took {t_config:.1f} s (> 60 s)")

    queries, mix = make_queries(gen, args.queries, SEED * 7)
    print("queries: " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items())))

    # Correctness: index, policy (pluggy hook) and linear scan agree on every query address.
    connectors = config.connectors
    mismatches: list[str] = []
    winners: Counter[str] = Counter()
    start = time.perf_counter()
    for connection in queries:
        by_index = describe(index.lookup(connection))
        by_policy = describe(policy.select_connector(connection))
        by_scan = describe(linear_select(connectors, connection))
        if not (by_index == by_policy == by_scan):
            mismatches.append(f"N={n} {connection}: index={by_index} policy={by_policy} linear={by_scan}")
        winners["no connector" if by_index is None else by_index[0] if "Frontend" in by_index[0] else "relay"] += 1
    t_check = time.perf_counter() - start
    print(
        f"checked {len(queries):,} query addresses (index vs policy vs linear scan) in {t_check:.1f} s: "
        f"{len(mismatches)} mismatches; winners: {winners['relay']} relay / specific-binding connectors, "
        f"{winners['Default Frontend']} catch-all Default Frontend, {winners['Client Frontend']} Client Frontend, "
        f"{winners['no connector']} no connector"
    )
    for line in mismatches[:10]:
        print("  MISMATCH", line)

    lookup = index.lookup
    select = policy.select_connector

    def run_index() -> None:
        for connection in queries:
            lookup(connection)

    def run_policy() -> None:
        for connection in queries:
            select(connection)

    # The scan costs O(ranges) per lookup: it is timed on every k-th query only (the same queries for
    # every N, so the same mix of kinds), each query on its own.
    linear_queries = queries[:: max(1, math.ceil(len(queries) / args.linear_lookups))]
    linear_runs: list[Callable[[], object]] = [
        functools.partial(linear_select, connectors, connection) for connection in linear_queries
    ]
    return Case(n, gen.connectors, len(queries), len(linear_queries), run_index, run_policy, linear_runs, mismatches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer query addresses and repetitions")
    args = parser.parse_args()
    if args.quick:
        args.queries, args.repeats, args.linear_repeats, args.linear_lookups = 300, 10, 2, 30
    else:
        args.queries, args.repeats, args.linear_repeats, args.linear_lookups = 1000, 30, 3, 100

    print("$ python bench/selection.py" + (" --quick" if args.quick else ""))
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) on {platform.platform()}")
    print(
        f"{args.queries} query addresses per N (seeded). Index and policy: best of {args.repeats} passes over "
        f"all of them. Linear scan: {args.linear_lookups} of them, each timed alone, best of "
        f"{args.linear_repeats}, averaged. Samples taken round-robin over every N (the machine is "
        "shared and noisy); time.perf_counter, gc off while timing."
    )
    wall = time.perf_counter()
    cases = [prepare(n, args) for n in SIZES]
    gc.collect()

    print("--- timing " + "-" * 60)
    runs = [(case.run_index, case.queries) for case in cases] + [(case.run_policy, case.queries) for case in cases]
    timed = best_per_call(runs, args.repeats, 0.01)
    linear_runs = [(run, 1) for case in cases for run in case.linear_runs]
    linear = best_per_call(linear_runs, args.linear_repeats, 0.003)
    offset = 0
    for position, case in enumerate(cases):
        case.index_s, case.policy_s = timed[position], timed[len(cases) + position]
        case.linear_s = statistics.fmean(linear[offset : offset + case.linear_calls])
        offset += case.linear_calls
        print(
            f"N={case.n:,}: per lookup index {case.index_s * 1e6:.2f} us, policy {case.policy_s * 1e6:.2f} us, "
            f"linear {case.linear_s * 1e6:,.1f} us (index/policy over {case.queries} lookups, "
            f"linear over {case.linear_calls})"
        )

    base = cases[0].index_s
    print()
    header = (
        f"{'ranges':>9} {'connectors':>10} {'index/s':>12} {'policy/s':>12} {'linear/s':>12} "
        f"{'index vs linear':>16} {'index time vs N=10':>19}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        print(
            f"{case.n:>9,} {case.connectors:>10,} {1 / case.index_s:>12,.0f} {1 / case.policy_s:>12,.0f} "
            f"{1 / case.linear_s:>12,.1f} {case.linear_s / case.index_s:>15,.1f}x {case.index_s / base:>18.2f}x"
        )
    print()
    last = cases[-1]
    speedup = last.linear_s / last.index_s
    ratio = last.index_s / base
    print(
        f"{'PASS' if speedup >= 100 else 'FAIL'}: at {last.n:,} ranges the index is {speedup:,.0f}x faster "
        "than the linear scan (target >= 100x)"
    )
    print(
        f"{'PASS' if ratio <= 3 else 'FAIL'}: at {last.n:,} ranges a lookup takes {ratio:.2f}x the time of one "
        f"at {cases[0].n} ranges (target <= 3x)"
    )
    mismatches = [line for case in cases for line in case.mismatches]
    checked = sum(case.queries for case in cases)
    print(
        f"correctness: {checked:,} query addresses checked, {len(mismatches)} mismatches between index, "
        "policy and linear scan"
    )
    print(f"total run time {time.perf_counter() - wall:.1f} s")
    assert not mismatches, f"{len(mismatches)} selections differ between the index and the linear scan"
    return 0


if __name__ == "__main__":
    sys.exit(main())
