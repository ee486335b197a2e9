"""What is known about a connection when it is accepted, and which connector it was given."""

from __future__ import annotations

from dataclasses import dataclass

from .addresses import RemoteIPRange
from .connector import Connector

__all__ = ["ConnectionInfo", "ConnectorSelection"]


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """The two ends of a TCP connection, as the listener (or a trusted PROXY header) reports them."""

    local_address: str
    local_port: int
    remote_address: str
    remote_port: int = 0


@dataclass(frozen=True, slots=True)
class ConnectorSelection:
    """The connector chosen for a connection and why.

    :param connector: the selected connector.
    :param matched_range: the connector's smallest remote range containing the client.
    :param specific_binding: True when the connection came in on a binding that names the local IP,
        False when through ``0.0.0.0`` / ``[::]``.
    :param source: the name of the plugin that chose it.
    """

    connector: Connector
    matched_range: RemoteIPRange
    specific_binding: bool
    source: str = ""
