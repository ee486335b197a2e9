"""Metrics for a monitoring system to scrape, in the Prometheus text format; off unless configured.

:class:`MetricsRegistry` holds thread-safe counters and gauges and renders them;
:class:`RelayMetrics` defines the relay's metrics and the calls that update them;
:class:`MetricsServer` serves ``GET /metrics`` on a loopback address only.

The relay's metrics (every label value is a string):

=====================================  =======  ===========================  ==============================================
Name                                   Type     Labels                       Meaning
=====================================  =======  ===========================  ==============================================
relayauth_sessions_total               counter  connector                    SMTP sessions opened: a receive connector was
                                                                             selected for the connection and the banner sent.
relayauth_sessions_refused_total       counter  reason                       Connections turned away before a session:
                                                                             ``no_connector`` (no connector matched the
                                                                             local binding and client address) or
                                                                             ``connection_limit`` (a connection limit was
                                                                             reached).
relayauth_decisions_total              counter  connector, command, outcome  Replies to SMTP commands. ``command`` is the
                                                                             verb (``EHLO``, ``MAIL``, ``RCPT``, ``DATA``,
                                                                             ...; unknown verbs count as ``OTHER``);
                                                                             ``outcome`` is ``accepted`` (2xx),
                                                                             ``deferred`` (4xx) or ``refused`` (5xx).
relayauth_throttled_total              counter  connector, limit             Commands or connections refused by a
                                                                             throttling limit; ``limit`` is the name of
                                                                             its configuration setting.
relayauth_deliveries_total             counter  outcome                      Delivery worker outcomes, per recipient:
                                                                             ``delivered`` (2xx from the smarthost),
                                                                             ``deferred`` (to be retried), ``failed``
                                                                             (5xx or expired); and ``dsn``, per delivery
                                                                             status notification queued to a sender.
relayauth_queue_messages               gauge    (none)                       Messages in the durable queue, counted at
                                                                             scrape time.
relayauth_queue_oldest_age_seconds     gauge    (none)                       Seconds since the oldest queued message was
                                                                             received, at scrape time; 0 when empty.
=====================================  =======  ===========================  ==============================================

The series of ``relayauth_sessions_refused_total`` and ``relayauth_deliveries_total`` exist from the
start, at 0, for every reason and outcome; the queue gauges appear once the queue is watched.
"""

from .registry import CallbackGauge, Counter, Gauge, GaugeCallback, MetricsRegistry, format_value
from .relay import (
    COMMANDS,
    PREFIX,
    DecisionOutcome,
    DeliveryOutcome,
    QueueStats,
    RelayMetrics,
    SessionRefusal,
)
from .server import CONTENT_TYPE, MetricsServer, check_loopback

__all__ = [
    "COMMANDS",
    "CONTENT_TYPE",
    "PREFIX",
    "CallbackGauge",
    "Counter",
    "DecisionOutcome",
    "DeliveryOutcome",
    "Gauge",
    "GaugeCallback",
    "MetricsRegistry",
    "MetricsServer",
    "QueueStats",
    "RelayMetrics",
    "SessionRefusal",
    "check_loopback",
    "format_value",
]
