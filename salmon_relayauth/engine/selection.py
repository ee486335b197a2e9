"""Most-specific connector selection (reference §6.4, §6.5) through an index built once per config.

For every (local port, local address, remote family) the index holds a sorted list of disjoint
client-address segments, each mapped to the connector that wins there. A lookup is one dict access
and one binary search, whatever the number of connectors and ranges.

Ranking, smallest first: the size of the matching remote range; then a binding naming the local IP
before a ``0.0.0.0`` / ``[::]`` binding; then the connector's position in the file (identical
ranges on identical bindings are refused by validation, so this last key only orders what a
configuration built without validation may contain).
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..model.addresses import AddressError, client_address
from ..model.connection import ConnectionInfo, ConnectorSelection
from ..model.connector import Connector

__all__ = ["ConnectorIndex", "rank_candidates"]

# (port, local family, local address or None for the wildcard, remote family)
_TableKey = tuple[int, int, int | None, int]
_Rank = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class _Segments:
    starts: list[int]
    winners: list[ConnectorSelection | None]


@dataclass(frozen=True, slots=True)
class _Item:
    first: int
    last: int
    rank: _Rank
    selection: ConnectorSelection


class ConnectorIndex:
    """The selection index of a set of enabled connectors."""

    def __init__(self, tables: dict[_TableKey, _Segments], connectors: tuple[Connector, ...]) -> None:
        self._tables = tables
        self.connectors = connectors

    @classmethod
    def build(cls, connectors: Iterable[Connector], source: str = "") -> ConnectorIndex:
        enabled = tuple(connector for connector in connectors if connector.live)
        wildcard_items: dict[tuple[int, int, int], list[_Item]] = defaultdict(list)
        specific_items: dict[_TableKey, list[_Item]] = defaultdict(list)
        for order, connector in enumerate(enabled):
            for binding in set(connector.bindings):
                specific = binding.address is not None
                for remote in connector.remote_ip_ranges:
                    if remote.version != binding.version:
                        continue  # a socket of one family only ever sees clients of that family
                    selection = ConnectorSelection(connector, remote, specific, source)
                    item = _Item(remote.first, remote.last, (remote.size, 0 if specific else 1, order), selection)
                    if specific:
                        specific_items[(binding.port, binding.version, binding.address, remote.version)].append(item)
                    else:
                        wildcard_items[(binding.port, binding.version, remote.version)].append(item)
        tables: dict[_TableKey, _Segments] = {}
        for (port, version, remote_version), items in wildcard_items.items():
            tables[(port, version, None, remote_version)] = _segments(items)
        for key, items in specific_items.items():
            port, version, _, remote_version = key
            tables[key] = _segments(items + wildcard_items.get((port, version, remote_version), []))
        return cls(tables, enabled)

    def lookup(self, connection: ConnectionInfo) -> ConnectorSelection | None:
        """The winning connector for a connection, or None when no enabled connector takes it.

        Raises :class:`AddressError` when either address is not an IP address.
        """
        local_version, local = client_address(connection.local_address)
        remote_version, remote = client_address(connection.remote_address)
        port = connection.local_port
        table = self._tables.get((port, local_version, local, remote_version)) or self._tables.get(
            (port, local_version, None, remote_version)
        )
        if table is None:
            return None
        position = bisect_right(table.starts, remote) - 1
        return table.winners[position] if position >= 0 else None


def _segments(items: list[_Item]) -> _Segments:
    """Sweep the range ends in order, keeping the best-ranked range that covers each point."""
    items.sort(key=lambda item: item.first)
    points = sorted({item.first for item in items} | {item.last + 1 for item in items})
    starts: list[int] = []
    winners: list[ConnectorSelection | None] = []
    active: list[tuple[_Rank, int, int]] = []  # (rank, last, position in items)
    next_item = 0
    for point in points:
        while next_item < len(items) and items[next_item].first <= point:
            item = items[next_item]
            heapq.heappush(active, (item.rank, item.last, next_item))
            next_item += 1
        while active and active[0][1] < point:
            heapq.heappop(active)
        winner = items[active[0][2]].selection if active else None
        if not winners or winners[-1] is not winner:
            starts.append(point)
            winners.append(winner)
    return _Segments(starts, winners)


def rank_candidates(connectors: Iterable[Connector], connection: ConnectionInfo) -> list[ConnectorSelection]:
    """Every enabled connector that could take the connection, best first, by a plain scan.

    This is what ``explain`` shows as the runners-up; the live path uses :class:`ConnectorIndex`.
    """
    try:
        local_version, local = client_address(connection.local_address)
        remote_version, remote = client_address(connection.remote_address)
    except AddressError:
        return []
    ranked: list[tuple[_Rank, ConnectorSelection]] = []
    for order, connector in enumerate(c for c in connectors if c.live):
        bound = [b for b in connector.bindings if b.covers(local_version, local, connection.local_port)]
        if not bound:
            continue
        specific = any(not b.is_wildcard for b in bound)
        hits = [r for r in connector.remote_ip_ranges if r.contains(remote_version, remote)]
        if hits:
            best = min(hits, key=lambda r: r.size)
            ranked.append(((best.size, 0 if specific else 1, order), ConnectorSelection(connector, best, specific)))
    ranked.sort(key=lambda pair: pair[0])
    return [selection for _, selection in ranked]
