"""Default plugins judging MAIL FROM and RCPT TO (reference §3.2, §3.3, §7.3)."""

from __future__ import annotations

from ..engine.domains import AcceptedDomains
from ..engine.judge import judge_recipient, judge_recipient_count, judge_sender
from ..engine.smtp_address import MailPath
from ..hookspecs import hookimpl
from ..model.decision import Decision
from ..model.session import SessionState

__all__ = ["RecipientLimit", "RelayCheck", "SenderCheck"]


class SenderCheck:
    name = "relayauth.sender"

    @hookimpl
    def relayauth_check_mail(
        self, session: SessionState, domains: AcceptedDomains, sender: MailPath, declared_size: int | None
    ) -> Decision:
        return judge_sender(session, sender, declared_size, domains, self.name)


class RelayCheck:
    """A recipient outside the accepted domains needs ms-Exch-SMTP-Accept-Any-Recipient."""

    name = "relayauth.relay"

    @hookimpl
    def relayauth_check_rcpt(self, session: SessionState, domains: AcceptedDomains, recipient: MailPath) -> Decision:
        return judge_recipient(session, recipient, domains, self.name)


class RecipientLimit:
    name = "relayauth.recipient_limit"

    @hookimpl
    def relayauth_check_rcpt(self, session: SessionState, accepted_count: int) -> Decision | None:
        return judge_recipient_count(session, accepted_count, self.name)
