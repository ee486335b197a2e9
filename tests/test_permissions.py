"""Permission groups, explicit entries, principals and the grant fold (reference §2, §3.4, §4.3, §10.2)."""

from __future__ import annotations

import random

import pytest

from salmon_relayauth import (
    AuthMechanism,
    ConfigError,
    ConnectionInfo,
    PermissionGroup,
    Principal,
    RelayPolicy,
    Right,
    config_from_mapping,
    make_plugin_manager,
    parse_enum,
)
from salmon_relayauth.engine.permissions import GROUP_GRANTS, connector_grants, fold_grants
from salmon_relayauth.engine.principals import default_principals
from salmon_relayauth.model.rights import Grant
from salmon_relayauth.session import RelaySession

ANONYMOUS = "NT AUTHORITY\\ANONYMOUS LOGON"
AUTHENTICATED = "NT AUTHORITY\\Authenticated Users"
EXTERNALLY_SECURED = "MS Exchange\\Externally Secured Servers"
CLIENT = ConnectionInfo("10.0.0.1", 25, "192.168.5.10")

# --- the tables of the reference, written out independently of the code -------------------------

# §2 / source document: "Externally secured" rights (also ExchangeLegacyInterop's).
EXTERNALLY_SECURED_RIGHTS = {
    "ms-Exch-Accept-Headers-Routing",
    "ms-Exch-Bypass-Anti-Spam",
    "ms-Exch-Bypass-Message-Size-Limit",
    "ms-Exch-SMTP-Accept-Any-Recipient",
    "ms-Exch-SMTP-Accept-Any-Sender",
    "ms-Exch-SMTP-Accept-Authentication-Flag",
    "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
    "ms-Exch-SMTP-Accept-Exch50",
    "ms-Exch-SMTP-Submit",
}
# §2: Exchange Servers / Edge / Hub: the 11 documented rights plus the internal-only Accept rights.
EXCHANGE_SERVER_RIGHTS = EXTERNALLY_SECURED_RIGHTS | {
    "ms-Exch-Accept-Headers-Forest",
    "ms-Exch-Accept-Headers-Organization",
    "ms-Exch-SMTP-Accept-Xattr",
    "ms-Exch-SMTP-Accept-XProxyFrom",
    "ms-Exch-SMTP-Accept-XSessionParams",
    "ms-Exch-SMTP-Accept-XShadow",
    "ms-Exch-SMTP-Accept-XSysProbe",
}
REFERENCE_GROUPS: dict[str, dict[Principal, set[str]]] = {
    "AnonymousUsers": {
        Principal.ANONYMOUS_LOGON: {
            "ms-Exch-Accept-Headers-Routing",
            "ms-Exch-SMTP-Accept-Any-Sender",
            "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
            "ms-Exch-SMTP-Submit",
        }
    },
    "ExchangeUsers": {
        Principal.AUTHENTICATED_USERS: {
            "ms-Exch-Accept-Headers-Routing",
            "ms-Exch-Bypass-Anti-Spam",
            "ms-Exch-SMTP-Accept-Any-Recipient",
            "ms-Exch-SMTP-Submit",
        }
    },
    "ExchangeServers": {
        Principal.EXCHANGE_SERVERS: EXCHANGE_SERVER_RIGHTS,
        Principal.EDGE_TRANSPORT_SERVERS: EXCHANGE_SERVER_RIGHTS,
        Principal.HUB_TRANSPORT_SERVERS: EXCHANGE_SERVER_RIGHTS,
        Principal.EXTERNALLY_SECURED_SERVERS: EXTERNALLY_SECURED_RIGHTS,
    },
    "ExchangeLegacyServers": {Principal.EXCHANGE_LEGACY_INTEROP: EXTERNALLY_SECURED_RIGHTS},
    "Partners": {Principal.PARTNER_SERVERS: {"ms-Exch-Accept-Headers-Routing", "ms-Exch-SMTP-Submit"}},
    "Custom": {},
    "None": {},
}

# The source document's two methods and the rights its table lists for each.
ANONYMOUS_METHOD_RIGHTS = {
    "ms-Exch-Accept-Headers-Routing",
    "ms-Exch-SMTP-Accept-Any-Recipient",
    "ms-Exch-SMTP-Accept-Any-Sender",
    "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
    "ms-Exch-SMTP-Submit",
}
EXTERNALLY_SECURED_METHOD_RIGHTS = {
    "ms-Exch-Accept-Headers-Routing",
    "ms-Exch-Bypass-Anti-Spam",
    "ms-Exch-Bypass-Message-Size-Limit",
    "ms-Exch-SMTP-Accept-Any-Recipient",
    "ms-Exch-SMTP-Accept-Any-Sender",
    "ms-Exch-SMTP-Accept-Authentication-Flag",
    "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
    "ms-Exch-SMTP-Accept-Exch50",
    "ms-Exch-SMTP-Submit",
}


def make_config(accepted: tuple[str, ...] = ("contoso.com",), **connector: object):
    table = {"name": "Anonymous Relay", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["192.168.5.10"]}
    table.update(connector)
    return config_from_mapping({"accepted_domains": [{"domain": d} for d in accepted], "connectors": [table]})


def open_session(config, connection: ConnectionInfo = CLIENT) -> RelaySession:
    policy = RelayPolicy(config, make_plugin_manager(disabled=config.plugins.disabled, load_entrypoints=False))
    session = RelaySession(policy, connection)
    assert session.open().code == 220
    assert session.helo("client.example").code == 250
    return session


def granted(session: RelaySession) -> set[str]:
    return {right.value for right in session.session.rights.granted}


def trace(rights, right: Right):
    return next(t for t in rights.traces if t.right is right)


# --- GROUP_GRANTS against reference §2 -------------------------------------------------------------


def test_group_grants_cover_every_permission_group_exactly():
    assert {group.value for group in GROUP_GRANTS} == set(REFERENCE_GROUPS)
    assert {group.value for group in PermissionGroup} == set(REFERENCE_GROUPS)


@pytest.mark.parametrize("group", sorted(REFERENCE_GROUPS))
def test_group_grants_match_reference_table(group):
    actual = {
        principal: {right.value for right in rights}
        for principal, rights in GROUP_GRANTS[PermissionGroup(group)].items()
    }
    assert actual == REFERENCE_GROUPS[group]


def test_externally_secured_principal_lacks_forest_organization_and_internal_rights():
    servers = GROUP_GRANTS[PermissionGroup.EXCHANGE_SERVERS]
    secured = {right.value for right in servers[Principal.EXTERNALLY_SECURED_SERVERS]}
    assert len(secured) == 9
    for missing in (
        "ms-Exch-Accept-Headers-Forest",
        "ms-Exch-Accept-Headers-Organization",
        "ms-Exch-SMTP-Accept-XShadow",
        "ms-Exch-SMTP-Accept-XProxyFrom",
    ):
        assert missing not in secured
        assert Right(missing) in servers[Principal.EXCHANGE_SERVERS]
        assert Right(missing) in servers[Principal.EDGE_TRANSPORT_SERVERS]
        assert Right(missing) in servers[Principal.HUB_TRANSPORT_SERVERS]


def test_anonymous_users_group_never_grants_relay():
    anonymous = GROUP_GRANTS[PermissionGroup.ANONYMOUS_USERS][Principal.ANONYMOUS_LOGON]
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in anonymous
    assert Right.BYPASS_MESSAGE_SIZE_LIMIT not in anonymous


def test_well_known_principal_spellings():
    assert Principal.ANONYMOUS_LOGON.value == ANONYMOUS
    assert Principal.AUTHENTICATED_USERS.value == AUTHENTICATED
    assert Principal.EXTERNALLY_SECURED_SERVERS.value == EXTERNALLY_SECURED
    assert Principal.EDGE_TRANSPORT_SERVERS.value == "MS Exchange\\Edge Transport Servers"
    assert Principal.HUB_TRANSPORT_SERVERS.value == "MS Exchange\\Hub Transport Servers"
    assert Principal.PARTNER_SERVERS.value == "MS Exchange\\Partner Servers"
    assert Principal.EXCHANGE_SERVERS.value.endswith("Exchange Servers")
    assert Principal.EXCHANGE_LEGACY_INTEROP.value.endswith("ExchangeLegacyInterop")


@pytest.mark.parametrize("group", sorted(REFERENCE_GROUPS))
def test_connector_with_one_group_gives_each_principal_exactly_its_rights(group):
    extra = {"auth_mechanism": ["ExternalAuthoritative"]} if group == "ExchangeServers" else {}
    config = make_config(permission_groups=[group], **extra)
    grants = connector_grants(config.connectors[0])
    assert {grant.origin for grant in grants} <= {f"permission group {group}"}
    assert not any(grant.deny for grant in grants)
    for principal in Principal:
        folded = fold_grants(grants, [principal.value])
        expected = REFERENCE_GROUPS[group].get(principal, set())
        assert {right.value for right in folded.granted} == expected, principal


# --- spellings -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "group"),
    [
        ("Anonymous", PermissionGroup.ANONYMOUS_USERS),
        ("anonymous", PermissionGroup.ANONYMOUS_USERS),
        ("AnonymousUsers", PermissionGroup.ANONYMOUS_USERS),
        ("ANONYMOUSUSERS", PermissionGroup.ANONYMOUS_USERS),
        ("Partner", PermissionGroup.PARTNERS),
        ("partners", PermissionGroup.PARTNERS),
        ("exchangeservers", PermissionGroup.EXCHANGE_SERVERS),
    ],
)
def test_permission_group_spellings_parse(spelling, group):
    assert parse_enum(PermissionGroup, spelling) is group


def test_group_aliases_in_config_give_the_same_rights():
    aliased = make_config(permission_groups=["Anonymous", "Partner"]).connectors[0]
    canonical = make_config(permission_groups=["AnonymousUsers", "Partners"]).connectors[0]
    assert aliased.permission_groups == frozenset({PermissionGroup.ANONYMOUS_USERS, PermissionGroup.PARTNERS})
    for principal in (ANONYMOUS, Principal.PARTNER_SERVERS.value):
        assert fold_grants(connector_grants(aliased), [principal]).granted == fold_grants(
            connector_grants(canonical), [principal]
        ).granted
    assert fold_grants(connector_grants(aliased), [ANONYMOUS]).granted == {
        Right(value) for value in REFERENCE_GROUPS["AnonymousUsers"][Principal.ANONYMOUS_LOGON]
    }


def test_unknown_permission_group_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError) as caught:
        make_config(permission_groups=["Anonymus"])
    assert "permission_groups" in str(caught.value)
    assert "Anonymus" in str(caught.value)


@pytest.mark.parametrize(
    "spelling",
    [
        "Ms-Exch-SMTP-Accept-Any-Recipient",
        "ms-Exch-SMTP-Accept-Any-Recipient",
        "MS-EXCH-SMTP-ACCEPT-ANY-RECIPIENT",
        "ms-exch-smtp-accept-any-recipient",
    ],
)
def test_right_parsing_is_case_insensitive(spelling):
    assert parse_enum(Right, spelling) is Right.SMTP_ACCEPT_ANY_RECIPIENT
    config = make_config(permission_groups=["AnonymousUsers"], permissions=[{"user": ANONYMOUS, "extended_rights": [spelling]}])
    assert config.connectors[0].permissions[0].extended_rights == frozenset({Right.SMTP_ACCEPT_ANY_RECIPIENT})


def test_exch50_alias_spelling_parses():
    assert parse_enum(Right, "ms-Exch-Accept-Exch50") is Right.SMTP_ACCEPT_EXCH50


def test_unknown_right_is_a_config_error_naming_the_entry():
    with pytest.raises(ConfigError) as caught:
        make_config(
            permission_groups=["AnonymousUsers"],
            permissions=[{"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipent"]}],
        )
    message = str(caught.value)
    assert "permissions[0].extended_rights[0]" in message
    assert "ms-Exch-SMTP-Accept-Any-Recipent" in message


# --- the source document's two methods -------------------------------------------------------------


def test_method_anonymous_gives_exactly_the_documented_five_rights():
    # Set-ReceiveConnector "Anonymous Relay" -PermissionGroups AnonymousUsers
    # Add-ADPermission -User "NT AUTHORITY\ANONYMOUS LOGON" -ExtendedRights "Ms-Exch-SMTP-Accept-Any-Recipient"
    config = make_config(
        permission_groups=["AnonymousUsers"],
        permissions=[{"user": "NT AUTHORITY\\ANONYMOUS LOGON", "extended_rights": ["Ms-Exch-SMTP-Accept-Any-Recipient"]}],
    )
    session = open_session(config)
    assert session.session.principals == frozenset({ANONYMOUS})
    assert granted(session) == ANONYMOUS_METHOD_RIGHTS
    assert len(granted(session)) == 5
    # "Messages don't bypass antispam or message size limit checks"
    assert Right.BYPASS_ANTI_SPAM not in session.session.rights
    assert Right.BYPASS_MESSAGE_SIZE_LIMIT not in session.session.rights


def test_method_externally_secured_gives_exactly_the_documented_nine_rights():
    # Set-ReceiveConnector "Anonymous Relay" -AuthMechanism ExternalAuthoritative -PermissionGroups ExchangeServers
    config = make_config(auth_mechanism=["ExternalAuthoritative"], permission_groups=["ExchangeServers"])
    session = open_session(config)
    assert session.session.principals == frozenset({EXTERNALLY_SECURED})
    assert granted(session) == EXTERNALLY_SECURED_METHOD_RIGHTS
    assert len(granted(session)) == 9
    assert not session.session.authenticated  # principal from connect, no AUTH needed


def test_both_methods_let_the_host_relay_the_documented_test_message():
    for config in (
        make_config(
            permission_groups=["AnonymousUsers"],
            permissions=[{"user": ANONYMOUS, "extended_rights": ["Ms-Exch-SMTP-Accept-Any-Recipient"]}],
        ),
        make_config(auth_mechanism=["ExternalAuthoritative"], permission_groups=["ExchangeServers"]),
    ):
        session = open_session(config)
        assert session.mail("chris@contoso.com").render() == "250 2.1.0 Sender OK"
        assert session.rcpt("kate@fabrikam.com").render() == "250 2.1.5 Recipient OK"
        assert session.data().render() == "354 Start mail input; end with <CRLF>.<CRLF>"


def test_anonymous_users_group_alone_does_not_relay():
    session = open_session(make_config(permission_groups=["AnonymousUsers"]))
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@fabrikam.com").render() == "550 5.7.1 Unable to relay"


# --- deny over allow -------------------------------------------------------------------------------


def test_explicit_deny_removes_a_group_granted_right():
    config = make_config(
        permission_groups=["AnonymousUsers"],
        permissions=[{"user": ANONYMOUS, "extended_rights": ["ms-Exch-Accept-Headers-Routing"], "deny": True}],
    )
    session = open_session(config)
    rights = session.session.rights
    assert Right.ACCEPT_HEADERS_ROUTING not in rights
    assert Right.SMTP_SUBMIT in rights  # only the denied right is gone
    routing = trace(rights, Right.ACCEPT_HEADERS_ROUTING)
    assert routing.granted is False
    assert [grant.origin for grant in routing.allowed_by] == ["permission group AnonymousUsers"]
    assert len(routing.denied_by) == 1
    assert routing.denied_by[0].origin.startswith("permission entry 1")
    assert routing.denied_by[0].deny is True


def test_explicit_deny_beats_explicit_allow_of_the_same_right():
    config = make_config(
        permission_groups=["AnonymousUsers"],
        permissions=[
            {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]},
            {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"], "deny": True},
        ],
    )
    session = open_session(config)
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights
    relay = trace(session.session.rights, Right.SMTP_ACCEPT_ANY_RECIPIENT)
    assert [g.origin.split(" (")[0] for g in relay.allowed_by] == ["permission entry 1"]
    assert [g.origin.split(" (")[0] for g in relay.denied_by] == ["permission entry 2"]
    assert session.mail("chris@contoso.com").code == 250
    assert session.rcpt("kate@fabrikam.com").render() == "550 5.7.1 Unable to relay"


def test_deny_wins_regardless_of_grant_order():
    allows = [Grant(ANONYMOUS, right, False, f"allow {index}") for index, right in enumerate(Right)]
    allows += [Grant(ANONYMOUS, Right.SMTP_ACCEPT_ANY_RECIPIENT, False, "another allow")]
    denies = [
        Grant(ANONYMOUS, Right.SMTP_ACCEPT_ANY_RECIPIENT, True, "deny relay"),
        Grant("nt authority\\anonymous logon", Right.ACCEPT_HEADERS_FOREST, True, "deny forest"),
    ]
    grants = allows + denies
    expected_granted = frozenset(Right) - {Right.SMTP_ACCEPT_ANY_RECIPIENT, Right.ACCEPT_HEADERS_FOREST}
    first = fold_grants(grants, [ANONYMOUS])
    assert first.granted == expected_granted
    rng = random.Random(20240611)
    for _ in range(200):
        shuffled = grants[:]
        rng.shuffle(shuffled)
        result = fold_grants(shuffled, [ANONYMOUS])
        assert result.granted == expected_granted
        assert result.traces == first.traces  # the traces too are independent of order


def test_deny_to_one_session_principal_beats_allow_to_another():
    grants = [
        Grant(AUTHENTICATED, Right.SMTP_SUBMIT, False, "permission group ExchangeUsers"),
        Grant("alice", Right.SMTP_SUBMIT, True, "permission entry 1"),
    ]
    for order in (grants, grants[::-1]):
        assert Right.SMTP_SUBMIT not in fold_grants(order, ["alice", AUTHENTICATED])
        assert Right.SMTP_SUBMIT in fold_grants(order, ["bob", AUTHENTICATED])


def test_deny_for_a_principal_the_session_does_not_hold_has_no_effect():
    grants = [
        Grant(ANONYMOUS, Right.SMTP_SUBMIT, False, "group"),
        Grant(AUTHENTICATED, Right.SMTP_SUBMIT, True, "deny authenticated"),
    ]
    assert Right.SMTP_SUBMIT in fold_grants(grants, [ANONYMOUS])
    assert Right.SMTP_SUBMIT not in fold_grants(grants, [AUTHENTICATED])


# --- no grant means not granted --------------------------------------------------------------------


def test_no_grants_grant_nothing():
    result = fold_grants([], [ANONYMOUS])
    assert result.granted == frozenset()
    assert len(result.traces) == len(Right)
    assert all(not t.granted and t.allowed_by == () and t.denied_by == () for t in result.traces)


def test_grants_to_other_principals_do_not_apply():
    grants = [Grant(AUTHENTICATED, right, False, "group") for right in Right]
    assert fold_grants(grants, [ANONYMOUS]).granted == frozenset()
    assert fold_grants(grants, []).granted == frozenset()


def test_connector_with_group_none_gives_anonymous_nothing():
    session = open_session(make_config(permission_groups=["None"]))
    assert granted(session) == set()
    assert session.mail("chris@contoso.com").render() == "530 5.7.1 Client was not authenticated"


def test_custom_group_with_explicit_entries_grants_only_those_rights():
    config = make_config(
        permission_groups=["Custom"],
        permissions=[{"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Submit", "ms-Exch-SMTP-Accept-Any-Recipient"]}],
    )
    session = open_session(config)
    assert granted(session) == {"ms-Exch-SMTP-Submit", "ms-Exch-SMTP-Accept-Any-Recipient"}


# --- principals ------------------------------------------------------------------------------------


def test_principal_is_anonymous_by_default():
    connector = make_config(permission_groups=["AnonymousUsers"]).connectors[0]
    assert default_principals(connector, None) == frozenset({ANONYMOUS})
    assert open_session(make_config(permission_groups=["AnonymousUsers"])).session.principals == frozenset({ANONYMOUS})


def test_externally_authoritative_connector_runs_as_externally_secured_servers():
    connector = make_config(auth_mechanism=["ExternalAuthoritative"], permission_groups=["ExchangeServers"]).connectors[0]
    assert AuthMechanism.EXTERNAL_AUTHORITATIVE in connector.auth_mechanism
    assert default_principals(connector, None) == frozenset({EXTERNALLY_SECURED})


def test_authenticated_session_runs_as_user_and_authenticated_users():
    config = make_config(permission_groups=["AnonymousUsers", "ExchangeUsers"], auth_mechanism=["Tls", "BasicAuth"])
    assert default_principals(config.connectors[0], "alice") == frozenset({"alice", AUTHENTICATED})
    session = open_session(config)
    session.assume_user("alice")
    assert session.session.principals == frozenset({"alice", AUTHENTICATED})
    assert session.session.authenticated


def test_exchange_users_group_grants_relay_to_authenticated_users_only():
    config = make_config(permission_groups=["AnonymousUsers", "ExchangeUsers"], auth_mechanism=["Tls", "BasicAuth"])
    session = open_session(config)
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights
    session.assume_user("alice@contoso.com")
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT in session.session.rights
    relay = trace(session.session.rights, Right.SMTP_ACCEPT_ANY_RECIPIENT)
    assert [g.origin for g in relay.allowed_by] == ["permission group ExchangeUsers"]
    # ExchangeUsers holds no sender rights: the user may send as its own address (reference §3.2)
    assert session.mail("alice@contoso.com").render() == "250 2.1.0 Sender OK"
    assert session.rcpt("kate@fabrikam.com").render() == "250 2.1.5 Recipient OK"


def test_explicit_entry_for_a_user_applies_only_to_that_user():
    config = make_config(
        permission_groups=["AnonymousUsers"],
        auth_mechanism=["Tls", "BasicAuth"],
        permissions=[{"user": "alice", "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient", "ms-Exch-SMTP-Submit"]}],
    )
    session = open_session(config)
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT not in session.session.rights  # anonymous
    session.assume_user("alice")
    assert granted(session) == {"ms-Exch-SMTP-Accept-Any-Recipient", "ms-Exch-SMTP-Submit"}
    relay = trace(session.session.rights, Right.SMTP_ACCEPT_ANY_RECIPIENT)
    assert relay.allowed_by[0].origin.startswith("permission entry 1")
    assert relay.allowed_by[0].principal == "alice"
    other = open_session(config)
    other.assume_user("bob")
    assert granted(other) == set()


@pytest.mark.parametrize(
    ("entry_user", "session_user"), [("ALICE", "alice"), ("alice", "ALICE"), ("Alice", "aLiCe")]
)
def test_user_names_compare_case_insensitively(entry_user, session_user):
    config = make_config(
        permission_groups=["ExchangeUsers"],
        auth_mechanism=["Tls", "BasicAuth"],
        permissions=[{"user": entry_user, "extended_rights": ["ms-Exch-SMTP-Submit"], "deny": True}],
    )
    session = open_session(config)
    session.assume_user(session_user)
    assert Right.SMTP_SUBMIT not in session.session.rights
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT in session.session.rights


def test_well_known_principal_in_config_compares_case_insensitively():
    config = make_config(
        permission_groups=["AnonymousUsers"],
        permissions=[{"user": "nt authority\\anonymous logon", "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}],
    )
    assert config.connectors[0].permissions[0].user == ANONYMOUS
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT in open_session(config).session.rights


def test_fold_compares_grant_principals_case_insensitively():
    grants = [Grant("NT Authority\\Anonymous Logon", Right.SMTP_SUBMIT, False, "plugin")]
    assert Right.SMTP_SUBMIT in fold_grants(grants, [ANONYMOUS])
    assert Right.SMTP_SUBMIT in fold_grants(grants, [ANONYMOUS.upper()])


# --- traces ----------------------------------------------------------------------------------------


def test_traces_name_the_granting_group_and_entry():
    config = make_config(
        permission_groups=["AnonymousUsers"],
        permissions=[{"user": ANONYMOUS, "extended_rights": ["Ms-Exch-SMTP-Accept-Any-Recipient"]}],
    )
    rights = open_session(config).session.rights
    submit = trace(rights, Right.SMTP_SUBMIT)
    assert submit.granted and [g.origin for g in submit.allowed_by] == ["permission group AnonymousUsers"]
    assert submit.allowed_by[0].principal == ANONYMOUS
    relay = trace(rights, Right.SMTP_ACCEPT_ANY_RECIPIENT)
    assert relay.granted
    assert len(relay.allowed_by) == 1
    assert relay.allowed_by[0].origin.startswith("permission entry 1")
    assert ANONYMOUS in relay.allowed_by[0].origin
    exch50 = trace(rights, Right.SMTP_ACCEPT_EXCH50)
    assert not exch50.granted and exch50.allowed_by == () and exch50.denied_by == ()


def test_traces_list_every_right_once():
    rights = open_session(make_config(permission_groups=["AnonymousUsers"])).session.rights
    assert [t.right for t in rights.traces] == list(Right)


def test_connector_grants_number_entries_in_file_order():
    config = make_config(
        permission_groups=["Custom"],
        permissions=[
            {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Submit"]},
            {"user": "alice", "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"], "deny": True},
        ],
    )
    grants = connector_grants(config.connectors[0])
    assert [(g.principal, g.right, g.deny) for g in grants] == [
        (ANONYMOUS, Right.SMTP_SUBMIT, False),
        ("alice", Right.SMTP_ACCEPT_ANY_RECIPIENT, True),
    ]
    assert grants[0].origin.startswith("permission entry 1") and "allow" in grants[0].origin
    assert grants[1].origin.startswith("permission entry 2") and "deny" in grants[1].origin


def test_one_plugin_manager_gives_each_connector_its_own_grants() -> None:
    """The default grants plugin remembers each connector's grants; a reloaded configuration's
    connector (another object, other permissions) must not get the old one's."""
    manager = make_plugin_manager(load_entrypoints=False)
    relay = make_config(permissions=[{"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}])
    plain = make_config()
    for config, relays in ((relay, True), (plain, False), (relay, True)):
        policy = RelayPolicy(config, manager)
        session = RelaySession(policy, CLIENT)
        assert session.open().code == 220
        assert ("ms-Exch-SMTP-Accept-Any-Recipient" in granted(session)) is relays
        again = RelaySession(policy, CLIENT)
        again.open()
        assert granted(again) == granted(session)
