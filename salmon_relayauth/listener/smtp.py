"""The SMTP protocol of the relay: aiosmtpd's connection handling, the policy's replies.

One :class:`ConnectorSMTP` serves one connection. aiosmtpd reads command lines, enforces line
limits, handles the PROXY header and the STARTTLS handshake; every command that matters to the
policy is answered here through a :class:`~salmon_relayauth.session.RelaySession`, so the
connector selected when the connection was accepted decides the banner, the ESMTP keywords, the
limits and every reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiosmtpd.smtp import SMTP

from ..engine.judge import message_size_limit
from ..engine.limits import ConnectionCounts, source_key
from ..engine.replies import reply
from ..metrics import DecisionOutcome
from ..model.connection import ConnectionInfo
from ..model.decision import Decision
from ..model.enums import AuthMechanism, SizeMode
from ..session import RelaySession
from .arguments import ArgumentError, split_path_argument
from .auth_exchange import AuthAbort, read_credentials
from .compat import AIOSMTPD_REPLIES, CommandTable, CRLFStreamReader, SMTPTemplate, plain_address, smtp_commands
from .data import read_data
from .dry_run import dry_run_session
from .guard import SessionGuard
from .session_log import SessionLogs

if TYPE_CHECKING:
    from .server import RelayServer

__all__ = ["ConnectorSMTP"]

log = logging.getLogger("salmon_relayauth.listener")
_SOURCE = "relayauth.listener"
# Added to every timeout and tarpit: uvloop's clock counts whole milliseconds and is read once per
# turn of the loop, so its timers may fire up to a millisecond before the configured time.
_CLOCK_SLACK = 0.002


class ConnectorSMTP(SMTP):
    """aiosmtpd's SMTP protocol with every reply coming from the relay policy."""

    # Command lines longer than this are refused (RFC 5321 allows 512); DATA lines may be longer.
    command_size_limit = 1024
    line_length_limit = 4096

    def __init__(self, server: RelayServer) -> None:
        template = _TEMPLATES.get(type(self))
        if template is not None and template.loop is server.loop:
            template.apply(self)
            self.hostname = server.policy.config.server.fqdn
        else:
            super().__init__(
                _HANDLER,
                hostname=server.policy.config.server.fqdn,
                ident="",
                data_size_limit=None,
                decode_data=False,
                loop=server.loop,
            )
            if type(self) not in _UNTEMPLATED:
                captured = SMTPTemplate.capture(self, server.loop)
                if captured is None:
                    _UNTEMPLATED.add(type(self))
                    log.warning("this aiosmtpd cannot be templated: every connection runs SMTP.__init__")
                else:
                    _TEMPLATES[type(self)] = captured
        self.server = server
        self.relay: RelaySession | None = None
        self.dry_run: RelaySession | None = None  # the same session under a dry-run connector
        self.guard: SessionGuard | None = None
        self._refusal: Decision | None = None
        self._tls_offered = False
        self._tracked: tuple[str, str] | None = None
        self._lifetime: asyncio.TimerHandle | None = None
        self._closing = False
        self._closed_locally = False
        self.logs: SessionLogs | None = None
        self._command = ""  # the command being answered, for the decision log
        self._reading_data = False
        self._idle_deadline = 0.0
        # Command lines end with CRLF only: a bare LF inside a line never starts another command.
        reader: asyncio.StreamReader = self._strong_reader  # type: ignore[attr-defined]
        reader.__class__ = CRLFStreamReader
        commands = CommandTable(self._run_command, smtp_commands(type(self)), ConnectorSMTP._unrecognized)
        self._smtp_methods = commands  # type: ignore[assignment]  # aiosmtpd only calls get()

    async def _unrecognized(self, arg: str | None) -> None:
        """Any command this relay does not implement; counted as a protocol error like any other
        (aiosmtpd's own limit of five unknown commands would otherwise cut in first)."""
        await self.reply(Decision(500, "5.3.3", "Unrecognized command", "unknown command", _SOURCE))

    async def _run_command(self, name: str, handler: Callable[[ConnectorSMTP, str | None], Awaitable[None]],
                           arg: str | None) -> None:
        """Every command goes through here (see CommandTable): noted for the logs, then answered."""
        shown = name if name != "AUTH" else f"AUTH {(arg or '').split(' ')[0]}"  # never the credentials
        self._command = f"{shown} {arg}".rstrip() if name != "AUTH" and arg else shown
        if self.logs is not None:
            self.logs.received(self._command)
        await handler(self, arg)

    # -- connection -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        starting_tls = self._original_transport is not None
        super().connection_made(transport)
        if starting_tls:
            return
        self.server.connections.add(self)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if self.server.is_trusted_proxy(peer[0]):
            # The real client comes in the PROXY header; the session opens in _Handler.handle_PROXY.
            self._proxy_timeout = self.server.policy.config.proxy.timeout.total_seconds()
            return
        self.open_session(ConnectionInfo(plain_address(local[0]), local[1], plain_address(peer[0]), peer[1]))

    def open_session(self, connection: ConnectionInfo, proxied_by: str | None = None) -> Decision:
        """Select the connector and prepare the banner (or the refusal) for this connection."""
        policy = self.server.policy
        self.relay = RelaySession(policy, connection)
        greeting = self.relay.open()
        self.logs = SessionLogs(self.relay, self.server.protocol_log, self.server.decision_log, proxied_by)
        metrics = self.server.metrics
        if self.relay.state is None:
            self._refusal = greeting
            self.logs.decision(greeting, "(connect)")
            if metrics is not None:
                metrics.session_refused("no_connector")
            log.info("refused %s: %s", connection.remote_address, greeting.reason)
            return greeting
        connector = self.relay.session.connector
        source = source_key(connector, connection.remote_address)
        verdict: list[Decision | None] = [None]

        def refuse(counts: ConnectionCounts) -> bool:  # under the tracker's lock (shared by worker processes)
            verdict[0] = policy.connection_limit(connector, connection, counts)
            return verdict[0] is not None and not connector.throttling_shadow

        opened = self.server.tracker.open_unless(connector.name, source, refuse)
        refusal = verdict[0]
        if refusal is not None and opened:  # shadow mode: counted and served, the refusal only logged
            self.logs.decision(refusal, "(connect)", shadow=True)
            log.info(
                "shadow: would have refused %s on connector %r: %s (%s)",
                connection.remote_address,
                connector.name,
                refusal.render(),
                refusal.reason,
            )
            refusal = None
        if refusal is not None:
            assert not opened
            self._refusal = refusal
            self.logs.decision(refusal, "(connect)")
            if metrics is not None:
                metrics.session_refused("connection_limit")
                metrics.throttled(connector.name, "connection_limits")
            log.info("refused %s on connector %r: %s", connection.remote_address, connector.name, refusal.reason)
            return refusal
        self._tracked = (connector.name, source)
        self.server.sessions_opened += 1
        if metrics is not None:
            metrics.session_opened(connector.name)
        self.guard = SessionGuard(connector)
        self._timeout_duration = connector.connection_inactivity_timeout.total_seconds()
        self._reset_timeout()  # aiosmtpd started its default timer before the connector was known
        self._lifetime = self.loop.call_later(connector.connection_timeout.total_seconds() + _CLOCK_SLACK, self._lifetime_over)
        self.logs.connected()
        self.dry_run = dry_run_session(policy, connection, self.relay)
        if self.dry_run is not None:
            self.logs.decision(
                greeting,
                "(connect)",
                dry_run=True,
                dry_run_connector=self.dry_run.session.connector.name,
                live_connector=connector.name,
            )
        self.hostname, _, self.__ident__ = greeting.text.partition(" ")
        self._tls_offered = AuthMechanism.TLS in connector.auth_mechanism and self.server.tls_context is not None
        self.tls_context = self.server.tls_context if self._tls_offered else None
        return greeting

    def connection_lost(self, error: Exception | None) -> None:
        self.server.connections.discard(self)
        self._untrack()
        if self._lifetime is not None:
            self._lifetime.cancel()
        if self.logs is not None:
            self.logs.disconnected(by_client=not self._closed_locally)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        # DATA is read in pieces that may span many lines: a line arriving shows the client is not
        # idle. (A command line only counts once complete, so a never-ending one times out.)
        if self._reading_data and b"\n" in data:
            self._reset_timeout()
        super().data_received(data)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd cancels and re-arms a timer for every command (and here every DATA piece); this
        moves a deadline instead, and one timer re-arms itself until the deadline has passed."""
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration) + _CLOCK_SLACK
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > self._idle_deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)

    def _idle_check(self) -> None:
        if self.loop.time() < self._idle_deadline:
            self._timeout_handle = self.loop.call_at(self._idle_deadline, self._idle_check)
        else:
            self._timeout_cb()

    def _untrack(self) -> None:
        if self._tracked is not None:
            self.server.tracker.closed(*self._tracked)
            self._tracked = None

    def _timeout_cb(self) -> None:
        """Idle for connection_inactivity_timeout: say so before closing (aiosmtpd closes silently).
        A trusted proxy that never sent its header gets no reply: there is no session to speak for."""
        if self.relay is None:
            if self.transport is not None:
                self.transport.close()
            return
        self._close_with(b"451 4.7.0 Timeout waiting for client input\r\n")

    def _lifetime_over(self) -> None:
        """connection_timeout bounds a session's whole life, even while the client is sending."""
        self._close_with(b"421 4.4.1 Connection timed out\r\n")

    def _close_with(self, line: bytes) -> None:
        transport = cast("asyncio.WriteTransport | None", self.transport)  # uvloop's are not subclasses
        if transport is not None and not transport.is_closing():
            if self.logs is not None:
                self.logs.sent(line.decode("ascii").rstrip("\r\n"))
            self._closed_locally = True
            transport.write(line)
            transport.close()

    async def _handle_client(self) -> None:
        if self._refusal is not None:
            await self.push(self._refusal.render())
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()

    async def shut_down(self) -> None:
        """The relay is stopping: tell the client to come back later and close."""
        try:
            await self.push("421 4.3.2 Service shutting down, closing transmission channel")
        except (ConnectionError, RuntimeError):
            pass
        if self.transport is not None:
            self.transport.close()

    # -- helpers --------------------------------------------------------------------------------

    @property
    def _session(self) -> RelaySession:
        assert self.relay is not None and self.relay.state is not None
        return self.relay

    def _render(self, decision: Decision) -> str:
        return decision.render(self._session.session.connector.enhanced_status_codes_enabled)

    def mirror(self, live: Decision, step: Callable[[RelaySession], Decision]) -> None:
        """Ask the dry-run session the same question; log its answer when it differs from the live one."""
        if self.dry_run is None:
            return
        try:
            would = step(self.dry_run)
        except Exception:  # a dry run must never disturb the live session
            log.exception("dry run of session %s failed; it stops here", self._session.session_id)
            self.dry_run = None
            return
        if would.render() != live.render() and self.logs is not None:
            self.logs.decision(
                would,
                self._command,
                dry_run=True,
                dry_run_connector=self.dry_run.session.connector.name,
                live_decision=live.render(),
            )

    async def reply(self, decision: Decision, **extra: Any) -> None:
        if self.logs is not None:
            self.logs.decision(decision, self._command, **extra)
        metrics = self.server.metrics
        if metrics is not None and self.relay is not None and self.relay.state is not None:
            outcome: DecisionOutcome = (
                "accepted" if decision.code < 400 else "deferred" if decision.code < 500 else "refused"
            )
            metrics.decision(self.relay.state.connector.name, self._command, outcome)
            if "limit" in extra:
                metrics.throttled(self.relay.state.connector.name, str(extra["limit"]["name"]))
        if decision.code >= 400:
            log.info(
                "session %s %s: %s (%s: %s)",
                self._session.session_id,
                self._session.connection.remote_address,
                decision.render(),
                decision.source,
                decision.reason,
            )
        await self.push(self._render(decision))

    async def push(self, status: Any) -> None:
        """Every reply passes here: error replies are tarpitted and counted against the limits."""
        guard = self.guard
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        text = status = AIOSMTPD_REPLIES.get(text, text)
        if self.logs is not None:
            self.logs.sent(text)
        code = int(text[:3]) if text[:3].isdigit() and text[3:4] != "-" else 0
        if guard is None or code < 400 or self._closing:
            await super().push(status)
            return
        delay = guard.tarpit(code, self._session.session.authenticated)
        if delay:
            await asyncio.sleep(delay + _CLOCK_SLACK)
        await super().push(status)
        closing = guard.record_reply(code)
        if closing is not None:
            self._closing = True
            log.info("session %s %s: %s", self._session.session_id, self._session.connection.remote_address, closing.reason)
            if self.logs is not None:
                self.logs.sent(self._render(closing))
            await super().push(self._render(closing))
            if self.transport is not None:
                self._closed_locally = True
                self.transport.close()

    # -- greeting -------------------------------------------------------------------------------

    async def smtp_HELO(self, hostname: str | None) -> None:
        await self._greet(hostname or "", extended=False)

    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._greet(hostname or "", extended=True)

    async def _greet(self, hostname: str, extended: bool) -> None:
        relay = self._session
        decision = relay.helo(hostname, extended)
        self.mirror(decision, lambda trial: trial.helo(hostname, extended))
        if not decision.accepted:
            await self.reply(decision)
            return
        assert self.session is not None
        self.session.host_name = hostname
        self.session.extended_smtp = extended
        if not extended:
            await self.push(self._render(decision))
            return
        lines = [decision.text, *self._keywords()]
        for line in lines[:-1]:
            await self.push(f"250-{line}")
        await self.push(f"250 {lines[-1]}")

    def _keywords(self) -> list[str]:
        relay = self._session
        connector = relay.session.connector
        keywords = []
        if connector.size_enabled is SizeMode.ENABLED:
            keywords.append(f"SIZE {connector.max_message_size}")
        elif connector.size_enabled is SizeMode.ENABLED_WITHOUT_VALUE:
            keywords.append("SIZE")
        if connector.pipelining_enabled:
            keywords.append("PIPELINING")
        if connector.enhanced_status_codes_enabled:
            keywords.append("ENHANCEDSTATUSCODES")
        if self._tls_offered and not relay.session.tls:
            keywords.append("STARTTLS")
        if relay.offers_auth():
            keywords.append("AUTH LOGIN PLAIN")
        if connector.eight_bit_mime_enabled:
            keywords.append("8BITMIME")
        return keywords

    # -- transaction ----------------------------------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        try:
            argument = split_path_argument(arg, "FROM")
        except ArgumentError as error:
            await self.reply(reply("invalid_sender", str(error), _SOURCE))
            return
        parameters = dict(argument.parameters)
        size_text = parameters.pop("SIZE", None)
        body = parameters.pop("BODY", None)
        if parameters:
            await self.reply(Decision(555, "5.5.4", "Unsupported parameter", f"MAIL parameters {sorted(parameters)}", _SOURCE))
            return
        if body is not None and body.upper() not in ("7BIT", "8BITMIME"):
            await self.reply(Decision(501, "5.5.4", "Unsupported BODY type", f"BODY={body}", _SOURCE))
            return
        size = None
        if size_text is not None:
            if not size_text.isascii() or not size_text.isdigit():
                await self.reply(Decision(501, "5.5.4", "Invalid arguments", f"SIZE={size_text}", _SOURCE))
                return
            size = int(size_text)
        relay = self._session
        decision = relay.mail(argument.path, size)
        self.mirror(decision, lambda trial: trial.mail(argument.path, size))
        if decision.accepted and relay.sender is not None:
            exceeded = await self.server.charge_rate_limits(relay.session, relay.sender)
            if exceeded is not None:
                limit = {"name": exceeded.name, "key": exceeded.key, "per_minute": exceeded.per_minute}
                if exceeded.shadow:
                    if self.logs is not None:
                        self.logs.decision(exceeded.decision, self._command, limit=limit, shadow=True)
                else:
                    relay.reset()
                    await self.reply(exceeded.decision, limit=limit)
                    if exceeded.decision.code == 421 and self.transport is not None:
                        self._closed_locally = True
                        self.transport.close()
                    return
        await self.reply(decision)

    async def smtp_RCPT(self, arg: str | None) -> None:
        try:
            argument = split_path_argument(arg, "TO")
        except ArgumentError as error:
            await self.reply(reply("invalid_recipient", str(error), _SOURCE))
            return
        if argument.parameters:
            await self.reply(
                Decision(555, "5.5.4", "Unsupported parameter", f"RCPT parameters {sorted(argument.parameters)}", _SOURCE)
            )
            return
        decision = self._session.rcpt(argument.path)
        self.mirror(decision, lambda trial: trial.rcpt(argument.path))
        await self.reply(decision)

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        relay = self._session
        if relay.session.tls:
            await self.reply(Decision(503, "5.5.2", "Only one STARTTLS command can be issued per session", "TLS is already on", _SOURCE))
            return
        if not self._tls_offered:
            await self.reply(Decision(504, "5.7.4", "Unrecognized command", "STARTTLS is not offered on this connector", _SOURCE))
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_RSET(self, arg: str | None) -> None:
        self._session.reset()
        if self.dry_run is not None:
            self.dry_run.reset()
        await self.push(self._render(Decision(250, "2.0.0", "Resetting")))

    async def smtp_NOOP(self, arg: str | None) -> None:
        await self.push(self._render(Decision(250, "2.0.0", "OK")))

    async def smtp_VRFY(self, arg: str | None) -> None:
        await self.push(self._render(Decision(252, "2.1.5", "Cannot VRFY user")))

    async def smtp_EXPN(self, arg: str | None) -> None:
        await self.push(self._render(Decision(502, "5.3.3", "Command not implemented")))

    async def smtp_HELP(self, arg: str | None) -> None:
        await self.push("214-This server supports the following commands:")
        await self.push("214 HELO EHLO STARTTLS RCPT DATA RSET MAIL QUIT HELP AUTH NOOP VRFY")

    async def smtp_QUIT(self, arg: str | None) -> None:
        # The session is over: it stops counting against the connection limits before the client
        # reads 221 and connects again (it may land on another worker, before this one closes).
        self._untrack()
        await self.push(self._render(reply("quit")))
        if self.transport is not None:
            self._closed_locally = True
            self.transport.close()

    async def smtp_PROXY(self, arg: str | None) -> None:
        """A PROXY header from a peer that is not a trusted proxy ends the connection."""
        log.warning("PROXY header from untrusted peer %s: connection closed", self._session.connection.remote_address)
        await self.push(self._render(Decision(554, "5.7.1", "PROXY not accepted from this address")))
        if self.transport is not None:
            self.transport.close()

    async def smtp_DATA(self, arg: str | None) -> None:
        relay = self._session
        if arg:
            await self.reply(Decision(501, "5.5.4", "Invalid arguments", "DATA takes no argument", _SOURCE))
            return
        decision = relay.data()
        self.mirror(decision, lambda trial: trial.data())
        if decision.code != 354:
            await self.reply(decision)
            return
        await self.push(decision.render(enhanced_status_codes=False))
        state, connector = relay.session, relay.session.connector
        limit = message_size_limit(state)  # stop keeping data past the limit; the content check refuses it
        self._reading_data = True
        try:
            outcome = await read_data(self._reader, limit, connector.bare_linefeed_rejection_enabled, self._reset_timeout)
        finally:
            self._reading_data = False
        if outcome.too_big:
            relay.reset()
            await self.reply(reply("message_too_big", f"message over {limit} bytes", _SOURCE))
            return
        if outcome.bare_line_ends:
            relay.reset()
            await self.reply(
                Decision(554, "5.6.0", "Invalid message content, contains bare linefeeds", "bare CR or LF", _SOURCE)
            )
            return
        verdict = relay.message(outcome.content)
        self.mirror(verdict.decision, lambda trial: trial.message(outcome.content).decision)
        if self.dry_run is not None:
            self.dry_run.reset()
        if not verdict.decision.accepted:
            relay.reset()
            await self.reply(verdict.decision)
            return
        final = await self.server.pipeline.accept(relay, verdict.content)
        relay.reset()
        await self.reply(final)

    # -- authentication -------------------------------------------------------------------------

    async def smtp_AUTH(self, arg: str | None) -> None:
        relay = self._session
        if not relay.greeted:
            await self.reply(reply("send_hello_first", "", _SOURCE))
            return
        if not relay.offers_auth():
            await self.reply(reply("auth_unrecognized", "the connector does not offer AUTH", _SOURCE))
            return
        mechanism, _, initial = (arg or "").partition(" ")
        try:
            credentials = await read_credentials(mechanism.upper(), initial.strip(), self._challenge)
        except AuthAbort as abort:
            await self.reply(abort.decision)
            return
        outcome = relay.authenticate(*credentials)
        await self.reply(outcome)
        if outcome.code == 235:
            if self.dry_run is not None and self.dry_run.offers_auth():
                self.dry_run.assume_user(credentials[0])
            if self.logs is not None:
                self.logs.permissions()

    async def _challenge(self, prompt: str) -> str:
        await self.push(f"334 {prompt}".rstrip() if prompt else "334 ")
        line = await self._reader.readline()
        text = line.rstrip(b"\r\n").decode("ascii", "replace")
        if self.logs is not None:
            self.logs.received("****")  # an AUTH response: never written
        if text == "*":
            raise AuthAbort(Decision(501, "5.5.4", "Authentication cancelled", "client sent *", _SOURCE))
        return text


class _Handler:
    """The aiosmtpd event handler: only the hooks aiosmtpd calls itself."""

    async def handle_PROXY(self, server: ConnectorSMTP, session: Any, envelope: Any, proxy_data: Any) -> bool:
        if not proxy_data or not proxy_data.valid or proxy_data.src_addr is None:
            log.warning("invalid or LOCAL PROXY header from %s: connection closed", session.peer[0])
            return False
        assert server.transport is not None
        local = server.transport.get_extra_info("sockname")
        connection = ConnectionInfo(plain_address(local[0]), local[1], plain_address(str(proxy_data.src_addr)), proxy_data.src_port or 0)
        greeting = server.open_session(connection, proxied_by=f"{session.peer[0]}:{session.peer[1]}")
        if server.relay is None or server.relay.state is None:
            await server.push(greeting.render())
            return False
        return True

    def handle_STARTTLS(self, server: ConnectorSMTP, session: Any, envelope: Any) -> bool:
        if server.relay is not None and server.relay.state is not None:
            server.relay.tls_started()
            if server.dry_run is not None:
                server.dry_run.tls_started()
            if server.logs is not None:
                server.logs.info("", "TLS negotiation succeeded")
                server.logs.permissions()
        return True

    async def handle_exception(self, error: Exception) -> str:
        log.error("error in SMTP session", exc_info=error)
        return "451 4.3.0 Temporary server error, please try again later"


_HANDLER = _Handler()  # stateless: one for every connection
# Per protocol class, what SMTP.__init__ computes; and the classes it cannot be captured for.
_TEMPLATES: dict[type[ConnectorSMTP], SMTPTemplate] = {}
_UNTEMPLATED: set[type[ConnectorSMTP]] = set()

