"""An envelope for queue tests (imported like ``redis_server``: tests/ is on the import path)."""

from __future__ import annotations

import time
from dataclasses import replace

from salmon_relayauth.queue import MessageQueue, QueuedEnvelope


def queued_envelope(queue: MessageQueue, **changes: object) -> QueuedEnvelope:
    """An envelope with a fresh id of ``queue`` and one recipient, with ``changes`` applied."""
    base = QueuedEnvelope(
        queue_id=queue.new_id(),
        sender="app@contoso.com",
        recipients=("ops@contoso.com",),
        client_address="192.168.5.10",
        client_port=40123,
        connector="Anonymous Relay",
        session_id="0a1b2c",
        principals=("NT AUTHORITY\\ANONYMOUS LOGON",),
        rights=("ms-Exch-SMTP-Submit",),
        received_at=time.time(),
    )
    return replace(base, **changes)
