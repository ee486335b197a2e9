"""Default plugins: the session's principals and the grants of the connector's configuration."""

from __future__ import annotations

from ..engine.permissions import connector_grants
from ..engine.principals import default_principals
from ..hookspecs import hookimpl
from ..model.connection import ConnectionInfo
from ..model.connector import Connector, RelayConfig
from ..model.rights import Grant

__all__ = ["ConnectorGrants", "SessionPrincipals"]


class SessionPrincipals:
    name = "relayauth.principals"

    @hookimpl
    def relayauth_principals(self, connector: Connector, user: str | None) -> list[str]:
        return sorted(default_principals(connector, user))


class ConnectorGrants:
    """Permission groups and explicit permission entries, as grants (computed once per connector:
    a connector is immutable, and every session of it asks)."""

    name = "relayauth.permissions"

    def __init__(self) -> None:
        self._by_connector: dict[int, tuple[Connector, list[Grant]]] = {}

    @hookimpl
    def relayauth_grants(self, config: RelayConfig, connector: Connector, connection: ConnectionInfo) -> list[Grant]:
        known = self._by_connector.get(id(connector))
        if known is None or known[0] is not connector:
            if len(self._by_connector) >= 4096:  # connectors of configurations reloaded long ago
                self._by_connector.clear()
            known = self._by_connector[id(connector)] = (connector, connector_grants(connector))
        return list(known[1])
