"""The relay's own metrics: the one place their names, labels and allowed values are defined.

The table of metrics is in the docstring of :mod:`salmon_relayauth.metrics`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple, get_args

from .registry import MetricsRegistry

__all__ = [
    "COMMANDS",
    "DecisionOutcome",
    "DeliveryOutcome",
    "PREFIX",
    "QueueStats",
    "RelayMetrics",
    "SessionRefusal",
]

PREFIX = "relayauth_"

DecisionOutcome = Literal["accepted", "refused", "deferred"]
DeliveryOutcome = Literal["delivered", "deferred", "failed", "dsn"]
SessionRefusal = Literal["no_connector", "connection_limit"]

COMMANDS = frozenset(
    {
        "CONNECT", "HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT",
        "RSET", "NOOP", "VRFY", "EXPN", "HELP", "QUIT", "PROXY", "XCLIENT",
    }
)
"""Command label values; any other verb is counted as ``OTHER`` so a client cannot add series."""

_DECISION_OUTCOMES: tuple[str, ...] = get_args(DecisionOutcome)
_DELIVERY_OUTCOMES: tuple[str, ...] = get_args(DeliveryOutcome)
_SESSION_REFUSALS: tuple[str, ...] = get_args(SessionRefusal)


class QueueStats(NamedTuple):
    """What the queue callback of :meth:`RelayMetrics.watch_queue` returns."""

    messages: int
    oldest_received_at: float | None
    """``time.time()`` when the oldest queued message was received; None when the queue is empty."""


class RelayMetrics:
    """The relay's counters and gauges in ``registry``; the listener, queue and delivery worker call
    these methods (from any thread). Series for the known reasons and outcomes start at 0."""

    def __init__(self, registry: MetricsRegistry, clock: Callable[[], float] = time.time) -> None:
        self.registry = registry
        self._clock = clock
        self._sessions = registry.counter(
            PREFIX + "sessions", "SMTP sessions opened, by the receive connector selected.", ["connector"]
        )
        self._sessions_refused = registry.counter(
            PREFIX + "sessions_refused", "Connections refused before a session began, by reason.", ["reason"]
        )
        self._decisions = registry.counter(
            PREFIX + "decisions",
            "Replies to SMTP commands, by connector, command and outcome (accepted 2xx, deferred 4xx, refused 5xx).",
            ["connector", "command", "outcome"],
        )
        self._throttled = registry.counter(
            PREFIX + "throttled", "Commands or connections refused by a throttling limit.", ["connector", "limit"]
        )
        self._deliveries = registry.counter(
            PREFIX + "deliveries",
            "Delivery outcomes: recipients delivered, deferred or failed; notifications (DSN) queued.",
            ["outcome"],
        )
        for reason in _SESSION_REFUSALS:
            self._sessions_refused.labels(reason=reason)
        for outcome in _DELIVERY_OUTCOMES:
            self._deliveries.labels(outcome=outcome)
        self._queue_fn: Callable[[], QueueStats] | None = None
        self._queue_lock = threading.Lock()
        self._queue_pending: QueueStats | None = None

    def session_opened(self, connector: str) -> None:
        """A session began on ``connector`` (it was selected and the banner sent)."""
        self._sessions.labels(connector=connector).inc()

    def session_refused(self, reason: SessionRefusal) -> None:
        """A connection was turned away before any session: no connector matched it, or a connection
        limit was reached."""
        if reason not in _SESSION_REFUSALS:
            raise ValueError(f"session refusal reason must be one of {list(_SESSION_REFUSALS)}, not {reason!r}")
        self._sessions_refused.labels(reason=reason).inc()

    def decision(self, connector: str, command: str, outcome: DecisionOutcome) -> None:
        """The relay answered ``command`` (its verb; case and arguments do not matter) on ``connector``."""
        if outcome not in _DECISION_OUTCOMES:
            raise ValueError(f"decision outcome must be one of {list(_DECISION_OUTCOMES)}, not {outcome!r}")
        verb = command.split(maxsplit=1)[0].upper() if command.strip() else ""
        self._decisions.labels(
            connector=connector, command=verb if verb in COMMANDS else "OTHER", outcome=outcome
        ).inc()

    def throttled(self, connector: str, limit: str) -> None:
        """A throttling limit (its configuration setting name) refused a command or connection."""
        self._throttled.labels(connector=connector, limit=limit).inc()

    def delivery(self, outcome: DeliveryOutcome, count: int = 1) -> None:
        """``count`` recipients delivered, deferred or failed, or ``count`` notifications queued (``dsn``)."""
        if outcome not in _DELIVERY_OUTCOMES:
            raise ValueError(f"delivery outcome must be one of {list(_DELIVERY_OUTCOMES)}, not {outcome!r}")
        self._deliveries.labels(outcome=outcome).inc(count)

    def watch_queue(self, fn: Callable[[], QueueStats]) -> None:
        """Expose the queue's depth and the age of its oldest message, from ``fn()`` at each scrape
        (called from the scraping thread, so it must be thread-safe). A later call replaces ``fn``."""
        with self._queue_lock:
            self._queue_fn = fn
            self._queue_pending = None
        self.registry.gauge_callback(PREFIX + "queue_messages", "Messages in the queue.", self._queue_messages)
        self.registry.gauge_callback(
            PREFIX + "queue_oldest_age_seconds",
            "Seconds since the oldest message in the queue was received; 0 when the queue is empty.",
            self._queue_oldest_age,
        )

    # A scrape renders queue_messages, then queue_oldest_age_seconds: the first stores the stats it got
    # for the second to use once, so one scrape asks the queue once and both values agree.

    def _queue_messages(self) -> list[tuple[Mapping[str, str], float]]:
        stats = self._queue_stats()
        with self._queue_lock:
            self._queue_pending = stats
        return [({}, stats.messages)]

    def _queue_oldest_age(self) -> list[tuple[Mapping[str, str], float]]:
        with self._queue_lock:
            stats, self._queue_pending = self._queue_pending, None
        if stats is None:
            stats = self._queue_stats()
        if stats.oldest_received_at is None:
            return [({}, 0)]
        return [({}, max(0.0, self._clock() - stats.oldest_received_at))]

    def _queue_stats(self) -> QueueStats:
        with self._queue_lock:
            fn = self._queue_fn
        assert fn is not None
        return fn()
