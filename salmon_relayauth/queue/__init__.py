"""The durable outbound queue and its delivery to the smarthost.

:class:`MessageQueue` stores each accepted message with its whole envelope before the listener answers
``250``; :class:`DeliveryWorker` delivers due messages to the smarthost on a thread of its own, retries
temporary failures with growing delays and returns permanent failures and expired messages to their
sender as delivery status notifications (:mod:`.dsn`).
"""

from .delivery import DeliveryStats, DeliveryWorker, retry_delay
from .dsn import FailedRecipient, build_dsn
from .store import MessageQueue, QueuedEnvelope, valid_queue_id

__all__ = [
    "DeliveryStats",
    "DeliveryWorker",
    "FailedRecipient",
    "MessageQueue",
    "QueuedEnvelope",
    "build_dsn",
    "retry_delay",
    "valid_queue_id",
]
