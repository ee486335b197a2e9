"""Delivery status notifications (RFC 3464) for messages the smarthost refused or that expired.

The notification is a ``multipart/report; report-type=delivery-status`` (RFC 6522) of three parts: a
human-readable explanation, the ``message/delivery-status`` fields and the original message's headers
(``text/rfc822-headers``). It comes from ``MAILER-DAEMON@<fqdn>`` and travels with the null sender, so
it can never cause another notification.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate, make_msgid

from .store import QueuedEnvelope

__all__ = ["EXPIRED_STATUS", "FailedRecipient", "build_dsn", "notification_envelope", "status_from_reply"]

EXPIRED_STATUS = "4.4.7"
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_SUBJECT = re.compile(rb"^Subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_MAX_RETURNED = 256 << 10


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient the message could not reach.

    :param address: the envelope recipient.
    :param status: the RFC 3463 status (``5.1.1``, ``4.4.7`` for expiry).
    :param smtp_reply: the smarthost's reply (``550 5.1.1 ...``) when there was one.
    :param detail: what went wrong when the smarthost gave no reply (connection refused, ...).
    """

    address: str
    status: str
    smtp_reply: str = ""
    detail: str = ""


def status_from_reply(code: int, text: str) -> str:
    """The enhanced status a reply carries, else the generic one for its class (``5.0.0``, ``4.0.0``)."""
    found = _ENHANCED.match(text.strip())
    if found and found.group(1) == str(code)[:1]:
        return found.group(0)
    return f"{str(code)[:1]}.0.0" if 400 <= code < 600 else "4.0.0"


def notification_envelope(original: QueuedEnvelope, queue_id: str, now: float) -> QueuedEnvelope:
    """The envelope of a notification about ``original``: to its sender, from the null sender."""
    return QueuedEnvelope(
        queue_id=queue_id,
        sender="",
        recipients=(original.sender,),
        client_address="",
        client_port=0,
        connector=original.connector,
        session_id=original.session_id,
        principals=(),
        rights=(),
        received_at=now,
        is_notification=True,
    )


def build_dsn(
    original: QueuedEnvelope,
    content: bytes,
    failures: Sequence[FailedRecipient],
    *,
    fqdn: str,
    now: float,
    remote_mta: str = "",
) -> bytes:
    """The whole notification message (CRLF line endings) about ``failures`` of ``original``."""
    boundary = f"=_report_{secrets.token_hex(12)}"
    subject = _original_subject(content)
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{fqdn}>",
        f"To: <{original.sender}>",
        f"Subject: Undeliverable: {subject}" if subject else "Subject: Undeliverable message",
        f"Date: {formatdate(now, localtime=True)}",
        f"Message-ID: {make_msgid('dsn', domain=fqdn)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    human = _human_part(original, failures, fqdn)
    status = _status_part(original, failures, fqdn, now, remote_mta)
    parts = [
        "\r\n".join(headers).encode("utf-8") + b"\r\n\r\nThis is a MIME-encapsulated delivery status notification.\r\n",
        _part("text/plain; charset=utf-8", human.encode("utf-8"), _transfer_encoding(human)),
        _part("message/delivery-status", status.encode("utf-8"), _transfer_encoding(status)),
        _part("text/rfc822-headers", _original_headers(content), ""),
    ]
    delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
    return delimiter.join(parts) + f"\r\n--{boundary}--\r\n".encode("ascii")


def _part(content_type: str, body: bytes, transfer_encoding: str) -> bytes:
    head = f"Content-Type: {content_type}\r\n"
    if transfer_encoding:
        head += f"Content-Transfer-Encoding: {transfer_encoding}\r\n"
    return head.encode("ascii") + b"\r\n" + body


def _transfer_encoding(text: str) -> str:
    return "7bit" if text.isascii() else "8bit"


def _human_part(original: QueuedEnvelope, failures: Sequence[FailedRecipient], fqdn: str) -> str:
    lines = [
        f"This is the mail system at {fqdn}.",
        "",
        "Your message could not be delivered to the following recipient(s):",
        "",
    ]
    for failure in failures:
        lines.append(f"  <{failure.address}>")
        if failure.status == EXPIRED_STATUS:
            lines.append("    the message could not be delivered before it expired")
        reason = failure.smtp_reply or failure.detail
        if reason:
            origin = "the next server replied" if failure.smtp_reply else "last error"
            lines.append(f"    {origin}: {reason}")
        lines.append("")
    lines.append(f"The message was received on {formatdate(original.received_at, localtime=True)}; its headers follow.")
    return "\r\n".join(lines) + "\r\n"


def _status_part(
    original: QueuedEnvelope, failures: Sequence[FailedRecipient], fqdn: str, now: float, remote_mta: str
) -> str:
    blocks = [f"Reporting-MTA: dns; {fqdn}\r\nArrival-Date: {formatdate(original.received_at, localtime=True)}\r\n"]
    for failure in failures:
        address_type = "rfc822" if failure.address.isascii() else "utf-8"
        fields = [
            f"Final-Recipient: {address_type}; {failure.address}",
            "Action: failed",
            f"Status: {failure.status}",
        ]
        if failure.smtp_reply:
            if remote_mta:
                fields.append(f"Remote-MTA: dns; {remote_mta}")
            fields.append(f"Diagnostic-Code: smtp; {failure.smtp_reply}")
        fields.append(f"Last-Attempt-Date: {formatdate(now, localtime=True)}")
        blocks.append("\r\n".join(fields) + "\r\n")
    return "\r\n".join(blocks)


def _original_headers(content: bytes) -> bytes:
    """The header section (up to the first empty line), at most ``_MAX_RETURNED`` bytes of whole lines."""
    end = content.find(b"\r\n\r\n")
    end = end + 2 if end >= 0 else content.find(b"\n\n") + 1
    headers = content[:end] if end > 0 else content
    if len(headers) > _MAX_RETURNED:
        headers = headers[: headers.rfind(b"\n", 0, _MAX_RETURNED) + 1]
    return _BARE_LF.sub(b"\r\n", headers)


def _original_subject(content: bytes) -> str:
    found = _SUBJECT.search(_original_headers(content))
    if not found:
        return ""
    subject = re.sub(rb"\s+", b" ", found.group(1)).strip()
    return subject[:200].decode("ascii") if subject.isascii() else ""
