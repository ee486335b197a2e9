"""Default plugin: the most specific remote range wins (reference §6.4)."""

from __future__ import annotations

from ..engine.selection import ConnectorIndex
from ..hookspecs import hookimpl
from ..model.connection import ConnectionInfo, ConnectorSelection
from ..model.connector import RelayConfig

__all__ = ["MostSpecificSelection"]


class MostSpecificSelection:
    name = "relayauth.selection"

    @hookimpl(trylast=True)
    def relayauth_select_connector(
        self, config: RelayConfig, index: ConnectorIndex, connection: ConnectionInfo
    ) -> ConnectorSelection | None:
        return index.lookup(connection)
