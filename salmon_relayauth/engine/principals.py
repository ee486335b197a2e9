"""Which principal a session runs as (reference §4.3)."""

from __future__ import annotations

from ..model.connector import Connector
from ..model.enums import AuthMechanism, Principal

__all__ = ["default_principals"]


def default_principals(connector: Connector, user: str | None) -> frozenset[str]:
    """The built-in rule.

    - After a successful AUTH: the user and ``NT AUTHORITY\\Authenticated Users``.
    - On a connector with ``ExternalAuthoritative``: ``MS Exchange\\Externally Secured Servers``
      from the moment of connection (the network is trusted to have vouched for the host).
    - Otherwise: ``NT AUTHORITY\\ANONYMOUS LOGON``.

    Partner servers (domain-secure mutual TLS) and Exchange-server authentication need a client
    certificate or Kerberos, which this relay does not verify; their principals are never assumed.
    """
    if user is not None:
        return frozenset({user, Principal.AUTHENTICATED_USERS.value})
    if AuthMechanism.EXTERNAL_AUTHORITATIVE in connector.auth_mechanism:
        return frozenset({Principal.EXTERNALLY_SECURED_SERVERS.value})
    return frozenset({Principal.ANONYMOUS_LOGON.value})
