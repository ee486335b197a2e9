"""Salmon integration: the relay context on each message, routing through Salmon's Router, and
the guard that re-checks the relay right inside a handler.

Every accepted message goes through ``salmon.routing.Router.deliver`` once per recipient (Salmon
routes on a single ``To``), each :class:`~salmon.mail.MailRequest` carrying ``message.relay``, a
:class:`RelayContext`. A handler asks for smarthost delivery with ``message.relay.relay(...)``;
after routing the listener queues ONE outbound message with every recipient handlers relayed.
"""

from __future__ import annotations

import copy
import functools
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any, TypeVar

from salmon.encoding import from_string
from salmon.mail import MailRequest
from salmon.routing import Router
from salmon.server import SMTPError

from .engine.smtp_address import AddressSyntaxError, MailPath, parse_path
from .model.decision import Decision
from .model.session import SessionState
from .policy import RelayPolicy

__all__ = ["LazyMailRequest", "RelayContext", "decision_from_smtp_error", "relay_guard", "route_message"]

F = TypeVar("F", bound=Callable[..., Any])
_STATUS = re.compile(r"^([245]\.\d{1,3}\.\d{1,3}) (.*)$", re.DOTALL)


@dataclass
class RelayContext:
    """What the relay knows about a message, for the application's handlers (``message.relay``).

    :param policy: the policy the message was accepted under.
    :param session: the SMTP session: connector, principals, effective rights, client address.
    :param sender: the envelope sender.
    :param recipients: every accepted envelope recipient (Bcc included).
    :param queue_id: the id the message will have in the outbound queue.
    """

    policy: RelayPolicy
    session: SessionState
    sender: MailPath
    recipients: tuple[MailPath, ...]
    queue_id: str
    _relayed: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def connector(self) -> str:
        return self.session.connector.name

    @property
    def client_address(self) -> str:
        return self.session.connection.remote_address

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def relayed(self) -> tuple[str, ...]:
        return tuple(self._relayed)

    def may_relay_to(self, recipient: str) -> bool:
        """Ask the policy again whether this session may send to ``recipient``."""
        try:
            path = parse_path(recipient if recipient.startswith("<") else f"<{recipient}>", allow_null=False)
        except AddressSyntaxError:
            return False
        if path.address.lower() not in {r.address.lower() for r in self.recipients}:
            return False  # only envelope recipients the session itself was allowed
        return self.policy.judge_rcpt(self.session, self.sender, path, 0).accepted

    def relay(self, recipient: str) -> None:
        """Deliver the message to ``recipient`` through the smarthost (checked by :func:`relay_guard`)."""
        with self._lock:
            if recipient not in self._relayed:
                self._relayed.append(recipient)


def relay_guard(handler: F) -> F:
    """Decorate a Salmon handler so it only runs for messages the relay policy allows.

    A message without a relay context (it came in through another receiver), or whose recipient the
    session may not send to, is refused with ``550 5.7.1 Unable to relay`` before the handler runs.
    """

    @functools.wraps(handler)
    def guarded(message: Any, *args: Any, **kwargs: Any) -> Any:
        context = getattr(message, "relay", None)
        if not isinstance(context, RelayContext) or not context.may_relay_to(str(message.To)):
            raise SMTPError(550, "5.7.1 Unable to relay")
        return handler(message, *args, **kwargs)

    return guarded  # type: ignore[return-value]


class LazyMailRequest(MailRequest):  # type: ignore[misc]  # Salmon is untyped
    """Salmon's ``MailRequest`` for a message with a sender and a recipient, parsing the content only
    when a handler looks at it (``message.base``, headers, body). Salmon's own constructor parses
    every message (about 120 µs for 2 KB) though the relay handler reads only the envelope; the
    values a handler sees are the same."""

    def __init__(self, peer: Any, sender: str, recipient: str, data: bytes) -> None:
        self.Peer = peer
        self.Data = data
        self.From = _routable(sender)
        self.To = _routable(recipient)
        self.bounce = None
        self._parsed: Any = None

    @property
    def base(self) -> Any:
        if self._parsed is None:
            parsed = from_string(self.Data)
            if "from" not in parsed:
                parsed["from"] = self.From
            if "to" not in parsed:
                parsed["to"] = self.To
            self._parsed = parsed
        return self._parsed

    @base.setter
    def base(self, value: Any) -> None:
        self._parsed = value


def _routable(address: str) -> str:
    """An address as Salmon's MailRequest keeps it: parsed and lower-cased."""
    return parseaddr(address.lower())[1]


def route_message(context: RelayContext, content: bytes) -> tuple[str, ...]:
    """Run the application's handlers for every recipient; return the recipients to relay.

    Raises ``SMTPError`` from a handler unchanged; any other exception from a handler propagates
    too (the receiver turns Salmon's ``Router.LOG_EXCEPTIONS`` off so crashes are not swallowed).
    """
    peer = (context.session.connection.remote_address, context.session.connection.remote_port)
    first = context.recipients[0].address
    sender = context.sender.address
    message = LazyMailRequest(peer, sender, first, content) if sender else MailRequest(peer, sender, first, content)
    for recipient in context.recipients:
        request = message if recipient.address == first else copy.copy(message)
        request.To = recipient.address
        request.relay = context
        Router.deliver(request)
    return context.relayed


def decision_from_smtp_error(error: SMTPError, source: str) -> Decision:
    """A handler's ``SMTPError`` as the client's reply (Salmon's contract), on one line."""
    text = " ".join(str(error.message).split()) or "Requested action not taken"
    match = _STATUS.match(text)
    status, text = (match.group(1), match.group(2)) if match else ("", text)
    code = error.code if isinstance(error.code, int) and 400 <= error.code <= 599 else 451
    if status and status[0] != str(code)[0]:
        status = ""
    return Decision(code, status, text, f"handler raised SMTPError {error.code}", source)
