"""``salmon-relayauth explain``: what the relay would do for a client, sender and recipients, and why.

It drives the same :class:`RelaySession` the live listener drives, so it cannot disagree with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from ..config.problems import ConfigError
from ..engine.selection import rank_candidates
from ..model.addresses import AddressError, client_address, parse_binding
from ..model.connection import ConnectionInfo
from ..model.decision import Decision
from ..plugins import PluginLoadError
from ..policy import RelayPolicy, load_policy
from ..session import RelaySession

__all__ = ["Explanation", "explain", "register", "run"]


@dataclass
class Explanation:
    """Everything ``explain`` reports, as plain data (the JSON output is this, serialised)."""

    connection: ConnectionInfo
    local_assumed: bool
    connector: dict[str, Any] | None = None
    runners_up: list[dict[str, Any]] = field(default_factory=list)
    principals: list[str] = field(default_factory=list)
    rights: list[dict[str, Any]] = field(default_factory=list)
    conversation: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "client": self.connection.remote_address,
            "local": f"{self.connection.local_address}:{self.connection.local_port}",
            "local_assumed": self.local_assumed,
            "connector": self.connector,
            "runners_up": self.runners_up,
            "principals": self.principals,
            "rights": self.rights,
            "conversation": self.conversation,
            "notes": self.notes,
            "verdict": self.verdict,
        }


def register(verbs: Any) -> None:
    parser = verbs.add_parser("explain", help="show what the relay would do for a client", description=__doc__)
    parser.add_argument("config", metavar="CONFIG", help="path to the TOML configuration")
    parser.add_argument("--client", required=True, metavar="IP", help="the client's address")
    parser.add_argument("--local", metavar="IP:PORT", help="the local endpoint it connects to (default: the first binding)")
    parser.add_argument("--auth", metavar="USER", help="assume a successful AUTH as USER")
    parser.add_argument("--tls", action="store_true", help="assume STARTTLS has completed")
    parser.add_argument("--mail-from", required=True, metavar="ADDR", help="the envelope sender (use '' for <>)")
    parser.add_argument("--rcpt", required=True, action="append", metavar="ADDR", help="a recipient (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.config)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except PluginLoadError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    try:
        connection, assumed = _connection(policy, args.client, args.local)
    except AddressError as error:
        print(f"explain: {error}", file=sys.stderr)
        return 2
    result = explain(policy, connection, args.mail_from, args.rcpt, user=args.auth, tls=args.tls, local_assumed=assumed)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(render(result))
    return 0


def _connection(policy: RelayPolicy, client: str, local: str | None) -> tuple[ConnectionInfo, bool]:
    version, _ = client_address(client)
    if local is not None:
        binding = parse_binding(local)
        return ConnectionInfo(binding.host, binding.port, client), False
    for connector in policy.config.live_connectors:
        for binding in connector.bindings:
            if binding.version == version:
                return ConnectionInfo(binding.host, binding.port, client), True
    raise AddressError(f"no enabled connector has a binding for IPv{version} clients such as {client!r}; give --local")


def _step(command: str, decision: Decision, enhanced: bool) -> dict[str, Any]:
    return {
        "command": command,
        "reply": decision.render(enhanced),
        "code": decision.code,
        "reason": decision.reason,
        "source": decision.source,
    }


def explain(
    policy: RelayPolicy,
    connection: ConnectionInfo,
    mail_from: str,
    recipients: list[str],
    user: str | None = None,
    tls: bool = False,
    local_assumed: bool = False,
) -> Explanation:
    """Simulate a session through the live code path and collect why each reply is what it is."""
    result = Explanation(connection, local_assumed)
    session = RelaySession(policy, connection, session_id="0" * 16)
    greeting = session.open()
    if session.selection is None:
        result.conversation.append(_step("(connect)", greeting, True))
        result.verdict = f"refused at connect: no enabled connector takes {connection.remote_address}"
        return result
    selection = session.selection
    connector = selection.connector
    enhanced = connector.enhanced_status_codes_enabled
    result.connector = {
        "name": connector.name,
        "matched_range": str(selection.matched_range),
        "range_size": selection.matched_range.size,
        "binding": "specific local IP" if selection.specific_binding else "wildcard",
        "selected_by": selection.source,
    }
    result.runners_up = [
        {"name": other.connector.name, "matched_range": str(other.matched_range), "range_size": other.matched_range.size}
        for other in rank_candidates(policy.config.connectors, connection)
        if other.connector is not connector
    ]
    result.conversation.append(_step("(connect)", greeting, enhanced))
    result.conversation.append(_step("EHLO explain.invalid", session.helo("explain.invalid"), enhanced))
    if tls:
        session.tls_started()
        result.notes.append("assuming STARTTLS completed")
        result.conversation.append(_step("EHLO explain.invalid", session.helo("explain.invalid"), enhanced))
    if user is not None:
        if session.offers_auth():
            session.assume_user(user)
            result.notes.append(f"assuming AUTH as {user!r} succeeded (credentials are not checked)")
        else:
            refusal = session.authenticate(user, "")
            result.conversation.append(_step("AUTH LOGIN", refusal, enhanced))
            result.notes.append("the connector does not offer AUTH here, so the session stays anonymous")
    state = session.session
    result.principals = sorted(state.principals)
    result.rights = [
        {
            "right": trace.right.value,
            "granted": trace.granted,
            "allowed_by": [grant.origin for grant in trace.allowed_by],
            "denied_by": [grant.origin for grant in trace.denied_by],
        }
        for trace in state.rights.traces
    ]
    mail = session.mail(f"<{mail_from}>" if not mail_from.startswith("<") else mail_from)
    result.conversation.append(_step(f"MAIL FROM:<{mail_from.strip('<>')}>", mail, enhanced))
    accepted = []
    if mail.accepted:
        for recipient in recipients:
            decision = session.rcpt(f"<{recipient.strip('<>')}>")
            result.conversation.append(_step(f"RCPT TO:<{recipient.strip('<>')}>", decision, enhanced))
            if decision.accepted:
                accepted.append(recipient)
        result.conversation.append(_step("DATA", session.data(), enhanced))
    result.verdict = _verdict(connector.name, mail, accepted, recipients)
    return result


def _verdict(connector: str, mail: Decision, accepted: list[str], recipients: list[str]) -> str:
    if not mail.accepted:
        return f"refused at MAIL FROM on connector {connector!r}: {mail.reason}"
    if len(accepted) == len(recipients):
        return f"accepted: every recipient would be taken through connector {connector!r}"
    if accepted:
        return f"partly accepted: {len(accepted)} of {len(recipients)} recipients through connector {connector!r}"
    return f"refused: no recipient would be accepted through connector {connector!r}"


def render(result: Explanation) -> str:
    lines = [f"Client {result.connection.remote_address} connecting to {result.connection.local_address}:{result.connection.local_port}"
             + (" (local endpoint assumed: the first binding; use --local to choose)" if result.local_assumed else "")]
    if result.connector is not None:
        c = result.connector
        lines.append(
            f"Connector: {c['name']} (remote range {c['matched_range']}, {c['range_size']} address(es), "
            f"{c['binding']} binding; chosen by {c['selected_by']})"
        )
        for other in result.runners_up:
            lines.append(f"  runner-up: {other['name']} (remote range {other['matched_range']}, {other['range_size']} address(es))")
        lines.append(f"Runs as: {', '.join(result.principals)}")
        lines.append("Rights:")
        width = max(len(r["right"]) for r in result.rights)
        for right in result.rights:
            if right["denied_by"]:
                state, why = "denied ", "denied by " + "; ".join(right["denied_by"])
                if right["allowed_by"]:
                    why += " (over allow by " + "; ".join(right["allowed_by"]) + ")"
            elif right["granted"]:
                state, why = "granted", "; ".join(right["allowed_by"])
            else:
                state, why = "-      ", "not granted"
            lines.append(f"  {state} {right['right']:<{width}}  {why}")
    for note in result.notes:
        lines.append(f"Note: {note}")
    lines.append("Conversation:")
    for step in result.conversation:
        if not step["command"].startswith("("):
            lines.append(f"  C: {step['command']}")
        why = f"   [{step['source']}: {step['reason']}]" if step["reason"] else ""
        lines.append(f"  S: {step['reply']}{why}")
    lines.append(f"Verdict: {result.verdict}")
    return "\n".join(lines)
