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
    """Permission groups and explicit permission entries, as grants."""

    name = "relayauth.permissions"

    @hookimpl
    def relayauth_grants(self, config: RelayConfig, connector: Connector, connection: ConnectionInfo) -> list[Grant]:
        return connector_grants(connector)
