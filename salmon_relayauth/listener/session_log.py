"""What one SMTP session writes to the protocol log and the decision log."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..model.decision import Decision
from ..model.enums import ProtocolLoggingLevel
from ..oplog import DecisionLog, ProtocolLog, permission_flags
from ..oplog.protocol_log import ProtocolSession
from ..session import RelaySession

__all__ = ["SessionLogs"]


class SessionLogs:
    """The logs of one session: protocol log lines (when its connector logs verbosely) with their
    sequence numbers, and decision log lines."""

    def __init__(
        self,
        relay: RelaySession,
        protocol_log: ProtocolLog | None,
        decision_log: DecisionLog | None,
        proxied_by: str | None,
    ) -> None:
        self.relay = relay
        connection = relay.connection
        self.local = f"{connection.local_address}:{connection.local_port}"
        self.remote = f"{connection.remote_address}:{connection.remote_port}"
        self.proxied_by = proxied_by
        self.decision_log = decision_log
        self.connector_id = ""
        verbose = True  # a session no connector took is logged, with no connector id
        if relay.state is not None:
            connector = relay.state.connector
            self.connector_id = f"{relay.fqdn}\\{connector.name}"
            verbose = connector.protocol_logging_level is ProtocolLoggingLevel.VERBOSE
        self.protocol: ProtocolSession | None = None
        # sent and received, once for every reply and command, go straight to the protocol log's line.
        self.sent: Callable[[str], None] = _not_logged
        self.received: Callable[[str], None] = _not_logged
        if protocol_log is not None and verbose:
            self.protocol = protocol_log.session(self.connector_id, relay.session_id, self.local, self.remote)
            self.sent = functools.partial(self.protocol.line, ">")
            self.received = functools.partial(self.protocol.line, "<")

    def _event(self, event: str, data: str = "", context: str = "") -> None:
        if self.protocol is not None:
            self.protocol.line(event, data, context)

    def connected(self) -> None:
        self._event("+")
        self.permissions()

    def permissions(self) -> None:
        if self.protocol is not None and self.relay.state is not None:  # the flags only for the log
            self._event("*", permission_flags(self.relay.state.rights.granted), "Set Session Permissions")

    def info(self, data: str, context: str = "") -> None:
        self._event("*", data, context)

    def disconnected(self, by_client: bool) -> None:
        self._event("-", "", "Remote" if by_client else "Local")

    def decision(self, decision: Decision, command: str, **extra: Any) -> None:
        if self.decision_log is None:
            return
        state = self.relay.state
        context: dict[str, Any] = {
            "session_id": self.relay.session_id,
            "client": self.remote,
        }
        if self.proxied_by is not None:
            context["proxied_by"] = self.proxied_by
        context["connector"] = state.connector.name if state is not None else None
        context["principals"] = sorted(state.principals) if state is not None else []
        if state is not None and state.user is not None:
            context["user"] = state.user
        context.update(extra)
        self.decision_log.record(decision, command=command, **context)


def _not_logged(line: str) -> None:
    """``sent``/``received`` of a session its connector does not log verbosely."""
