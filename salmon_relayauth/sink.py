"""A local smarthost that stores what it receives in a Maildir: for the sample app and for trials.

Each message is stored as received, behind ``Return-Path`` and ``X-Envelope-To`` header fields that
record the envelope (so Bcc recipients are visible too).
"""

from __future__ import annotations

import logging
import mailbox
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

__all__ = ["MaildirSink"]

log = logging.getLogger("salmon_relayauth.sink")


class MaildirSink:
    """An SMTP server on ``host:port`` delivering every message into the Maildir ``directory``."""

    def __init__(self, directory: str | Path, host: str = "127.0.0.1", port: int = 2526) -> None:
        self.directory = Path(directory)
        self.maildir = mailbox.Maildir(self.directory, create=True)
        self._controller = Controller(self, hostname=host, port=port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        recipients = ", ".join(envelope.rcpt_tos)
        head = f"Return-Path: <{envelope.mail_from}>\r\nX-Envelope-To: {recipients}\r\n".encode()
        key = self.maildir.add(mailbox.MaildirMessage(head + envelope.original_content))
        log.info("stored %s from <%s> to %s", key, envelope.mail_from, recipients)
        return "250 2.0.0 OK stored"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    def messages(self) -> list[mailbox.MaildirMessage]:
        return [self.maildir.get_message(key) for key in sorted(self.maildir.keys())]
