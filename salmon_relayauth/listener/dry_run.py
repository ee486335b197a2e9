"""Dry-run connectors on the live listener: the shadow session that is asked, never obeyed."""

from __future__ import annotations

from ..model.connection import ConnectionInfo
from ..policy import RelayPolicy
from ..session import RelaySession

__all__ = ["dry_run_session"]


def dry_run_session(policy: RelayPolicy, connection: ConnectionInfo, live: RelaySession) -> RelaySession | None:
    """A shadow of the session as it would run with the dry-run connectors live, when that changes
    which connector takes it or the connector is a dry-run one; it sees every command, never answers."""
    if policy.what_if is None or live.selection is None:
        return None
    trial = RelaySession(policy.what_if, connection, live.session_id)
    trial.open()
    if trial.selection is None:
        return None
    name = trial.selection.connector.name
    trying = any(c.dry_run and c.name == name for c in policy.config.connectors)
    return trial if trying or name != live.selection.connector.name else None
