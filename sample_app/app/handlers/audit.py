"""An application handler: logs every accepted message with the relay's view of it.

``message.relay`` is the :class:`salmon_relayauth.RelayContext`: connector, client address,
session id, the session's principals and effective rights.
"""

import logging

from salmon.routing import nolocking, route, stateless

log = logging.getLogger("app.audit")


@route("(address)@(host)", address=".+", host=".+")
@stateless
@nolocking
def AUDIT(message, address=None, host=None):
    relay = message.relay
    log.info(
        "message %s for %s from %s via connector %r (session %s)",
        relay.queue_id,
        message.To,
        relay.client_address,
        relay.connector,
        relay.session_id,
    )
