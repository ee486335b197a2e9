"""The plugin contract: grants fold independently of order, decisions by severity, defaults replaceable.

DESIGN.md "hooks": an explicit deny wins; otherwise any allow grants; otherwise not granted. For
decisions the most severe wins. Nothing depends on plugin registration order. Every default plugin
is registered by name so it can be blocked or replaced; a blocked relay check fails closed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from salmon_relayauth.engine.limits import ConnectionCounts
from salmon_relayauth.engine.smtp_address import parse_path

from salmon_relayauth import (
    ConnectionInfo,
    Decision,
    RelayPolicy,
    Right,
    config_from_mapping,
    hookimpl,
    make_plugin_manager,
)
from salmon_relayauth.defaults import DEFAULT_PLUGINS
from salmon_relayauth.engine.passwords import hash_password
from salmon_relayauth.model.rights import Grant
from salmon_relayauth.policy import fold_decisions
from salmon_relayauth.session import RelaySession

ANONYMOUS = "NT AUTHORITY\\ANONYMOUS LOGON"
RELAY = Right.SMTP_ACCEPT_ANY_RECIPIENT
PRINTER = "192.168.5.20"  # the plugin grants it relay
BLOCKED = "192.168.5.21"  # the plugin denies it relay
CLIENTS = [PRINTER, BLOCKED, "192.168.5.22", "192.168.5.10"]
RECIPIENTS = ["kate@contoso.com", "kate@fabrikam.com", "x@blocked.example", "y@sub.contoso.com"]


class GrantRelayToPrinter:
    """Grants relay to the anonymous principal, but only for one client address."""

    @hookimpl
    def relayauth_grants(self, connection, principals):
        if connection.remote_address == PRINTER and ANONYMOUS in principals:
            return [Grant(ANONYMOUS, RELAY, False, "plugin grant-printer")]
        return []


class DenyRelayForHost:
    """Denies relay to whoever a session from one host runs as."""

    @hookimpl
    def relayauth_grants(self, connection, principals):
        if connection.remote_address == BLOCKED:
            return [Grant(principal, RELAY, True, "plugin deny-host") for principal in sorted(principals)]
        return []


class DenyRelayForPrinter:
    @hookimpl
    def relayauth_grants(self, connection, principals):
        if connection.remote_address == PRINTER:
            return [Grant(principal, RELAY, True, "plugin deny-printer") for principal in sorted(principals)]
        return []


class RefuseBlockedDomain:
    """A third-party RCPT rule: never accept mail for blocked.example, nor for the mailbox 'blocked'."""

    @hookimpl
    def relayauth_check_rcpt(self, recipient):
        if recipient.domain == "blocked.example" or recipient.local_part == "blocked":
            return Decision(550, "5.7.1", "Recipient rejected by policy", "blocked.example is on the block list", "block-list")
        return None


class RefuseTemporarily:
    @hookimpl
    def relayauth_check_rcpt(self, recipient):
        if recipient.domain == "blocked.example":
            return Decision(451, "4.7.1", "Try again later", "greylisted", "greylist")
        return None


class RefuseHard:
    @hookimpl
    def relayauth_check_rcpt(self, recipient):
        if recipient.domain == "blocked.example":
            return Decision(554, "5.7.1", "Rejected", "hard block", "hard-block")
        return None


class AcceptEverything:
    """A careless plugin accepting every recipient: it must not override a refusal."""

    @hookimpl
    def relayauth_check_rcpt(self):
        return Decision(250, "2.1.5", "Recipient OK", "careless", "accept-all")


def _path(address: str):
    from salmon_relayauth.engine.smtp_address import parse_path

    return parse_path(address, allow_null=False)


def config(anonymous_relay: bool = False, deny_relay: bool = False, **extra):
    relay = {
        "name": "Servers",
        "bindings": ["0.0.0.0:25"],
        "remote_ip_ranges": ["192.168.5.0/24"],
        "permission_groups": ["AnonymousUsers"],
        "permissions": [],
    }
    if anonymous_relay:
        relay["permissions"].append({"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]})
    if deny_relay:
        relay["permissions"].append({"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"], "deny": True})
    relay.update(extra)
    return config_from_mapping(
        {
            "server": {"fqdn": "relay.contoso.com"},
            "accepted_domains": [{"domain": "*.contoso.com"}],
            "connectors": [
                {
                    "name": "Default Frontend",
                    "bindings": ["0.0.0.0:25"],
                    "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
                    "permission_groups": ["AnonymousUsers"],
                },
                relay,
            ],
        }
    )


def policy(cfg, plugins=(), disabled=()):
    return RelayPolicy(cfg, make_plugin_manager(plugins=plugins, disabled=disabled, load_entrypoints=False))


def conversation(pol: RelayPolicy, client: str, recipients=RECIPIENTS):
    """Everything observable of one session: connector, rights with traces, MAIL and every RCPT."""
    session = RelaySession(pol, ConnectionInfo("10.1.1.1", 25, client), session_id="0" * 16)
    session.open()
    session.helo("client.example")
    state = session.session
    mail = session.mail("chris@contoso.com")
    rcpts = []
    for recipient in recipients:
        session.reset()
        session.helo("client.example")
        session.mail("chris@contoso.com")
        rcpts.append(session.rcpt(recipient))
    return state.connector.name, state.rights, mail, tuple(rcpts)


def grid(pol: RelayPolicy):
    return {client: conversation(pol, client) for client in CLIENTS}


def replies(pol: RelayPolicy, client: str):
    return [decision.render() for decision in conversation(pol, client)[3]]


# --- grants: order independence ---------------------------------------------------------------------


def test_grant_and_deny_plugins_give_identical_decisions_in_either_order():
    cfg = config()
    grant, deny = ("grant-printer", GrantRelayToPrinter()), ("deny-host", DenyRelayForHost())
    forward = grid(policy(cfg, [grant, deny]))
    backward = grid(policy(cfg, [deny, grant]))
    assert forward == backward
    # and the grid is what the two rules say
    assert replies(policy(cfg, [grant, deny]), PRINTER) == [
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
        "250 2.1.5 Recipient OK",
    ]
    for client in (BLOCKED, "192.168.5.22"):
        assert replies(policy(cfg, [deny, grant]), client) == [
            "250 2.1.5 Recipient OK",
            "550 5.7.1 Unable to relay",
            "550 5.7.1 Unable to relay",
            "250 2.1.5 Recipient OK",
        ]


def test_many_plugins_in_every_order_give_identical_decisions():
    cfg = config(anonymous_relay=True)
    plugins = [
        ("grant-printer", GrantRelayToPrinter()),
        ("deny-host", DenyRelayForHost()),
        ("block-list", RefuseBlockedDomain()),
        ("accept-all", AcceptEverything()),
    ]
    results = [grid(policy(cfg, list(order))) for order in itertools.permutations(plugins)]
    assert all(result == results[0] for result in results[1:])
    assert replies(policy(cfg, plugins), BLOCKED)[1] == "550 5.7.1 Unable to relay"
    assert replies(policy(cfg, plugins), "192.168.5.22")[1] == "250 2.1.5 Recipient OK"
    assert replies(policy(cfg, plugins), "192.168.5.22")[2] == "550 5.7.1 Recipient rejected by policy"


def test_plugin_grant_is_traced_by_its_origin():
    pol = policy(config(), [("grant-printer", GrantRelayToPrinter())])
    rights = conversation(pol, PRINTER)[1]
    relay = next(trace for trace in rights.traces if trace.right is RELAY)
    assert relay.granted
    assert [grant.origin for grant in relay.allowed_by] == ["plugin grant-printer"]
    other = conversation(pol, "192.168.5.22")[1]
    assert RELAY not in other


def test_plugin_deny_beats_config_allow():
    cfg = config(anonymous_relay=True)
    for order in ([("deny-host", DenyRelayForHost())], [("deny-host", DenyRelayForHost()), ("grant-printer", GrantRelayToPrinter())]):
        pol = policy(cfg, order)
        assert replies(pol, "192.168.5.22")[1] == "250 2.1.5 Recipient OK"  # config allow
        assert replies(pol, BLOCKED)[1] == "550 5.7.1 Unable to relay"  # plugin deny wins
        rights = conversation(pol, BLOCKED)[1]
        relay = next(trace for trace in rights.traces if trace.right is RELAY)
        assert not relay.granted
        assert [g.origin for g in relay.denied_by] == ["plugin deny-host"]
        assert relay.allowed_by and relay.allowed_by[0].origin.startswith("permission entry 1")


def test_config_deny_beats_plugin_allow():
    pol = policy(config(deny_relay=True), [("grant-printer", GrantRelayToPrinter())])
    assert replies(pol, PRINTER)[1] == "550 5.7.1 Unable to relay"
    relay = next(trace for trace in conversation(pol, PRINTER)[1].traces if trace.right is RELAY)
    assert [g.origin for g in relay.allowed_by] == ["plugin grant-printer"]
    assert relay.denied_by and relay.denied_by[0].origin.startswith("permission entry 1")


def test_plugin_deny_beats_plugin_allow_in_either_order():
    cfg = config()
    a, b = ("grant-printer", GrantRelayToPrinter()), ("deny-printer", DenyRelayForPrinter())
    for order in ([a, b], [b, a]):
        assert replies(policy(cfg, order), PRINTER)[1] == "550 5.7.1 Unable to relay"


# --- decisions: the most severe wins --------------------------------------------------------------------


@pytest.mark.parametrize("cfg_kwargs", [{"anonymous_relay": True}, {}])
def test_plugin_refusal_beats_default_accept_in_either_order(cfg_kwargs):
    cfg = config(**cfg_kwargs)
    for plugins in ([("block-list", RefuseBlockedDomain())], [("block-list", RefuseBlockedDomain()), ("accept-all", AcceptEverything())],
                    [("accept-all", AcceptEverything()), ("block-list", RefuseBlockedDomain())]):
        pol = policy(cfg, plugins)
        session = RelaySession(pol, ConnectionInfo("10.1.1.1", 25, "192.168.5.22"))
        session.open()
        session.helo("client.example")
        assert session.mail("chris@contoso.com").code == 250
        # the default relay check accepts this one (accepted domain); the plugin refuses it
        assert pol.judge_rcpt(session.session, session.sender, _path("kate@contoso.com"), 0).accepted
        decision = session.rcpt("blocked@contoso.com")
        assert decision.render() == "550 5.7.1 Recipient rejected by policy"
        assert decision.source == "block-list"
        assert session.recipients == []
        assert session.rcpt("kate@contoso.com").render() == "250 2.1.5 Recipient OK"


def test_careless_accept_does_not_open_the_relay():
    pol = policy(config(), [("accept-all", AcceptEverything())])
    assert replies(pol, "192.168.5.22")[1] == "550 5.7.1 Unable to relay"


def test_two_refusals_most_severe_wins_deterministically():
    cfg = config(anonymous_relay=True)
    soft, hard, policy_refusal = ("greylist", RefuseTemporarily()), ("hard-block", RefuseHard()), ("block-list", RefuseBlockedDomain())
    seen = set()
    for order in itertools.permutations([soft, hard, policy_refusal]):
        decision = conversation(policy(cfg, list(order)), "192.168.5.22")[3][2]
        seen.add(decision)
    assert len(seen) == 1
    (decision,) = seen
    assert decision.render() == "554 5.7.1 Rejected"
    assert decision.source == "hard-block"
    # 5xx over 4xx, whichever comes first
    for order in ([soft, policy_refusal], [policy_refusal, soft]):
        decision = conversation(policy(cfg, order), "192.168.5.22")[3][2]
        assert decision.render() == "550 5.7.1 Recipient rejected by policy"


def test_fold_decisions_is_order_independent_and_falls_back_when_silent():
    silent = Decision(550, "5.7.1", "Unable to relay", "nobody", "policy")
    decisions = [
        Decision(250, "2.1.5", "Recipient OK", "", "a"),
        Decision(452, "4.5.3", "Too many recipients", "", "b"),
        Decision(550, "5.7.1", "Unable to relay", "", "c"),
        Decision(550, "5.7.1", "Unable to relay", "", "d"),
        Decision(550, "5.1.1", "User unknown", "", "e"),
        None,
    ]
    results = {fold_decisions(list(order), silent) for order in itertools.permutations(decisions)}
    assert len(results) == 1
    assert next(iter(results)).code == 550
    assert fold_decisions([None, None], silent) is silent
    assert fold_decisions([], silent) is silent


# --- blocking defaults fails closed ---------------------------------------------------------------------


@pytest.mark.parametrize("client", [PRINTER, "192.168.5.22", "203.0.113.7"])
def test_blocked_relay_check_refuses_every_recipient(client):
    cfg = config(anonymous_relay=True)
    pol = policy(cfg, disabled=["relayauth.relay"])
    assert pol.plugin_manager.get_plugin("relayauth.relay") is None
    for decision in conversation(pol, client)[3]:
        assert decision.render() == "550 5.7.1 Unable to relay"
    # the rights are unchanged: only the check is gone
    if client != "203.0.113.7":
        assert RELAY in conversation(pol, client)[1]


def test_blocked_relay_check_via_config_fails_closed():
    data = {
        "accepted_domains": [{"domain": "contoso.com"}],
        "plugins": {"disabled": ["relayauth.relay"]},
        "connectors": [
            {"name": "Relay", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["192.168.5.0/24"], "auth_mechanism": ["ExternalAuthoritative"], "permission_groups": ["ExchangeServers"]}
        ],
    }
    cfg = config_from_mapping(data)
    pol = RelayPolicy(cfg, make_plugin_manager(disabled=cfg.plugins.disabled, load_entrypoints=False))
    session = RelaySession(pol, ConnectionInfo("10.1.1.1", 25, "192.168.5.9"))
    session.open()
    session.helo("client.example")
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@contoso.com").render() == "550 5.7.1 Unable to relay"
    assert session.rcpt("kate@fabrikam.com").render() == "550 5.7.1 Unable to relay"
    assert session.recipients == []


def test_blocked_sender_check_refuses_mail():
    pol = policy(config(anonymous_relay=True), disabled=["relayauth.sender"])
    for client in (PRINTER, "203.0.113.7"):
        session = RelaySession(pol, ConnectionInfo("10.1.1.1", 25, client))
        session.open()
        session.helo("client.example")
        for sender in ("chris@contoso.com", "<>", "someone@fabrikam.com"):
            decision = session.mail(sender)
            assert decision.code == 550 and decision.status.startswith("5.7."), decision
            assert session.sender is None
        assert session.rcpt("kate@contoso.com").render() == "503 5.5.2 Need mail command"


# --- every default plugin can be blocked and replaced ------------------------------------------------


@pytest.fixture(scope="module")
def scenario_config(tmp_path_factory):
    users = tmp_path_factory.mktemp("users") / "users"
    users.write_text(f"alice@contoso.com:{hash_password('pw')}\n")
    return config_from_mapping(
        {
            "server": {"fqdn": "relay.contoso.com"},
            "accepted_domains": [{"domain": "contoso.com"}],
            "authentication": {"users_file": str(users)},
            "connectors": [
                {
                    "name": "Wide Relay",
                    "bindings": ["0.0.0.0:25"],
                    "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
                    "auth_mechanism": ["Tls", "BasicAuth"],
                    "permission_groups": ["AnonymousUsers", "ExchangeUsers"],
                    "permissions": [{"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}],
                    "max_recipients_per_message": 1,
                    "max_message_size": 65536,
                    "message_rate_limit": 10,
                    "max_inbound_connection": 3,
                }
            ],
        }
    )


def observe(cfg, manager) -> dict:
    """One observation per default plugin's job, in a fixed scenario."""
    pol = RelayPolicy(cfg, manager)
    seen: dict = {"open_relay": sorted(p.message for p in pol.plugin_problems())}
    session = RelaySession(pol, ConnectionInfo("10.1.1.1", 25, "198.51.100.7"), session_id="0" * 16)
    seen["selection"] = session.open().code
    if session.selection is None:
        return seen
    session.helo("client.example")
    seen["principals"] = sorted(session.session.principals)
    seen["rights"] = sorted(r.value for r in session.session.rights.granted)
    seen["sender"] = session.mail("chris@contoso.com").render()
    seen["relay"] = session.rcpt("kate@fabrikam.com").render()
    seen["recipient_limit"] = session.rcpt("second@contoso.com").render()
    sender = parse_path("<chris@contoso.com>", allow_null=True)
    seen["message_rate"] = sorted(limit.key for limit in pol.rate_limits(session.session, sender))
    full = pol.connection_limit(session.session.connector, session.connection, ConnectionCounts(3, 0))
    seen["connection_limits"] = full.render() if full is not None else None
    seen["content"] = session.message(b"Subject: x\r\n\r\n" + b"x" * 70000).decision.render()
    small = session.message(b"Received: a\r\nX-MS-Exchange-Organization-SCL: 9\r\nSubject: x\r\n\r\nbody\r\n")
    seen["header_firewall"] = (small.decision.render(), sorted(small.removed_headers))
    auth = RelaySession(pol, ConnectionInfo("10.1.1.1", 25, "198.51.100.7"))
    auth.open()
    auth.helo("client.example")
    seen["users_file"] = auth.authenticate("alice@contoso.com", "pw").render()
    return seen


# which observation each default plugin's removal must change
AFFECTS = {
    "relayauth.selection": "selection",
    "relayauth.principals": "principals",
    "relayauth.permissions": "rights",
    "relayauth.sender": "sender",
    "relayauth.relay": "relay",
    "relayauth.recipient_limit": "recipient_limit",
    "relayauth.content": "content",
    "relayauth.header_firewall": "header_firewall",
    "relayauth.open_relay": "open_relay",
    "relayauth.users_file": "users_file",
    "relayauth.message_rate": "message_rate",
    "relayauth.connection_limits": "connection_limits",
}


def test_every_default_plugin_is_covered():
    assert set(AFFECTS) == set(DEFAULT_PLUGINS)


def test_baseline_observation(scenario_config):
    seen = observe(scenario_config, make_plugin_manager(load_entrypoints=False))
    assert seen["selection"] == 220
    assert seen["principals"] == [ANONYMOUS]
    assert "ms-Exch-SMTP-Accept-Any-Recipient" in seen["rights"]
    assert seen["sender"] == "250 2.1.0 Sender OK"
    assert seen["relay"] == "250 2.1.5 Recipient OK"
    assert seen["recipient_limit"] == "452 4.5.3 Too many recipients"
    assert seen["content"] == "552 5.3.4 Message size exceeds fixed maximum message size"
    assert seen["header_firewall"] == ("250 2.6.0 Message accepted", ["x-ms-exchange-organization-scl"])
    assert len(seen["open_relay"]) == 1
    assert "0.0.0.0-255.255.255.255" in seen["open_relay"][0]
    assert "ms-Exch-SMTP-Accept-Any-Recipient" in seen["open_relay"][0]
    assert seen["users_file"] == "235 2.7.0 Authentication successful"


@pytest.mark.parametrize("name", sorted(DEFAULT_PLUGINS))
def test_default_plugin_can_be_blocked_and_replaced(name, scenario_config):
    baseline = observe(scenario_config, make_plugin_manager(load_entrypoints=False))

    blocked_manager = make_plugin_manager(disabled=[name], load_entrypoints=False)
    assert blocked_manager.is_blocked(name)
    assert blocked_manager.get_plugin(name) is None
    blocked = observe(scenario_config, blocked_manager)
    key = AFFECTS[name]
    assert blocked.get(key) != baseline[key], f"blocking {name} changed nothing in {key!r}"

    replacement = DEFAULT_PLUGINS[name]()
    replaced_manager = make_plugin_manager(
        disabled=[name], plugins=[(f"site.{name}", replacement)], load_entrypoints=False
    )
    assert replaced_manager.get_plugin(name) is None
    assert replaced_manager.get_plugin(f"site.{name}") is replacement
    assert observe(scenario_config, replaced_manager) == baseline


def test_blocked_relay_check_replaced_by_a_stricter_rule():
    class OnlyFabrikam:
        """A site's own relay rule: relay to fabrikam.com only, whatever the rights."""

        @hookimpl
        def relayauth_check_rcpt(self, recipient):
            if recipient.domain == "fabrikam.com":
                return Decision(250, "2.1.5", "Recipient OK", "fabrikam.com is a partner", "only-fabrikam")
            return None

    pol = policy(config(anonymous_relay=True), plugins=[("only-fabrikam", OnlyFabrikam())], disabled=["relayauth.relay"])
    assert replies(pol, "192.168.5.22") == [
        "550 5.7.1 Unable to relay",
        "250 2.1.5 Recipient OK",
        "550 5.7.1 Unable to relay",
        "550 5.7.1 Unable to relay",
    ]


def test_blocked_selection_replaced_by_a_site_rule():
    class OnlyServers:
        @hookimpl
        def relayauth_select_connector(self, config, connection):
            from salmon_relayauth import ConnectorSelection

            chosen = config.connector("Servers")
            if connection.remote_address.startswith("192.168.5."):
                return ConnectorSelection(chosen, chosen.remote_ip_ranges[0], False, "only-servers")
            return None

    pol = policy(config(), plugins=[("only-servers", OnlyServers())], disabled=["relayauth.selection"])
    assert conversation(pol, "192.168.5.22")[0] == "Servers"
    session = RelaySession(pol, ConnectionInfo("10.1.1.1", 25, "203.0.113.7"))
    assert session.open().render().startswith("421 4.3.2")


def test_replacement_registered_under_the_blocked_name_is_not_silently_dropped():
    """Blocking a default and registering the replacement under the same name is the obvious way
    to replace it. Fail closed: the replacement either runs or start-up stops naming it; it must
    never be dropped without a word (for ``relayauth.open_relay`` that would silently switch the
    open-relay protection off)."""
    from salmon_relayauth import PluginLoadError

    for name in sorted(DEFAULT_PLUGINS):
        replacement = DEFAULT_PLUGINS[name]()
        try:
            manager = make_plugin_manager(disabled=[name], plugins=[(name, replacement)], load_entrypoints=False)
        except PluginLoadError as error:
            assert repr(name) in str(error)
            continue
        assert manager.get_plugin(name) is replacement, f"replacement for {name!r} was silently dropped"
