"""Per-command judgement as pure functions: rights and settings in, a :class:`Decision` out.

MAIL FROM follows reference §3.2, RCPT TO §3.3 and §7.5, end of data §3.1 and §7.3. The default
plugins wrap these; ``explain`` and the listener reach them through the same hooks.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model.decision import Decision
from ..model.enums import Right
from ..model.rights import EffectiveRights
from ..model.session import SessionState
from .domains import AcceptedDomains
from .replies import reply
from .smtp_address import MailPath

__all__ = [
    "ROUTING_HEADERS",
    "firewalled_headers",
    "judge_content",
    "judge_recipient",
    "judge_recipient_count",
    "judge_sender",
    "message_size_limit",
]

_RESERVED_TLDS = ("test", "example", "invalid", "localhost")
_RESERVED_SLDS = ("example.com", "example.net", "example.org")
ROUTING_HEADERS = frozenset(
    {"received", "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-bcc", "resent-message-id"}
)
_ORGANIZATION_PREFIX = "x-ms-exchange-organization-"
_FOREST_PREFIX = "x-ms-exchange-forest-"


def message_size_limit(session: SessionState) -> int | None:
    """The connector's max_message_size, or None for a session holding the size-limit bypass right."""
    if Right.BYPASS_MESSAGE_SIZE_LIMIT in session.rights:
        return None
    return session.connector.max_message_size


def judge_sender(
    session: SessionState, sender: MailPath, declared_size: int | None, domains: AcceptedDomains, source: str
) -> Decision:
    """MAIL FROM: submit right, TLS requirement, sender authority, declared size."""
    rights, connector = session.rights, session.connector
    who = f"{', '.join(sorted(session.principals))} on connector {connector.name!r}"
    if Right.SMTP_SUBMIT not in rights:
        name = "cannot_submit" if session.authenticated else "not_authenticated"
        return reply(name, f"{who} lacks {Right.SMTP_SUBMIT.value}", source)
    if connector.require_tls and not session.tls:
        return reply("starttls_first", f"connector {connector.name!r} requires TLS", source)
    if not sender.is_null and not _may_send_as(session, sender, domains):
        authoritative = domains.is_authoritative(sender.domain)
        needed = Right.SMTP_ACCEPT_AUTHORITATIVE_DOMAIN_SENDER if authoritative else Right.SMTP_ACCEPT_ANY_SENDER
        name = "anonymous_cannot_send_as" if authoritative and not session.authenticated else "cannot_send_as"
        return reply(name, f"{who} lacks {needed.value} for sender {sender.address}", source)
    limit = message_size_limit(session)
    if declared_size is not None and limit is not None and declared_size > limit:
        return reply("message_too_big", f"declared SIZE={declared_size} exceeds max_message_size {limit}", source)
    return reply("sender_ok", f"{who} may send as {sender.address or '<>'}", source)


def _may_send_as(session: SessionState, sender: MailPath, domains: AcceptedDomains) -> bool:
    own_address = session.user is not None and session.user.casefold() == sender.address.casefold()
    if own_address:
        return True
    if domains.is_authoritative(sender.domain) and not sender.is_ip_literal:
        return Right.SMTP_ACCEPT_AUTHORITATIVE_DOMAIN_SENDER in session.rights
    return Right.SMTP_ACCEPT_ANY_SENDER in session.rights


def judge_recipient(session: SessionState, recipient: MailPath, domains: AcceptedDomains, source: str) -> Decision:
    """RCPT TO: reserved-domain rejections, then the relay check.

    A recipient is local only when every domain it could be routed to (its domain and any hidden
    by a percent-hack or bang path) is an accepted domain; an IP literal is never local.
    """
    connector = session.connector
    domain = recipient.domain
    if not recipient.is_ip_literal:
        labels = domain.split(".")
        if connector.reject_reserved_top_level_recipient_domains and labels[-1] in _RESERVED_TLDS:
            return reply("reserved_tld", f"{domain} is under a reserved top-level domain", source)
        if connector.reject_reserved_second_level_recipient_domains and any(
            domain == sld or domain.endswith("." + sld) for sld in _RESERVED_SLDS
        ):
            return reply("reserved_sld", f"{domain} is a reserved second-level domain", source)
        if connector.reject_single_label_recipient_domains and len(labels) == 1:
            return reply("single_label", f"{domain} is a single-label domain", source)
    if recipient.is_null or recipient.is_ip_literal or not recipient.routing_domains:
        outside = [domain or "<>"]  # an IP literal or an empty path is never local
    else:
        outside = [d for d in recipient.routing_domains if not domains.is_accepted(d)]
    if not outside:
        return reply("recipient_ok", f"{recipient.address} is in an accepted domain", source)
    if Right.SMTP_ACCEPT_ANY_RECIPIENT in session.rights:
        return reply("recipient_ok", f"relay to {', '.join(outside)} allowed by {Right.SMTP_ACCEPT_ANY_RECIPIENT.value}", source)
    return reply(
        "unable_to_relay",
        f"{', '.join(outside)} is not an accepted domain and {', '.join(sorted(session.principals))} "
        f"lacks {Right.SMTP_ACCEPT_ANY_RECIPIENT.value} on connector {connector.name!r}",
        source,
    )


def judge_recipient_count(session: SessionState, accepted_so_far: int, source: str) -> Decision | None:
    """``452 4.5.3`` once the message already has max_recipients_per_message recipients; the
    recipients accepted so far stay (reference §7.3, MSL)."""
    limit = session.connector.max_recipients_per_message
    if accepted_so_far >= limit:
        return reply("too_many_recipients", f"max_recipients_per_message is {limit}", source)
    return None


def judge_content(
    session: SessionState, message_size: int, header_size: int, hop_count: int, source: str
) -> Decision | None:
    """End of data: message size, header size, hop count. None when the content is acceptable."""
    connector = session.connector
    limit = message_size_limit(session)
    if limit is not None and message_size > limit:
        return reply("message_too_big", f"{message_size} bytes exceeds max_message_size {limit}", source)
    if header_size > connector.max_header_size:
        return reply("headers_too_big", f"{header_size} header bytes exceeds max_header_size {connector.max_header_size}", source)
    if hop_count > connector.max_hop_count:
        return reply("hop_count_exceeded", f"{hop_count} Received headers exceeds max_hop_count {connector.max_hop_count}", source)
    return None


def firewalled_headers(rights: EffectiveRights, header_names: Iterable[str]) -> set[str]:
    """The header field names (lower-case) the header firewall removes (reference §3.1)."""
    removed = set()
    for name in header_names:
        lower = name.lower()
        if lower in ROUTING_HEADERS and Right.ACCEPT_HEADERS_ROUTING not in rights:
            removed.add(lower)
        elif lower.startswith(_ORGANIZATION_PREFIX) and Right.ACCEPT_HEADERS_ORGANIZATION not in rights:
            removed.add(lower)
        elif lower.startswith(_FOREST_PREFIX) and Right.ACCEPT_HEADERS_FOREST not in rights:
            removed.add(lower)
    return removed
