"""What the policy knows about an SMTP session at the moment it judges a command."""

from __future__ import annotations

from dataclasses import dataclass

from .connection import ConnectionInfo
from .connector import Connector
from .rights import EffectiveRights

__all__ = ["SessionState"]


@dataclass(frozen=True, slots=True)
class SessionState:
    """An immutable snapshot of a session, handed to every judgement hook.

    :param session_id: 16 hex digits, as in Exchange's protocol log.
    :param connection: the addresses of the connection (after a trusted PROXY header).
    :param connector: the connector the session was given at connect time.
    :param principals: who the session runs as (reference §4.3).
    :param rights: the effective rights of those principals on the connector.
    :param user: the authenticated user name, or None for an anonymous session.
    :param tls: True once STARTTLS has completed.
    """

    session_id: str
    connection: ConnectionInfo
    connector: Connector
    principals: frozenset[str]
    rights: EffectiveRights
    user: str | None = None
    tls: bool = False

    @property
    def authenticated(self) -> bool:
        return self.user is not None
