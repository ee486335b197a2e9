"""Every right's effect at its command, limits and protocol order, driven through RelaySession.

Reference §3 (rights, where they are checked, what is sent when they are missing), §3.1 (header
firewall), §3.2/§3.3 (sender and relay checks), §4 (AUTH), §7.3/§7.5 (limits, reserved domains),
§9 (reply texts; the source document wins on wording), §13 (accepted domains).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from salmon_relayauth import ConnectionInfo, Decision, RelayPolicy, Right, config_from_mapping, make_plugin_manager
from salmon_relayauth.engine.passwords import hash_password
from salmon_relayauth.hookspecs import hookimpl
from salmon_relayauth.session import RelaySession

ANONYMOUS = "NT AUTHORITY\\ANONYMOUS LOGON"
AUTHENTICATED = "NT AUTHORITY\\Authenticated Users"
RELAY_HOST = "192.168.5.10"
LOCAL = ("10.1.1.1", 25)

ANONYMOUS_RELAY = {
    "permission_groups": ["AnonymousUsers"],
    "permissions": [{"user": ANONYMOUS, "extended_rights": ["Ms-Exch-SMTP-Accept-Any-Recipient"]}],
}
EXTERNALLY_SECURED = {"auth_mechanism": ["ExternalAuthoritative"], "permission_groups": ["ExchangeServers"]}


def make_config(*, accepted=(("contoso.com", "Authoritative"),), users_file: Path | None = None, **connector):
    table = {"name": "Relay", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["192.168.5.0/24"]}
    table.update(connector)
    data: dict = {
        "server": {"fqdn": "relay.contoso.com"},
        "accepted_domains": [{"domain": domain, "type": kind} for domain, kind in accepted],
        "connectors": [table],
    }
    if users_file is not None:
        data["authentication"] = {"users_file": str(users_file)}
    return config_from_mapping(data)


def start(config, client: str = RELAY_HOST, plugins=(), greet: bool = True) -> RelaySession:
    manager = make_plugin_manager(plugins=plugins, disabled=config.plugins.disabled, load_entrypoints=False)
    session = RelaySession(RelayPolicy(config, manager), ConnectionInfo(LOCAL[0], LOCAL[1], client))
    assert session.open().code == 220
    if greet:
        assert session.helo("client.example").render() == f"250 relay.contoso.com Hello [{client}]"
    return session


def deny(*rights: str, user: str = ANONYMOUS) -> dict:
    return {"user": user, "extended_rights": list(rights), "deny": True}


# --- ms-Exch-SMTP-Submit at MAIL FROM ---------------------------------------------------------------


def test_anonymous_without_submit_is_not_authenticated():
    session = start(make_config(permission_groups=["ExchangeUsers"], auth_mechanism=["Tls", "BasicAuth"]))
    assert Right.SMTP_SUBMIT not in session.session.rights
    decision = session.mail("chris@contoso.com")
    assert decision.render() == "530 5.7.1 Client was not authenticated"
    assert decision.source == "relayauth.sender"
    assert ms_exch("SMTP-Submit") in decision.reason
    assert session.sender is None
    assert session.rcpt("kate@contoso.com").render() == "503 5.5.2 Need mail command"


def test_anonymous_submit_denied_by_entry_is_not_authenticated():
    session = start(make_config(permission_groups=["AnonymousUsers"], permissions=[deny("ms-Exch-SMTP-Submit")]))
    assert session.mail("<>").render() == "530 5.7.1 Client was not authenticated"


def test_authenticated_without_submit_has_no_permission_to_submit():
    config = make_config(
        permission_groups=["AnonymousUsers", "ExchangeUsers"],
        auth_mechanism=["Tls", "BasicAuth"],
        permissions=[deny("ms-Exch-SMTP-Submit", user="alice@contoso.com")],
    )
    session = start(config)
    session.assume_user("alice@contoso.com")
    assert Right.SMTP_SUBMIT not in session.session.rights
    decision = session.mail("alice@contoso.com")
    assert decision.render() == "550 5.7.1 Client does not have permissions to submit to this server"
    assert session.sender is None
    # The deny names one user: another authenticated user still submits.
    other = start(config)
    other.assume_user("bob@contoso.com")
    assert other.mail("bob@contoso.com").render() == "250 2.1.0 Sender OK"


def test_authenticated_user_on_anonymous_only_connector_cannot_submit():
    session = start(make_config(permission_groups=["AnonymousUsers"], auth_mechanism=["Tls", "BasicAuth"]))
    assert session.mail("chris@contoso.com").code == 250  # anonymous may
    session.helo("client.example")
    session.assume_user("alice@contoso.com")
    assert session.mail("alice@contoso.com").render() == (
        "550 5.7.1 Client does not have permissions to submit to this server"
    )


# --- sender rights at MAIL FROM ---------------------------------------------------------------------


def test_missing_any_sender_refuses_a_foreign_sender():
    session = start(make_config(permission_groups=["AnonymousUsers"], permissions=[deny("ms-Exch-SMTP-Accept-Any-Sender")]))
    decision = session.mail("someone@fabrikam.com")
    assert decision.render() == "550 5.7.1 Client does not have permissions to send as this sender"
    assert ms_exch("SMTP-Accept-Any-Sender") in decision.reason
    assert session.sender is None
    # the authoritative-domain sender needs the other right, which is still held
    assert session.mail("chris@contoso.com").render() == "250 2.1.0 Sender OK"


@pytest.mark.parametrize("sender", ["chris@contoso.com", "CHRIS@CONTOSO.COM", "<chris@contoso.com.>", "chris@sub.corp.example"])
def test_missing_authoritative_domain_sender_refuses_own_domain_for_anonymous(sender):
    config = make_config(
        accepted=(("contoso.com", "Authoritative"), ("*.corp.example", "Authoritative")),
        permission_groups=["AnonymousUsers"],
        permissions=[deny("ms-Exch-SMTP-Accept-Authoritative-Domain-Sender")],
    )
    session = start(config)
    decision = session.mail(sender)
    assert decision.render() == "550 5.7.1 Anonymous client does not have permissions to send as this sender"
    assert ms_exch("SMTP-Accept-Authoritative-Domain-Sender") in decision.reason
    assert session.sender is None


def test_missing_authoritative_domain_sender_still_passes_foreign_sender_with_any_sender():
    config = make_config(
        permission_groups=["AnonymousUsers"], permissions=[deny("ms-Exch-SMTP-Accept-Authoritative-Domain-Sender")]
    )
    session = start(config)
    assert Right.SMTP_ACCEPT_ANY_SENDER in session.session.rights
    assert session.mail("someone@fabrikam.com").render() == "250 2.1.0 Sender OK"
    assert session.sender is not None and session.sender.address == "someone@fabrikam.com"


def test_sender_in_non_authoritative_accepted_domain_needs_any_sender():
    config = make_config(
        accepted=(("contoso.com", "Authoritative"), ("partner.example", "InternalRelay")),
        permission_groups=["AnonymousUsers"],
        permissions=[deny("ms-Exch-SMTP-Accept-Any-Sender")],
    )
    session = start(config)
    assert session.mail("x@partner.example").render() == "550 5.7.1 Client does not have permissions to send as this sender"


def test_null_sender_is_accepted_with_submit_alone():
    config = make_config(
        permission_groups=["Custom"],
        permissions=[{"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Submit"]}],
    )
    session = start(config)
    assert Right.SMTP_ACCEPT_ANY_SENDER not in session.session.rights
    assert session.mail("<>").render() == "250 2.1.0 Sender OK"
    assert session.sender is not None and session.sender.is_null
    assert session.rcpt("kate@contoso.com").render() == "250 2.1.5 Recipient OK"
    # but a named sender needs a sender right
    session.helo("client.example")
    assert session.mail("someone@fabrikam.com").code == 550


def test_sender_already_specified():
    session = start(make_config(**ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").code == 250
    assert session.mail("chris@contoso.com").render() == "503 5.5.2 Sender already specified"


def test_invalid_sender_address():
    session = start(make_config(**ANONYMOUS_RELAY))
    assert session.mail("chris@@contoso.com").render() == "501 5.1.7 Invalid address"
    assert session.sender is None


# --- declared SIZE at MAIL FROM ------------------------------------------------------------------------


def test_declared_size_over_the_maximum_is_refused():
    session = start(make_config(max_message_size=65536, **ANONYMOUS_RELAY))
    decision = session.mail("chris@contoso.com", declared_size=65537)
    assert decision.render() == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert session.sender is None
    assert session.mail("chris@contoso.com", declared_size=65536).render() == "250 2.1.0 Sender OK"


def test_declared_size_over_the_maximum_is_accepted_with_bypass_message_size_limit():
    session = start(make_config(max_message_size=65536, **EXTERNALLY_SECURED))
    assert Right.BYPASS_MESSAGE_SIZE_LIMIT in session.session.rights
    assert session.mail("chris@contoso.com", declared_size=10**9).render() == "250 2.1.0 Sender OK"


# --- ms-Exch-SMTP-Accept-Any-Recipient at RCPT TO ----------------------------------------------------


def test_relay_right_lets_an_external_recipient_through():
    session = start(make_config(**ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@fabrikam.com").render() == "250 2.1.5 Recipient OK"
    assert [r.address for r in session.recipients] == ["kate@fabrikam.com"]


def test_no_relay_right_refuses_an_external_recipient():
    session = start(make_config(permission_groups=["AnonymousUsers"]))
    assert session.mail("chris@contoso.com").code == 250
    decision = session.rcpt("kate@fabrikam.com")
    assert decision.render() == "550 5.7.1 Unable to relay"
    assert decision.source == "relayauth.relay"
    assert ms_exch("SMTP-Accept-Any-Recipient") in decision.reason
    assert session.recipients == []


def test_externally_secured_relays():
    session = start(make_config(**EXTERNALLY_SECURED))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@fabrikam.com").render() == "250 2.1.5 Recipient OK"


ACCEPTED_KINDS = (
    ("contoso.com", "Authoritative"),
    ("internal.example", "InternalRelay"),
    ("external.example", "ExternalRelay"),
    ("*.wild.example", "Authoritative"),
)


@pytest.mark.parametrize(
    "recipient",
    [
        "user@contoso.com",
        "user@internal.example",
        "user@external.example",
        "user@wild.example",
        "user@sub.wild.example",
        "user@deep.sub.wild.example",
    ],
)
def test_accepted_domains_of_every_kind_need_no_relay_right(recipient):
    session = start(make_config(accepted=ACCEPTED_KINDS, permission_groups=["AnonymousUsers"]))
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights
    assert session.mail("<>").code == 250
    assert session.rcpt(recipient).render() == "250 2.1.5 Recipient OK"


@pytest.mark.parametrize(
    "recipient",
    ["user@evilwild.example", "user@wild.example.evil.net", "user@sub.contoso.com", "user@contoso.co", "user@xcontoso.com"],
)
def test_lookalike_domains_are_not_accepted(recipient):
    session = start(make_config(accepted=ACCEPTED_KINDS, permission_groups=["AnonymousUsers"]))
    assert session.mail("<>").code == 250
    assert session.rcpt(recipient).render() == "550 5.7.1 Unable to relay"
    assert session.recipients == []


def test_wildcard_contoso_matches_itself_and_subdomains_but_not_evilcontoso():
    session = start(make_config(accepted=(("*.contoso.com", "Authoritative"),), permission_groups=["AnonymousUsers"]))
    assert session.mail("<>").code == 250
    assert session.rcpt("a@contoso.com").render() == "250 2.1.5 Recipient OK"
    assert session.rcpt("b@sub.contoso.com").render() == "250 2.1.5 Recipient OK"
    assert session.rcpt("c@evilcontoso.com").render() == "550 5.7.1 Unable to relay"
    assert [r.address for r in session.recipients] == ["a@contoso.com", "b@sub.contoso.com"]


# --- recipient limit -----------------------------------------------------------------------------------


def test_recipient_limit_refuses_extra_recipients_and_keeps_the_earlier_ones():
    session = start(make_config(max_recipients_per_message=2, **ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("a@contoso.com").render() == "250 2.1.5 Recipient OK"
    assert session.rcpt("b@fabrikam.com").render() == "250 2.1.5 Recipient OK"
    assert session.rcpt("c@contoso.com").render() == "452 4.5.3 Too many recipients"
    assert session.rcpt("d@fabrikam.com").render() == "452 4.5.3 Too many recipients"
    assert [r.address for r in session.recipients] == ["a@contoso.com", "b@fabrikam.com"]
    # the session continues: the message goes to the first two recipients
    assert session.data().render() == "354 Start mail input; end with <CRLF>.<CRLF>"
    verdict = session.message(b"Subject: Test\r\n\r\nThis is a test message\r\n")
    assert verdict.decision.code == 250
    assert verdict.decision.status == "2.6.0"


def test_recipient_limit_is_per_transaction():
    session = start(make_config(max_recipients_per_message=1, **ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("a@contoso.com").code == 250
    assert session.rcpt("b@contoso.com").code == 452
    session.reset()
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("b@contoso.com").render() == "250 2.1.5 Recipient OK"


def test_refused_recipients_do_not_count_towards_the_limit():
    session = start(make_config(max_recipients_per_message=1, permission_groups=["AnonymousUsers"]))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("x@fabrikam.com").code == 550
    assert session.rcpt("a@contoso.com").render() == "250 2.1.5 Recipient OK"


# --- reserved recipient domains (§7.5) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "recipient", "reply"),
    [
        ("reject_reserved_top_level_recipient_domains", "user@host.test", "550 5.1.4 Recipient address reserved by RFC 2606"),
        ("reject_reserved_top_level_recipient_domains", "user@foo.example", "550 5.1.4 Recipient address reserved by RFC 2606"),
        ("reject_reserved_top_level_recipient_domains", "user@a.invalid", "550 5.1.4 Recipient address reserved by RFC 2606"),
        ("reject_reserved_top_level_recipient_domains", "user@x.localhost", "550 5.1.4 Recipient address reserved by RFC 2606"),
        ("reject_reserved_second_level_recipient_domains", "user@example.com", "550 5.1.5 Recipient address reserved by RFC 2606"),
        ("reject_reserved_second_level_recipient_domains", "user@mail.example.net", "550 5.1.5 Recipient address reserved by RFC 2606"),
        ("reject_reserved_second_level_recipient_domains", "user@example.org", "550 5.1.5 Recipient address reserved by RFC 2606"),
        ("reject_single_label_recipient_domains", "chris@contoso", "550 5.1.6 Recipient addresses in single label domains not accepted"),
    ],
)
def test_reserved_recipient_domains(option, recipient, reply):
    # Without the option the relay right takes the recipient; with it, it is refused even so.
    relaxed = start(make_config(**ANONYMOUS_RELAY))
    assert relaxed.mail("chris@contoso.com").code == 250
    assert relaxed.rcpt(recipient).render() == "250 2.1.5 Recipient OK"
    strict = start(make_config(**{option: True}, **ANONYMOUS_RELAY))
    assert strict.mail("chris@contoso.com").code == 250
    assert strict.rcpt(recipient).render() == reply
    assert strict.recipients == []


@pytest.mark.parametrize(
    ("option", "recipient"),
    [
        ("reject_reserved_top_level_recipient_domains", "user@testing.com"),
        ("reject_reserved_second_level_recipient_domains", "user@notexample.com"),
        ("reject_single_label_recipient_domains", "user@contoso.com"),
    ],
)
def test_reserved_domain_options_leave_other_domains_alone(option, recipient):
    session = start(make_config(**{option: True}, **ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt(recipient).render() == "250 2.1.5 Recipient OK"


# --- require_tls -----------------------------------------------------------------------------------


def test_require_tls_refuses_mail_until_starttls():
    session = start(make_config(require_tls=True, auth_mechanism=["Tls"], **ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").render() == "530 5.7.0 Must issue a STARTTLS command first"
    assert session.sender is None
    session.tls_started()
    assert session.session.tls
    # STARTTLS starts the session over: hello first
    assert session.mail("chris@contoso.com").render() == "503 5.5.2 Send hello first"
    session.helo("client.example")
    assert session.mail("chris@contoso.com").render() == "250 2.1.0 Sender OK"
    assert session.rcpt("kate@fabrikam.com").render() == "250 2.1.5 Recipient OK"


def test_tls_started_keeps_the_rights():
    session = start(make_config(**ANONYMOUS_RELAY))
    before = session.session.rights.granted
    session.tls_started()
    assert session.session.rights.granted == before


# --- enhanced status codes -------------------------------------------------------------------------


def test_enhanced_status_codes_omitted_when_disabled():
    session = start(make_config(enhanced_status_codes_enabled=False, permission_groups=["AnonymousUsers"]))
    enhanced = session.session.connector.enhanced_status_codes_enabled
    assert enhanced is False
    mail = session.mail("chris@contoso.com")
    assert mail.render(enhanced) == "250 Sender OK"
    relay = session.rcpt("kate@fabrikam.com")
    assert relay.render(enhanced) == "550 Unable to relay"
    assert relay.render() == "550 5.7.1 Unable to relay"
    assert session.rcpt("kate@contoso.com").render(enhanced) == "250 Recipient OK"


def test_decision_render_without_status():
    decision = Decision(452, "4.5.3", "Too many recipients")
    assert decision.render(False) == "452 Too many recipients"
    assert decision.render(True) == "452 4.5.3 Too many recipients"
    assert Decision(354, "", "Start mail input; end with <CRLF>.<CRLF>").render(True) == (
        "354 Start mail input; end with <CRLF>.<CRLF>"
    )


# --- protocol order ------------------------------------------------------------------------------------


def test_protocol_order_replies():
    session = start(make_config(**ANONYMOUS_RELAY), greet=False)
    assert session.mail("chris@contoso.com").render() == "503 5.5.2 Send hello first"
    assert session.rcpt("kate@fabrikam.com").render() == "503 5.5.2 Need mail command"
    assert session.data().render() == "503 5.5.2 Need mail command"
    session.helo("client.example")
    assert session.rcpt("kate@fabrikam.com").render() == "503 5.5.2 Need mail command"
    assert session.data().render() == "503 5.5.2 Need mail command"
    assert session.mail("chris@contoso.com").code == 250
    assert session.data().render() == "503 5.5.2 Need rcpt command"
    assert session.message(b"Subject: x\r\n\r\nbody\r\n").decision.render() == "503 5.5.2 Need rcpt command"
    assert session.rcpt("kate@fabrikam.com").code == 250
    assert session.data().render() == "354 Start mail input; end with <CRLF>.<CRLF>"


def test_helo_resets_the_transaction():
    session = start(make_config(**ANONYMOUS_RELAY))
    session.mail("chris@contoso.com")
    session.rcpt("kate@fabrikam.com")
    session.helo("client.example")
    assert session.sender is None and session.recipients == []
    assert session.data().render() == "503 5.5.2 Need mail command"


def test_source_document_telnet_conversation():
    session = start(make_config(**ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").render() == "250 2.1.0 Sender OK"
    assert session.rcpt("kate@fabrikam.com").render() == "250 2.1.5 Recipient OK"
    assert session.data().render() == "354 Start mail input; end with <CRLF>.<CRLF>"
    verdict = session.message(b"Subject: Test\r\n\r\nThis is a test message\r\n")
    assert (verdict.decision.code, verdict.decision.status) == (250, "2.6.0")
    assert verdict.content == b"Subject: Test\r\n\r\nThis is a test message\r\n"


# --- header firewall at the end of DATA -----------------------------------------------------------------

MESSAGE = (
    b"Received: from printer.contoso.com ([192.168.5.10])\r\n"
    b"\tby relay.contoso.com; Tue, 1 Oct 2024 10:00:00 +0000\r\n"
    b"Resent-From: ops@contoso.com\r\n"
    b"RESENT-DATE: Tue, 1 Oct 2024 10:00:00 +0000\r\n"
    b"X-MS-Exchange-Organization-SCL: -1\r\n"
    b"X-MS-Exchange-Organization-AuthAs: Internal\r\n"
    b"X-MS-Exchange-Forest-RulesExecuted: relay\r\n"
    b"From: chris@contoso.com\r\n"
    b"Subject: Test\r\n"
    b"\r\n"
    b"Received: this line is in the body\r\n"
    b"X-MS-Exchange-Organization-SCL: body too\r\n"
    b"Resent-From: body\r\n"
)
BODY = MESSAGE.split(b"\r\n\r\n", 1)[1]
ROUTING = {"received", "resent-from", "resent-date"}
ORG_FOREST = {"x-ms-exchange-organization-scl", "x-ms-exchange-organization-authas", "x-ms-exchange-forest-rulesexecuted"}


class RunAs:
    """A test plugin that adds a principal to every session (reference §4.3 principals this relay
    never assumes on its own, such as partner or Exchange servers)."""

    def __init__(self, principal: str) -> None:
        self.principal = principal

    @hookimpl
    def relayauth_principals(self) -> list[str]:
        return [self.principal]


def deliver(session: RelaySession, sender: str = "<>", recipient: str = "kate@contoso.com"):
    assert session.mail(sender).code == 250
    assert session.rcpt(recipient).code == 250
    assert session.data().code == 354
    verdict = session.message(MESSAGE)
    assert verdict.decision.code == 250
    assert verdict.content.endswith(b"\r\n\r\n" + BODY)  # the body is never touched
    return verdict


def header_block(content: bytes) -> bytes:
    return content.split(b"\r\n\r\n", 1)[0]


def test_firewall_keeps_routing_headers_with_the_right_and_strips_organization_and_forest():
    verdict = deliver(start(make_config(permission_groups=["AnonymousUsers"])))
    assert verdict.removed_headers == ORG_FOREST
    headers = header_block(verdict.content)
    assert b"Received: from printer.contoso.com" in headers
    assert b"\tby relay.contoso.com" in headers
    assert b"Resent-From: ops@contoso.com" in headers
    assert b"X-MS-Exchange" not in headers
    assert b"Subject: Test" in headers and b"From: chris@contoso.com" in headers


def test_firewall_removes_routing_headers_without_accept_headers_routing():
    config = make_config(
        permission_groups=["Custom"],
        permissions=[{"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Submit", "ms-Exch-SMTP-Accept-Any-Recipient"]}],
    )
    session = start(config)
    assert Right.ACCEPT_HEADERS_ROUTING not in session.session.rights
    verdict = deliver(session, recipient="kate@fabrikam.com")
    assert verdict.removed_headers == ROUTING | ORG_FOREST
    assert header_block(verdict.content) == b"From: chris@contoso.com\r\nSubject: Test"
    assert verdict.content == b"From: chris@contoso.com\r\nSubject: Test\r\n\r\n" + BODY


def test_firewall_removes_routing_headers_when_the_right_is_denied():
    config = make_config(permission_groups=["AnonymousUsers"], permissions=[deny("ms-Exch-Accept-Headers-Routing")])
    verdict = deliver(start(config))
    assert verdict.removed_headers == ROUTING | ORG_FOREST
    assert b"Received:" not in header_block(verdict.content)


def test_partners_group_keeps_routing_headers():
    config = make_config(permission_groups=["Partners"])
    session = start(config, plugins=[("run-as-partner", RunAs("MS Exchange\\Partner Servers"))])
    assert Right.ACCEPT_HEADERS_ROUTING in session.session.rights
    verdict = deliver(session)
    assert verdict.removed_headers == ORG_FOREST
    assert b"Received: from printer.contoso.com" in header_block(verdict.content)
    assert b"Resent-From: ops@contoso.com" in header_block(verdict.content)


def test_externally_secured_strips_organization_and_forest_headers():
    session = start(make_config(**EXTERNALLY_SECURED))
    verdict = deliver(session, sender="chris@contoso.com", recipient="kate@fabrikam.com")
    assert verdict.removed_headers == ORG_FOREST
    assert b"Received: from printer.contoso.com" in header_block(verdict.content)


def test_exchange_servers_principal_keeps_every_header():
    session = start(make_config(**EXTERNALLY_SECURED), plugins=[("run-as-exchange", RunAs("Exchange Servers"))])
    assert Right.ACCEPT_HEADERS_ORGANIZATION in session.session.rights
    assert Right.ACCEPT_HEADERS_FOREST in session.session.rights
    verdict = deliver(session)
    assert verdict.removed_headers == frozenset()
    assert verdict.content == MESSAGE


def test_firewall_with_lf_line_ends():
    config = make_config(permission_groups=["Custom"], permissions=[{"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Submit"]}])
    session = start(config)
    assert session.mail("<>").code == 250 and session.rcpt("a@contoso.com").code == 250
    raw = b"Received: a\n b\nSubject: x\n\nReceived: body\n"
    verdict = session.message(raw)
    assert verdict.content == b"Subject: x\n\nReceived: body\n"


# --- content limits at the end of DATA ------------------------------------------------------------------


def big_message(size: int) -> bytes:
    head = b"Subject: big\r\n\r\n"
    return head + b"x" * (size - len(head))


def test_message_over_the_maximum_size_is_refused_at_end_of_data():
    session = start(make_config(max_message_size=65536, **ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").code == 250  # no SIZE declared
    assert session.rcpt("kate@fabrikam.com").code == 250
    verdict = session.message(big_message(65537))
    assert verdict.decision.render() == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert session.message(big_message(65536)).decision.code == 250


def test_message_over_the_maximum_size_passes_with_bypass_message_size_limit():
    session = start(make_config(max_message_size=65536, **EXTERNALLY_SECURED))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@fabrikam.com").code == 250
    assert session.message(big_message(200_000)).decision.code == 250


def test_header_size_over_the_maximum_is_refused():
    session = start(make_config(max_header_size=100, **EXTERNALLY_SECURED))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@contoso.com").code == 250
    long_headers = b"Subject: " + b"h" * 120 + b"\r\n\r\nbody\r\n"
    assert session.message(long_headers).decision.render() == "552 5.3.4 Header size exceeds fixed maximum size"
    assert session.message(b"Subject: short\r\n\r\n" + b"b" * 500).decision.code == 250  # body does not count


def test_hop_count_over_the_maximum_is_a_mail_loop():
    session = start(make_config(max_hop_count=2, **ANONYMOUS_RELAY))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@fabrikam.com").code == 250
    two = b"Received: a\r\nReceived: b\r\nSubject: x\r\n\r\nReceived: in body\r\nReceived: in body\r\n"
    assert session.message(two).decision.code == 250
    three = b"Received: a\r\nreceived: b\r\nRECEIVED: c\r\nSubject: x\r\n\r\nbody\r\n"
    assert session.message(three).decision.render() == "554 5.4.6 Hop count exceeded - possible mail loop"


# --- AUTH --------------------------------------------------------------------------------------------


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(f"# relay users\nalice@contoso.com:{hash_password('correct horse')}\n")
    return path


def auth_config(users_file: Path, auth_mechanism=("Tls", "BasicAuth")):
    return make_config(
        users_file=users_file,
        permission_groups=["AnonymousUsers", "ExchangeUsers"],
        auth_mechanism=list(auth_mechanism),
    )


def test_auth_with_good_password_recomputes_rights(users_file):
    session = start(auth_config(users_file))
    assert session.offers_auth()
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights
    decision = session.authenticate("alice@contoso.com", "correct horse")
    assert decision.render() == "235 2.7.0 Authentication successful"
    assert session.session.authenticated
    assert session.session.principals == frozenset({"alice@contoso.com", AUTHENTICATED})
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT in session.session.rights
    assert session.mail("alice@contoso.com").render() == "250 2.1.0 Sender OK"
    assert session.rcpt("kate@fabrikam.com").render() == "250 2.1.5 Recipient OK"
    assert session.authenticate("alice@contoso.com", "correct horse").render() == "503 5.5.2 Auth command already specified"


def test_auth_with_bad_password_fails_and_stays_anonymous(users_file):
    session = start(auth_config(users_file))
    assert session.authenticate("alice@contoso.com", "wrong").render() == "535 5.7.3 Authentication unsuccessful"
    assert session.authenticate("mallory@contoso.com", "correct horse").render() == "535 5.7.3 Authentication unsuccessful"
    assert not session.session.authenticated
    assert session.session.principals == frozenset({ANONYMOUS})
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@fabrikam.com").render() == "550 5.7.1 Unable to relay"


def test_auth_on_connector_without_basic_auth_is_unrecognized(users_file):
    session = start(make_config(users_file=users_file, permission_groups=["AnonymousUsers", "ExchangeUsers"]))
    assert not session.offers_auth()
    assert session.authenticate("alice@contoso.com", "correct horse").render() == "504 5.7.4 Unrecognized authentication type"
    assert not session.session.authenticated
    assert session.session.principals == frozenset({ANONYMOUS})
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights


def test_basic_auth_require_tls_offers_auth_only_after_tls(users_file):
    session = start(auth_config(users_file, ("Tls", "BasicAuth", "BasicAuthRequireTLS")))
    assert not session.offers_auth()
    assert session.authenticate("alice@contoso.com", "correct horse").render() == "504 5.7.4 Unrecognized authentication type"
    assert not session.session.authenticated
    session.tls_started()
    assert session.offers_auth()
    session.helo("client.example")
    assert session.authenticate("alice@contoso.com", "correct horse").render() == "235 2.7.0 Authentication successful"
    assert session.session.tls and session.session.authenticated
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT in session.session.rights


def test_auth_during_a_mail_transaction_is_refused(users_file):
    """RFC 4954 §4: "An AUTH command issued during a mail transaction MUST be rejected with a 503
    reply." Otherwise a sender judged under the anonymous rights (AnonymousUsers may send as the
    authoritative domain) is combined with the relay right of the authenticated user."""
    session = start(auth_config(users_file))
    assert session.mail("chris@contoso.com").render() == "250 2.1.0 Sender OK"  # anonymous may
    decision = session.authenticate("alice@contoso.com", "correct horse")
    assert decision.code == 503, decision
    assert not session.session.authenticated
    assert session.rcpt("kate@fabrikam.com").render() == "550 5.7.1 Unable to relay"
    # authenticated first, the same user may not send as chris@contoso.com at all
    first = start(auth_config(users_file))
    assert first.authenticate("alice@contoso.com", "correct horse").code == 235
    assert first.mail("chris@contoso.com").render() == "550 5.7.1 Client does not have permissions to send as this sender"


def test_auth_before_hello_is_refused(users_file):
    session = start(auth_config(users_file), greet=False)
    assert session.authenticate("alice@contoso.com", "correct horse").render() == "503 5.5.2 Send hello first"
    assert not session.session.authenticated


def test_auth_without_users_file_fails():
    session = start(make_config(permission_groups=["AnonymousUsers", "ExchangeUsers"], auth_mechanism=["Tls", "BasicAuth"]))
    assert session.authenticate("alice@contoso.com", "anything").render() == "535 5.7.3 Authentication unsuccessful"


# --- address forms at RCPT from a host without relay rights ---------------------------------------------

HOSTILE_RECIPIENTS = [
    pytest.param("victim@external.example", id="plain-external"),
    pytest.param("<victim@external.example>", id="plain-external-bracketed"),
    pytest.param('"victim@external.example"@contoso.com', id="quoted-local-part-with-at"),
    pytest.param('<"victim@external.example"@contoso.com>', id="quoted-local-part-with-at-bracketed"),
    pytest.param('"victim%external.example"@contoso.com', id="quoted-percent"),
    pytest.param("victim%external.example@contoso.com", id="percent-hack"),
    pytest.param("victim%external.example%contoso.com@contoso.com", id="percent-hack-two-hops"),
    pytest.param("external.example!victim@contoso.com", id="bang-path"),
    pytest.param("contoso.com!external.example!victim@contoso.com", id="bang-path-two-hops"),
    pytest.param("@contoso.com:victim@external.example", id="source-route"),
    pytest.param("<@contoso.com,@relay.contoso.com:victim@external.example>", id="source-route-two-hops"),
    pytest.param("victim@[192.0.2.1]", id="ip-literal"),
    pytest.param("victim@[IPv6:2001:db8::1]", id="ipv6-literal"),
    pytest.param("victim@external.example.", id="trailing-dot"),
    pytest.param("VICTIM@EXTERNAL.EXAMPLE", id="mixed-case"),
    pytest.param("Victim@External.Example.", id="mixed-case-trailing-dot"),
    pytest.param("victim@contoso.com\r\nRCPT TO:<other@external.example>", id="crlf-injection"),
    pytest.param("vic\x00tim@contoso.com", id="nul"),
    pytest.param("victim@contoso.com\x7f", id="del"),
    pytest.param("victim@contoso\x01.com", id="control-in-domain"),
    pytest.param("victim@contoso.com\texternal.example", id="tab"),
    pytest.param("victim@contoso.com@external.example", id="two-ats"),
    pytest.param("victim@192.0.2.1", id="bare-ip"),
    pytest.param("victim@contoso.com..", id="two-trailing-dots"),
]


@pytest.mark.parametrize("recipient", HOSTILE_RECIPIENTS)
def test_hostile_address_forms_are_refused_without_relay_rights(recipient):
    session = start(make_config(permission_groups=["AnonymousUsers"]))
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights
    assert session.mail("chris@contoso.com").code == 250
    decision = session.rcpt(recipient)
    assert 500 <= decision.code <= 599, decision
    assert session.recipients == []
    assert session.data().render() == "503 5.5.2 Need rcpt command"


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        ("victim@external.example", "550 5.7.1 Unable to relay"),
        ("victim%external.example@contoso.com", "550 5.7.1 Unable to relay"),
        ("external.example!victim@contoso.com", "550 5.7.1 Unable to relay"),
        ("@contoso.com:victim@external.example", "550 5.7.1 Unable to relay"),
        ("victim@[192.0.2.1]", "550 5.7.1 Unable to relay"),
        ("victim@external.example.", "550 5.7.1 Unable to relay"),
        ("VICTIM@EXTERNAL.EXAMPLE", "550 5.7.1 Unable to relay"),
        ('"victim@external.example"@contoso.com', "501 5.1.3 Invalid address"),
        ("victim@contoso.com\r\nRCPT TO:<x@external.example>", "501 5.1.3 Invalid address"),
    ],
)
def test_hostile_address_form_replies(recipient, reply):
    session = start(make_config(permission_groups=["AnonymousUsers"]))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt(recipient).render() == reply


@pytest.mark.parametrize(
    ("recipient", "address"),
    [
        ("user@contoso.com.", "user@contoso.com"),
        ("<user@contoso.com.>", "user@contoso.com"),
        ("USER@CONTOSO.COM", "USER@contoso.com"),
        ("user%contoso.com@contoso.com", "user%contoso.com@contoso.com"),
        ('"first last"@contoso.com', '"first last"@contoso.com'),
    ],
)
def test_own_domain_forms_are_accepted_without_relay_rights(recipient, address):
    session = start(make_config(permission_groups=["AnonymousUsers"]))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt(recipient).render() == "250 2.1.5 Recipient OK"
    assert [r.address for r in session.recipients] == [address]


def test_hostile_forms_do_not_disturb_accepted_recipients():
    session = start(make_config(permission_groups=["AnonymousUsers"]))
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@contoso.com").code == 250
    for recipient in ("victim%external.example@contoso.com", "victim@[192.0.2.1]", "x@contoso.com\r\n"):
        assert session.rcpt(recipient).code >= 500
    assert session.rcpt("USER@CONTOSO.COM.").code == 250
    assert [r.address for r in session.recipients] == ["kate@contoso.com", "USER@contoso.com"]
    assert session.data().code == 354


def ms_exch(suffix: str) -> str:
    return f"ms-Exch-{suffix}"
