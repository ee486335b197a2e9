"""Per-connection protections Exchange applies: protocol errors, logon failures, tarpitting, and
the count of open connections per connector and per source on this relay node."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine.limits import ConnectionCounts
from ..model.connector import Connector
from ..model.decision import Decision

__all__ = ["ConnectionTracker", "SessionGuard", "TOO_MANY_ERRORS"]

TOO_MANY_ERRORS = Decision(
    421, "4.7.0", "Too many errors on this connection, closing transmission channel", "", "relayauth.listener"
)
# Replies that mean the client broke the protocol (syntax, sequence, unknown command), as opposed to
# a policy refusal such as 550 5.7.1 Unable to relay.
_PROTOCOL_ERROR_CODES = frozenset({500, 501, 502, 503, 504, 555})


@dataclass
class SessionGuard:
    """Counts one session's protocol errors and logon failures against its connector's limits."""

    connector: Connector
    protocol_errors: int = 0
    logon_failures: int = 0

    def record_reply(self, code: int) -> Decision | None:
        """Count a reply; a decision to send before closing when a limit is crossed."""
        if code in _PROTOCOL_ERROR_CODES:
            self.protocol_errors += 1
            limit = self.connector.max_protocol_errors
            if limit is not None and self.protocol_errors > limit:
                return _with_reason(f"{self.protocol_errors} protocol errors (max_protocol_errors {limit})")
        elif code == 535:
            self.logon_failures += 1
            limit = self.connector.max_logon_failures
            if limit and self.logon_failures >= limit:
                return _with_reason(f"{self.logon_failures} logon failures (max_logon_failures {limit})")
        return None

    def tarpit(self, code: int, authenticated: bool) -> float:
        """Seconds to hold an error reply: unauthenticated sessions drawing errors are slowed down
        (``tarpit_interval``), failed logons too (``auth_tarpit_interval``); authenticated sessions never."""
        if code == 535:
            return self.connector.auth_tarpit_interval.total_seconds()
        if code >= 400 and code != 421 and not authenticated:
            return self.connector.tarpit_interval.total_seconds()
        return 0.0


def _with_reason(reason: str) -> Decision:
    return Decision(TOO_MANY_ERRORS.code, TOO_MANY_ERRORS.status, TOO_MANY_ERRORS.text, reason, TOO_MANY_ERRORS.source)


@dataclass
class ConnectionTracker:
    """Open connections by connector and by (connector, source), for the concurrency limits."""

    by_connector: Counter[str] = field(default_factory=Counter)
    by_source: Counter[tuple[str, str]] = field(default_factory=Counter)

    def counts(self, connector: str, source: str) -> ConnectionCounts:
        return ConnectionCounts(self.by_connector[connector], self.by_source[(connector, source)])

    def opened(self, connector: str, source: str) -> None:
        self.by_connector[connector] += 1
        self.by_source[(connector, source)] += 1

    def open_unless(self, connector: str, source: str, refuse: Callable[[ConnectionCounts], bool]) -> bool:
        """Count one more connection unless ``refuse`` says no to the current counts."""
        if refuse(self.counts(connector, source)):
            return False
        self.opened(connector, source)
        return True

    def closed(self, connector: str, source: str) -> None:
        self.by_connector[connector] -= 1
        self.by_source[(connector, source)] -= 1
        if self.by_source[(connector, source)] <= 0:
            del self.by_source[(connector, source)]
        if self.by_connector[connector] <= 0:
            del self.by_connector[connector]
