"""Test-only Salmon handler recording what ``message.relay`` tells a handler (test_salmon_routing).

Every call appends a snapshot to :data:`SEEN`; the module is re-imported by ``use_handlers`` each
time a relay starts, so :data:`SEEN` starts empty for every test.
"""

from __future__ import annotations

import threading
from typing import Any

from salmon.routing import nolocking, route, stateless

SEEN: list[dict[str, Any]] = []
_LOCK = threading.Lock()


@route("(address)@(host)", address=".+", host=".+")
@stateless
@nolocking
def INSPECT(message: Any, address: str | None = None, host: str | None = None) -> None:
    context = getattr(message, "relay", None)
    snapshot = {"to": str(message.To), "from": str(message.From), "context": context}
    if context is not None:
        snapshot.update(
            connector=context.connector,
            client_address=context.client_address,
            session_id=context.session_id,
            rights=frozenset(right.value for right in context.session.rights.granted),
            principals=frozenset(context.session.principals),
            sender=context.sender.address,
            recipients=tuple(path.address for path in context.recipients),
            queue_id=context.queue_id,
        )
    with _LOCK:
        SEEN.append(snapshot)
