"""What happens to a message after the policy accepted its content: Salmon routing, then the
durable queue, then the reply.

``250 2.6.0 <id> Queued mail for delivery`` is sent only after the outbound queue holds the message
and its whole envelope on disk (fsynced). A handler's ``SMTPError`` becomes the reply; a handler
crash becomes ``451 4.3.0`` (never a silent 250) and nothing is queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from salmon.server import SMTPError

from ..model.decision import Decision
from ..queue.store import MessageQueue, QueuedEnvelope
from ..routing import RelayContext, decision_from_smtp_error, route_message
from ..session import RelaySession

__all__ = ["MessagePipeline"]

log = logging.getLogger("salmon_relayauth.pipeline")
_SOURCE = "relayauth.pipeline"


class MessagePipeline:
    """Routes accepted messages through Salmon and queues what the handlers relay.

    Routing and queueing run together on one worker thread (one hand-off per message); the group
    commit of the queue gathers the fsyncs of the sessions that arrive meanwhile, so ``executor``
    should have a thread for every session expected to finish a message at the same time.
    """

    def __init__(self, queue: MessageQueue, executor: Executor, on_queued: Callable[[QueuedEnvelope, bytes], None]) -> None:
        self.queue = queue
        self.executor = executor
        self.on_queued = on_queued

    async def accept(self, relay: RelaySession, content: bytes) -> Decision:
        assert relay.sender is not None
        state = relay.session
        queue_id = self.queue.new_id()
        context = RelayContext(relay.policy, state, relay.sender, tuple(relay.recipients), queue_id)
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(self.executor, self._route_and_queue, context, content)
        if isinstance(outcome, Decision):
            return outcome
        if isinstance(outcome, QueuedEnvelope):
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

    def _route_and_queue(self, context: RelayContext, content: bytes) -> QueuedEnvelope | None | Decision:
        """On a worker thread: the handlers' verdict, then the queue write; the envelope queued for
        the smarthost (None when the handlers relayed nothing), or the refusal to send instead of 250."""
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
        try:
            self.queue.enqueue(envelope, content)
        except (OSError, ValueError):
            log.exception("session %s: cannot queue message %s", state.session_id, context.queue_id)
            return Decision(451, "4.3.0", "Temporary server error, please try again later", "queue write failed", _SOURCE)
        return envelope
