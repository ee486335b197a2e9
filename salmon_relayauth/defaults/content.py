"""Default plugins at the end of DATA: size, header size, hop count, and the header firewall."""

from __future__ import annotations

from ..engine.headers import MessageFacts
from ..engine.judge import firewalled_headers, judge_content
from ..hookspecs import hookimpl
from ..model.decision import Decision
from ..model.session import SessionState

__all__ = ["ContentLimits", "HeaderFirewall"]


class ContentLimits:
    name = "relayauth.content"

    @hookimpl
    def relayauth_check_message(self, session: SessionState, facts: MessageFacts) -> Decision | None:
        return judge_content(session, facts.size, facts.header_size, facts.hop_count, self.name)


class HeaderFirewall:
    name = "relayauth.header_firewall"

    @hookimpl
    def relayauth_header_firewall(self, session: SessionState, header_names: tuple[str, ...]) -> list[str]:
        return sorted(firewalled_headers(session.rights, header_names))
