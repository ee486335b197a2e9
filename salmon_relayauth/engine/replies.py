"""The reply catalogue: Exchange's reply texts (reference §9; the source document wins on wording).

Each function returns a :class:`Decision`; ``reason`` is for the operator's log and ``source``
names the plugin deciding.
"""

from __future__ import annotations

from ..model.decision import Decision

__all__ = ["reply"]

# name -> (code, enhanced status, text)
REPLIES: dict[str, tuple[int, str, str]] = {
    "service_unavailable": (421, "4.3.2", "Service not available, closing transmission channel"),
    "hello": (250, "", "Hello"),
    "ehlo_requires_domain": (501, "5.0.0", "EHLO requires domain address"),
    "helo_requires_domain": (501, "5.0.0", "HELO requires domain address"),
    "send_hello_first": (503, "5.5.2", "Send hello first"),
    "need_mail": (503, "5.5.2", "Need mail command"),
    "need_rcpt": (503, "5.5.2", "Need rcpt command"),
    "sender_already_specified": (503, "5.5.2", "Sender already specified"),
    "sender_ok": (250, "2.1.0", "Sender OK"),
    # A syntax error (501, as RFC 5321 and Exchange's reply table have it), so it counts against
    # max_protocol_errors; the telnet walk-through's 550 spelling is a policy refusal.
    "invalid_sender": (501, "5.1.7", "Invalid address"),
    "invalid_helo": (501, "5.5.4", "Invalid domain name"),
    "not_authenticated": (530, "5.7.1", "Client was not authenticated"),
    "cannot_submit": (550, "5.7.1", "Client does not have permissions to submit to this server"),
    "anonymous_cannot_send_as": (550, "5.7.1", "Anonymous client does not have permissions to send as this sender"),
    "cannot_send_as": (550, "5.7.1", "Client does not have permissions to send as this sender"),
    "starttls_first": (530, "5.7.0", "Must issue a STARTTLS command first"),
    "message_too_big": (552, "5.3.4", "Message size exceeds fixed maximum message size"),
    "headers_too_big": (552, "5.3.4", "Header size exceeds fixed maximum size"),
    "recipient_ok": (250, "2.1.5", "Recipient OK"),
    "invalid_recipient": (501, "5.1.3", "Invalid address"),
    "unable_to_relay": (550, "5.7.1", "Unable to relay"),
    "too_many_recipients": (452, "4.5.3", "Too many recipients"),
    "reserved_tld": (550, "5.1.4", "Recipient address reserved by RFC 2606"),
    "reserved_sld": (550, "5.1.5", "Recipient address reserved by RFC 2606"),
    "single_label": (550, "5.1.6", "Recipient addresses in single label domains not accepted"),
    "start_mail_input": (354, "", "Start mail input; end with <CRLF>.<CRLF>"),
    "no_valid_recipients": (554, "5.5.1", "No valid recipients"),
    "hop_count_exceeded": (554, "5.4.6", "Hop count exceeded - possible mail loop"),
    "message_ok": (250, "2.6.0", "Message accepted"),
    "auth_ok": (235, "2.7.0", "Authentication successful"),
    "auth_failed": (535, "5.7.3", "Authentication unsuccessful"),
    "auth_unrecognized": (504, "5.7.4", "Unrecognized authentication type"),
    "auth_already": (503, "5.5.2", "Auth command already specified"),
    "quit": (221, "2.0.0", "Service closing transmission channel"),
}


def reply(name: str, reason: str = "", source: str = "") -> Decision:
    """The catalogue reply ``name`` as a decision."""
    code, status, text = REPLIES[name]
    return Decision(code, status, text, reason, source)
