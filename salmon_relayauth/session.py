"""One SMTP session under a policy, without any I/O: commands in, decisions out.

The live listener drives a :class:`RelaySession` from the wire; ``explain`` drives the same class
from the command line. Protocol order (HELO before MAIL, MAIL before RCPT, ...) is enforced here
too, so a simulated conversation gets the replies a real one would.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from email.utils import formatdate

from .engine.headers import message_facts, remove_header_fields
from .engine.replies import reply
from .engine.smtp_address import AddressSyntaxError, MailPath, parse_path
from .model.connection import ConnectionInfo, ConnectorSelection
from .model.decision import Decision
from .model.enums import AuthMechanism
from .model.session import SessionState
from .policy import RelayPolicy

__all__ = ["MessageVerdict", "RelaySession", "new_session_id"]

_SESSION = "relayauth.session"


_date_cache: tuple[int, str] = (0, "")


def _banner_date() -> str:
    """The banner's date, formatted once a second (formatting it costs more than the rest of a greeting)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, localtime=True))
    return _date_cache[1]


def new_session_id() -> str:
    """16 hex digits, the form Exchange's protocol log uses. (An id, not a secret: drawn from
    ``random``, which forked workers reseed, rather than from the kernel: ``os.urandom`` lets go of
    the interpreter lock, and on a busy event loop every let-go is a hand-off to another thread.)"""
    return f"{random.getrandbits(64):016X}"


@dataclass(frozen=True, slots=True)
class MessageVerdict:
    """The end-of-data outcome: the reply, and the message as it must be queued (firewall applied)."""

    decision: Decision
    content: bytes
    removed_headers: frozenset[str] = field(default_factory=frozenset)


class RelaySession:
    """The policy's view of one connection, from accept to QUIT."""

    def __init__(self, policy: RelayPolicy, connection: ConnectionInfo, session_id: str | None = None) -> None:
        self.policy = policy
        self.connection = connection
        self.session_id = session_id or new_session_id()
        self.selection: ConnectorSelection | None = None
        self.state: SessionState | None = None
        self.greeted = False
        self.sender: MailPath | None = None
        self.recipients: list[MailPath] = []

    # -- connection -----------------------------------------------------------------------------

    def open(self) -> Decision:
        """Select the connector: the banner, or ``421 4.3.2`` when no connector takes the client."""
        self.selection = self.policy.select_connector(self.connection)
        if self.selection is None:
            return self.policy.no_connector(self.connection)
        self.state = self.policy.session_state(self.session_id, self.connection, self.selection.connector)
        return self.banner()

    @property
    def session(self) -> SessionState:
        if self.state is None:
            raise RuntimeError("the session has no connector: open() was not called or refused it")
        return self.state

    @property
    def fqdn(self) -> str:
        return self.session.connector.fqdn or self.policy.config.server.fqdn

    def banner(self) -> Decision:
        connector = self.session.connector
        reason = f"connector {connector.name!r} selected by range {self.selection.matched_range if self.selection else ''}"
        if connector.banner is not None:
            return Decision(220, "", connector.banner[4:], reason, _SESSION)
        text = f"{self.fqdn} ESMTP MAIL Service ready at {_banner_date()}"
        return Decision(220, "", text, reason, _SESSION)

    def helo(self, hostname: str, extended: bool = True) -> Decision:
        """EHLO/HELO: the first line of the reply (the listener adds the ESMTP keywords)."""
        connector = self.session.connector
        if not (hostname.isascii() and hostname.isprintable()):
            return reply("invalid_helo", f"control or non-ASCII characters in {hostname!r}", _SESSION)
        if connector.require_ehlo_domain and not hostname.strip():
            return reply("ehlo_requires_domain" if extended else "helo_requires_domain", "require_ehlo_domain", _SESSION)
        self.greeted = True
        self.reset()
        return Decision(250, "", f"{self.fqdn} Hello [{self.connection.remote_address}]", "", _SESSION)

    def tls_started(self) -> None:
        """STARTTLS completed: the session starts over (RFC 3207) and its rights are recomputed."""
        self.greeted = False
        self.reset()
        # RFC 3207 §4.2: everything learnt before TLS, an AUTH identity included, is forgotten.
        self.state = self.policy.session_state(self.session_id, self.connection, self.session.connector, None, tls=True)

    # -- authentication -------------------------------------------------------------------------

    def offers_auth(self) -> bool:
        """Whether AUTH is advertised now (BasicAuthRequireTLS: only after STARTTLS)."""
        connector, state = self.session.connector, self.session
        if AuthMechanism.BASIC_AUTH not in connector.auth_mechanism:
            return False
        return state.tls or AuthMechanism.BASIC_AUTH_REQUIRE_TLS not in connector.auth_mechanism

    def authenticate(self, username: str, password: str) -> Decision:
        """AUTH with decoded credentials; rights are recomputed for the user on success."""
        if not self.greeted:
            return reply("send_hello_first", "", _SESSION)
        if not self.offers_auth():
            return reply("auth_unrecognized", "the connector does not offer AUTH now", _SESSION)
        if self.session.authenticated:
            return reply("auth_already", "", _SESSION)
        if self.sender is not None:  # RFC 4954 §4: never mix rights within one transaction
            return Decision(503, "5.5.1", "Bad sequence of commands", "AUTH during a mail transaction", _SESSION)
        if not self.policy.authenticate(self.session.connector, username, password):
            return reply("auth_failed", f"credentials for {username!r} refused", _SESSION)
        self.assume_user(username)
        return reply("auth_ok", f"authenticated as {username!r}", _SESSION)

    def assume_user(self, username: str) -> None:
        """Run as an authenticated user (after AUTH succeeded, or in ``explain --auth``)."""
        self.state = self.policy.session_state(
            self.session_id, self.connection, self.session.connector, username, self.session.tls
        )

    # -- transaction ----------------------------------------------------------------------------

    def reset(self) -> None:
        self.sender = None
        self.recipients = []

    def mail(self, argument: str, declared_size: int | None = None) -> Decision:
        """MAIL FROM: with the text after the colon (ESMTP parameters already split off)."""
        if not self.greeted:
            return reply("send_hello_first", "", _SESSION)
        if self.sender is not None:
            return reply("sender_already_specified", "", _SESSION)
        try:
            sender = parse_path(argument, allow_null=True)
        except AddressSyntaxError as error:
            return reply("invalid_sender", str(error), _SESSION)
        decision = self.policy.judge_mail(self.session, sender, declared_size)
        if decision.accepted:
            self.sender = sender
        return decision

    def rcpt(self, argument: str) -> Decision:
        """RCPT TO: with the text after the colon."""
        if self.sender is None:
            return reply("need_mail", "", _SESSION)
        try:
            recipient = parse_path(argument, allow_null=False)
        except AddressSyntaxError as error:
            return reply("invalid_recipient", str(error), _SESSION)
        decision = self.policy.judge_rcpt(self.session, self.sender, recipient, len(self.recipients))
        if decision.accepted:
            self.recipients.append(recipient)
        return decision

    def data(self) -> Decision:
        if self.sender is None:
            return reply("need_mail", "", _SESSION)
        if not self.recipients:
            return reply("need_rcpt", "", _SESSION)
        return reply("start_mail_input", "", _SESSION)

    def message(self, raw: bytes) -> MessageVerdict:
        """End of data: judge the content and apply the header firewall.

        The accepting reply is ``250 2.6.0 Message accepted``; the listener replaces it with the
        queue's ``Queued mail for delivery`` once the message is on disk.
        """
        if self.sender is None or not self.recipients:
            return MessageVerdict(reply("need_rcpt", "", _SESSION), raw)
        facts = message_facts(raw)
        refusal = self.policy.judge_message(self.session, self.sender, tuple(self.recipients), facts)
        if refusal is not None:
            return MessageVerdict(refusal, raw)
        removed = self.policy.firewalled_headers(self.session, facts.header_names)
        return MessageVerdict(reply("message_ok", "", _SESSION), remove_header_fields(raw, removed), frozenset(removed))
