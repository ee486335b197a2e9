"""What happens to a message after the policy accepted its content: Salmon routing, then the
durable queue, then the reply.

``250 2.6.0 <id> Queued mail for delivery`` is sent only after the outbound queue holds the message
and its whole envelope on disk (fsynced). A handler's ``SMTPError`` becomes the reply; a handler
crash becomes ``451 4.3.0`` (never a silent 250) and nothing is queued.

The handlers run on the event loop, as they do in Salmon's own receiver: a handler that waits (on the
network, say) holds up the other sessions of its process while it does. Only the wait for the disk
leaves the loop, to the queue's flushing thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from salmon.server import SMTPError

from ..model.decision import Decision
from ..queue.store import MessageQueue, QueuedEnvelope
from ..routing import RelayContext, decision_from_smtp_error, route_message
from ..session import RelaySession

__all__ = ["MessagePipeline"]

log = logging.getLogger("salmon_relayauth.pipeline")
_SOURCE = "relayauth.pipeline"


class MessagePipeline:
    """Routes accepted messages through Salmon and queues what the handlers relay."""

    def __init__(self, queue: MessageQueue, on_queued: Callable[[QueuedEnvelope, bytes], None]) -> None:
        self.queue = queue
        self.on_queued = on_queued

    async def accept(self, relay: RelaySession, content: bytes) -> Decision:
        assert relay.sender is not None
        state = relay.session
        queue_id = self.queue.new_id()
        context = RelayContext(relay.policy, state, relay.sender, tuple(relay.recipients), queue_id)
        outcome = self._route(context, content)
        if isinstance(outcome, Decision):
            return outcome
        if isinstance(outcome, QueuedEnvelope):
            try:
                await self.queue.enqueue_async(outcome, content)
            except (OSError, ValueError):
                log.exception("session %s: cannot queue message %s", state.session_id, queue_id)
                return Decision(
                    451, "4.3.0", "Temporary server error, please try again later", "queue write failed", _SOURCE
                )
            self.on_queued(outcome, content)
            relayed = outcome.recipients
        else:
            relayed = ()
        fqdn = state.connector.fqdn or relay.policy.config.server.fqdn
        if log.isEnabledFor(logging.INFO):
            log.info(
                "session %s %s: queued %s from <%s> to %s",
                state.session_id,
                state.connection.remote_address,
                queue_id,
                relay.sender.address,
                ", ".join(relayed) or "(handled by the application)",
            )
        return Decision(250, "2.6.0", f"<{queue_id}@{fqdn}> Queued mail for delivery", "", _SOURCE)

    def _route(self, context: RelayContext, content: bytes) -> QueuedEnvelope | None | Decision:
        """The handlers' verdict: the envelope to queue for the smarthost (None when the handlers
        relayed nothing), or the refusal to send instead of 250."""
        state = context.session
        try:
            relayed = route_message(context, content)
        except SMTPError as error:
            return decision_from_smtp_error(error, _SOURCE)
        except Exception:
            log.exception("session %s: a handler failed on message %s", state.session_id, context.queue_id)
            return Decision(451, "4.3.0", "Temporary server error, please try again later", "handler crashed", _SOURCE)
        if not relayed:
            return None
        envelope = QueuedEnvelope(
            queue_id=context.queue_id,
            sender=context.sender.address,
            recipients=relayed,
            client_address=state.connection.remote_address,
            client_port=state.connection.remote_port,
            connector=state.connector.name,
            session_id=state.session_id,
            principals=tuple(sorted(state.principals)),
            rights=tuple(sorted(right.value for right in state.rights.granted)),
            received_at=time.time(),
        )
        return envelope
