"""Default plugins for the receive-connector limits that plugins can extend: message rate and
concurrent connections (reference §7.3, §8)."""

from __future__ import annotations

from ..engine.limits import ConnectionCounts, connection_cap_decision, is_exempt, source_key
from ..engine.smtp_address import MailPath
from ..hookspecs import hookimpl
from ..model.connection import ConnectionInfo
from ..model.connector import Connector, RelayConfig
from ..model.decision import Decision
from ..model.enums import MessageRateSource as Source
from ..model.limits import RateLimit
from ..model.session import SessionState

__all__ = ["ConnectionLimits", "MessageRate"]

RATE_EXCEEDED = ("421", "4.4.2", "Message submission rate for this client has exceeded the configured limit")


class MessageRate:
    """``message_rate_limit`` messages per minute per source, counted at MAIL FROM."""

    name = "relayauth.message_rate"

    @hookimpl
    def relayauth_rate_limits(self, config: RelayConfig, session: SessionState, sender: MailPath) -> list[RateLimit]:
        connector = session.connector
        per_minute = connector.message_rate_limit
        source = connector.message_rate_source
        if per_minute is None or source is Source.NONE or is_exempt(connector, session.connection, session.user):
            return []
        base = f"{config.throttling.key_prefix}:rate:{connector.name}"
        keys = []
        if source in (Source.IP_ADDRESS, Source.ALL):
            keys.append(("ip", source_key(connector, session.connection.remote_address)))
        if source in (Source.USER, Source.ALL):
            keys.append(("user", (session.user or sender.address or "<>").casefold()))
        if source is Source.SENDER:
            keys.append(("sender", (sender.address or "<>").casefold()))
        return [
            RateLimit(
                key=f"{base}:{kind}:{value}",
                per_minute=per_minute,
                burst=per_minute,
                decision=Decision(
                    421,
                    RATE_EXCEEDED[1],
                    RATE_EXCEEDED[2],
                    f"{kind} {value} over message_rate_limit {per_minute}/min on connector {connector.name!r}",
                    self.name,
                ),
                name="message_rate_limit",
                shadow=connector.throttling_shadow,
            )
            for kind, value in keys
        ]


class ConnectionLimits:
    name = "relayauth.connection_limits"

    @hookimpl
    def relayauth_connection_limits(
        self, connector: Connector, connection: ConnectionInfo, counts: ConnectionCounts
    ) -> Decision | None:
        if is_exempt(connector, connection, None):
            return None
        return connection_cap_decision(connector, counts, source_key(connector, connection.remote_address))
