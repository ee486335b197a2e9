"""The relay handler: forward what the policy allowed to the smarthost.

The safe counterpart of ``salmon.handlers.forward``: it only relays messages that came through the
relay listener and whose recipient the session was allowed to send to. List it in
``settings.handlers`` (``"salmon_relayauth.handlers.relay"``).
"""

from __future__ import annotations

from typing import Any

from salmon.routing import nolocking, route, stateless

from ..routing import relay_guard

__all__ = ["RELAY"]


@route("(address)@(host)", address=".+", host=".+")
@stateless
@nolocking
@relay_guard
def RELAY(message: Any, address: str | None = None, host: str | None = None) -> None:
    message.relay.relay(message.To)
