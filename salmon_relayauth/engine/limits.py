"""Pure helpers for throttling: who counts as one source, who is exempt, connection caps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..model.addresses import AddressError, client_address
from ..model.connection import ConnectionInfo
from ..model.connector import Connector
from ..model.decision import Decision

__all__ = ["ConnectionCounts", "connection_cap_decision", "is_exempt", "source_key"]


@dataclass(frozen=True, slots=True)
class ConnectionCounts:
    """Open connections on this relay node when a new one arrives (not counting it).

    :param on_connector: connections the connector already serves.
    :param from_source: of those, connections from the same source (address or prefix).
    """

    on_connector: int
    from_source: int


def source_key(connector: Connector, address: str) -> str:
    """The client's address, widened to the connector's prefix (``192.0.2.0/24``, ``2001:db8::/64``)."""
    if connector.rate_limit_ipv4_prefix == 32 and "." in address and ":" not in address:
        return address  # the default for IPv4: the address itself
    try:
        version, value = client_address(address)
    except AddressError:
        return address
    bits = 32 if version == 4 else 128
    prefix = connector.rate_limit_ipv4_prefix if version == 4 else connector.rate_limit_ipv6_prefix
    network = (value >> (bits - prefix)) << (bits - prefix)
    if version == 4:
        text = ".".join(str((network >> shift) & 255) for shift in (24, 16, 8, 0))
    else:
        text = ":".join(f"{(network >> shift) & 0xFFFF:x}" for shift in range(112, -16, -16))
    return text if prefix == bits else f"{text}/{prefix}"


def is_exempt(connector: Connector, connection: ConnectionInfo, user: str | None) -> bool:
    if user is not None and user.casefold() in {name.casefold() for name in connector.throttling_exempt_users}:
        return True
    if not connector.throttling_exemptions:
        return False
    try:
        version, value = client_address(connection.remote_address)
    except AddressError:
        return False
    return any(exemption.contains(version, value) for exemption in connector.throttling_exemptions)


def connection_cap_decision(connector: Connector, counts: ConnectionCounts, source: str) -> Decision | None:
    """MaxInboundConnection, MaxInboundConnectionPerSource and the percentage per source (reference §8):
    the per-source cap is the smaller of the fixed cap and the percentage of the connections the
    connector still has room for (at least one)."""
    total = connector.max_inbound_connection
    if total is not None and counts.on_connector >= total:
        return Decision(
            421,
            "4.3.2",
            "The maximum number of concurrent server connections has exceeded a limit, closing transmission channel",
            f"connector {connector.name!r} already has {counts.on_connector} connections (max_inbound_connection {total})",
            "relayauth.connection_limits",
        )
    caps = []
    if connector.max_inbound_connection_per_source is not None:
        caps.append(connector.max_inbound_connection_per_source)
    if total is not None:
        room = total - counts.on_connector
        caps.append(max(1, math.ceil(connector.max_inbound_connection_percentage_per_source * room / 100)))
    if caps and counts.from_source >= min(caps):
        return Decision(
            421,
            "4.3.2",
            "The maximum number of concurrent connections has exceeded a limit, closing transmission channel",
            f"{source} already has {counts.from_source} connections on connector {connector.name!r} (cap {min(caps)})",
            "relayauth.connection_limits",
        )
    return None
