"""Loading configurations: the sample file, Exchange spellings, usage defaults, round trips, bad files."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from salmon_relayauth import (
    AcceptedDomainType,
    AuthMechanism,
    ConfigError,
    MessageRateSource,
    PermissionGroup,
    ProtocolLoggingLevel,
    Right,
    Severity,
    SizeMode,
    TransportRole,
    Usage,
    config_from_mapping,
    config_to_mapping,
    dump_toml,
    load_config,
    parse_binding,
    parse_remote_ip_range,
    read_config,
)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "configs" / "exchange_example.toml"

ANONYMOUS_LOGON = "NT AUTHORITY\\ANONYMOUS LOGON"
ALL_IPV4 = (4, 0, 2**32 - 1)

# The TOML block of the issue, exactly as written there (tests/configs/exchange_example.toml).
ISSUE_TOML = r'''
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"
type = "Authoritative"

[[connectors]]
name = "Default Frontend"
bindings = ["0.0.0.0:2525"]
remote_ip_ranges = ["0.0.0.0-255.255.255.255"]
permission_groups = ["AnonymousUsers"]

[[connectors]]
name = "Anonymous Relay"
transport_role = "FrontendTransport"
usage = "Custom"
bindings = ["0.0.0.0:2525"]
remote_ip_ranges = ["192.168.5.10", "192.168.5.11", "10.1.0.0/16", "192.168.6.1-192.168.6.20"]
permission_groups = ["AnonymousUsers"]

[[connectors.permissions]]
user = "NT AUTHORITY\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = 2526
'''

# The configuration block of README.md ("## Configuration"), as written there.
README_TOML = r'''
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"          # or "*.contoso.com"
type = "Authoritative"          # Authoritative | InternalRelay | ExternalRelay

[[connectors]]
name = "Anonymous Relay"        # at most 64 characters, unique (case-insensitive)
usage = "Custom"                # Client | Custom | Internal | Internet | Partner: chooses defaults
bindings = ["0.0.0.0:2525"]     # IPv4:port, [IPv6]:port, 0.0.0.0 and [::] wildcards
remote_ip_ranges = ["192.168.5.10", "10.1.0.0/16", "192.168.6.1-192.168.6.20", "2001:db8::/64"]
permission_groups = ["AnonymousUsers"]
auth_mechanism = ["Tls"]
max_message_size = "36MB"
connection_timeout = "00:10:00" # hh:mm:ss or d.hh:mm:ss
message_rate_limit = "Unlimited"

[[connectors.permissions]]      # the Add-ADPermission analogue
user = "NT AUTHORITY\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]
deny = false

[smarthost]
host = "127.0.0.1"
port = 2526

[plugins]
disabled = []                   # names of default or entry-point plugins to leave out
'''


def write(tmp_path: Path, text: str, name: str = "relay.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def connector(name: str = "Relay", **keys: object) -> dict[str, object]:
    """A minimal valid connector mapping; keyword arguments add or replace keys."""
    data: dict[str, object] = {
        "name": name,
        "bindings": ["0.0.0.0:2525"],
        "remote_ip_ranges": ["192.168.5.10"],
        "permission_groups": ["AnonymousUsers"],
    }
    data.update(keys)
    return data


def one(**keys: object):
    """Load a configuration of one connector built from ``keys`` and return that connector."""
    return config_from_mapping({"connectors": [connector(**keys)]}).connectors[0]


def span(r) -> tuple[int, int, int]:
    return (r.version, r.first, r.last)


def ip4(text: str) -> int:
    import ipaddress

    return int(ipaddress.IPv4Address(text))


def ip6(text: str) -> int:
    import ipaddress

    return int(ipaddress.IPv6Address(text))


# --- the sample file and the issue's block -------------------------------------------------------


def test_sample_file_loads_without_any_problem():
    result = read_config(SAMPLE)
    assert result.problems == []
    assert result.config is not None
    config = result.config
    assert config.source == str(SAMPLE)
    assert config.server.fqdn == "relay.contoso.com"
    assert [c.name for c in config.connectors] == ["Default Frontend", "Anonymous Relay"]


def test_sample_file_connectors():
    config = load_config(SAMPLE)
    frontend, relay = config.connectors

    assert [str(b) for b in frontend.bindings] == ["0.0.0.0:2525"]
    assert [span(r) for r in frontend.remote_ip_ranges] == [ALL_IPV4]
    assert frontend.permission_groups == frozenset({PermissionGroup.ANONYMOUS_USERS})
    assert frontend.permissions == ()
    assert frontend.usage is Usage.CUSTOM
    assert frontend.enabled is True

    assert relay.transport_role is TransportRole.FRONTEND_TRANSPORT
    assert relay.usage is Usage.CUSTOM
    assert [str(b) for b in relay.bindings] == ["0.0.0.0:2525"]
    assert [span(r) for r in relay.remote_ip_ranges] == [
        (4, ip4("192.168.5.10"), ip4("192.168.5.10")),
        (4, ip4("192.168.5.11"), ip4("192.168.5.11")),
        (4, ip4("10.1.0.0"), ip4("10.1.255.255")),
        (4, ip4("192.168.6.1"), ip4("192.168.6.20")),
    ]
    assert relay.permission_groups == frozenset({PermissionGroup.ANONYMOUS_USERS})
    # Custom usage default for auth: Tls (reference §5)
    assert relay.auth_mechanism == frozenset({AuthMechanism.TLS})
    assert len(relay.permissions) == 1
    entry = relay.permissions[0]
    assert entry.user == ANONYMOUS_LOGON
    assert entry.extended_rights == frozenset({Right.SMTP_ACCEPT_ANY_RECIPIENT})
    assert entry.deny is False


def test_sample_file_accepted_domain_and_smarthost():
    config = load_config(SAMPLE)
    assert len(config.accepted_domains) == 1
    assert config.accepted_domains[0].domain == "contoso.com"
    assert config.accepted_domains[0].type is AcceptedDomainType.AUTHORITATIVE
    assert config.smarthost is not None
    assert (config.smarthost.host, config.smarthost.port) == ("127.0.0.1", 2526)
    assert config.smarthost.starttls is False
    assert config.smarthost.username is None


def test_connector_lookup_by_name_is_case_insensitive():
    config = load_config(SAMPLE)
    assert config.connector("anonymous RELAY").name == "Anonymous Relay"
    with pytest.raises(KeyError):
        config.connector("No Such Connector")


def test_issue_block_loads_as_written(tmp_path):
    path = write(tmp_path, ISSUE_TOML)
    result = read_config(path)
    assert result.problems == []
    config = result.config
    assert config is not None
    assert config.source == str(path)
    sample = load_config(SAMPLE)
    assert config.connectors == sample.connectors
    assert config.accepted_domains == sample.accepted_domains
    assert config.smarthost == sample.smarthost
    assert config.server == sample.server
    relay = config.connector("Anonymous Relay")
    assert relay.permissions[0].user == ANONYMOUS_LOGON
    assert relay.permissions[0].extended_rights == frozenset({Right.SMTP_ACCEPT_ANY_RECIPIENT})


def test_readme_configuration_block_loads(tmp_path):
    result = read_config(write(tmp_path, README_TOML))
    assert result.problems == []
    config = result.config
    assert config is not None
    (relay,) = config.connectors
    assert relay.max_message_size == 37748736
    assert relay.connection_timeout == timedelta(minutes=10)
    assert relay.message_rate_limit is None
    assert (6, ip6("2001:db8::"), ip6("2001:db8::ffff:ffff:ffff:ffff")) in [span(r) for r in relay.remote_ip_ranges]
    assert relay.permissions[0].deny is False
    assert config.plugins.disabled == ()


# --- Exchange spellings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "size"),
    [
        ("36MB", 37748736),
        ("36 MB", 37748736),
        ("36mb", 37748736),
        ("36 MB (37,748,736 bytes)", 37748736),
        ("1GB", 1 << 30),
        ("1.5MB", 1572864),
        ("100KB", 102400),
        ("65536B", 65536),
        ("65536", 65536),
        (100000, 100000),
    ],
)
def test_max_message_size_spellings(written, size):
    assert one(max_message_size=written).max_message_size == size


def test_max_header_size_in_kb():
    assert one(max_header_size="256KB").max_header_size == 262144
    assert one(max_header_size="64 kb").max_header_size == 65536


def test_default_max_message_size_is_36mb():
    assert one().max_message_size == 37748736
    assert one().max_header_size == 262144


@pytest.mark.parametrize(
    ("field", "written", "expected"),
    [
        ("connection_timeout", "00:10:00", timedelta(minutes=10)),
        ("connection_timeout", "1.00:00:00", timedelta(days=1)),
        ("connection_timeout", "02:30:15", timedelta(hours=2, minutes=30, seconds=15)),
        ("connection_inactivity_timeout", "00:00:01.5", timedelta(seconds=1.5)),
        ("connection_inactivity_timeout", 90, timedelta(seconds=90)),
        ("tarpit_interval", "00:00:00", timedelta(0)),
        ("auth_tarpit_interval", "00:00:10", timedelta(seconds=10)),
    ],
)
def test_timespan_spellings(field, written, expected):
    assert getattr(one(**{field: written}), field) == expected


@pytest.mark.parametrize(
    "field",
    ["message_rate_limit", "max_inbound_connection", "max_inbound_connection_per_source", "max_protocol_errors"],
)
@pytest.mark.parametrize("written", ["Unlimited", "unlimited", "UNLIMITED"])
def test_unlimited_means_no_limit(field, written):
    assert getattr(one(**{field: written}), field) is None


def test_limits_keep_numbers():
    relay = one(message_rate_limit=600, max_inbound_connection_per_source=50, max_protocol_errors=0)
    assert relay.message_rate_limit == 600
    assert relay.max_inbound_connection_per_source == 50
    assert relay.max_protocol_errors == 0


def test_enums_are_case_insensitive():
    relay = one(
        usage="custom",
        transport_role="hubtransport",
        permission_groups=["anonymoususers", "EXCHANGEUSERS"],
        auth_mechanism=["tls", "BASICAUTH", "basicauthrequiretls"],
        size_enabled="enabledwithoutvalue",
        message_rate_source="all",
        protocol_logging_level="VERBOSE",
    )
    assert relay.usage is Usage.CUSTOM
    assert relay.transport_role is TransportRole.HUB_TRANSPORT
    assert relay.permission_groups == frozenset({PermissionGroup.ANONYMOUS_USERS, PermissionGroup.EXCHANGE_USERS})
    assert relay.auth_mechanism == frozenset(
        {AuthMechanism.TLS, AuthMechanism.BASIC_AUTH, AuthMechanism.BASIC_AUTH_REQUIRE_TLS}
    )
    assert relay.size_enabled is SizeMode.ENABLED_WITHOUT_VALUE
    assert relay.message_rate_source is MessageRateSource.ALL
    assert relay.protocol_logging_level is ProtocolLoggingLevel.VERBOSE


def test_usage_is_case_insensitive():
    relay = one(usage="INTERNET")
    assert relay.usage is Usage.INTERNET


def test_permission_group_aliases():
    assert one(permission_groups=["Anonymous"]).permission_groups == frozenset({PermissionGroup.ANONYMOUS_USERS})
    assert one(permission_groups=["partner"]).permission_groups == frozenset({PermissionGroup.PARTNERS})


def test_accepted_domain_types_case_insensitive_and_spaced():
    config = config_from_mapping(
        {
            "accepted_domains": [
                {"domain": "Contoso.COM", "type": "internalrelay"},
                {"domain": "fabrikam.com", "type": "External Relay"},
                {"domain": "example.org"},
            ],
            "connectors": [connector()],
        }
    )
    assert [(d.domain, d.type) for d in config.accepted_domains] == [
        ("contoso.com", AcceptedDomainType.INTERNAL_RELAY),
        ("fabrikam.com", AcceptedDomainType.EXTERNAL_RELAY),
        ("example.org", AcceptedDomainType.AUTHORITATIVE),
    ]


def test_comma_separated_permission_groups():
    relay = one(permission_groups="AnonymousUsers, ExchangeUsers,Partners")
    assert relay.permission_groups == frozenset(
        {PermissionGroup.ANONYMOUS_USERS, PermissionGroup.EXCHANGE_USERS, PermissionGroup.PARTNERS}
    )


def test_comma_separated_auth_mechanism():
    relay = one(auth_mechanism="Tls,BasicAuth, BasicAuthRequireTLS")
    assert relay.auth_mechanism == frozenset(
        {AuthMechanism.TLS, AuthMechanism.BASIC_AUTH, AuthMechanism.BASIC_AUTH_REQUIRE_TLS}
    )


def test_comma_separated_remote_ip_ranges():
    relay = one(remote_ip_ranges="192.168.5.10, 10.1.0.0/16,192.168.6.1-192.168.6.20")
    assert [span(r) for r in relay.remote_ip_ranges] == [
        (4, ip4("192.168.5.10"), ip4("192.168.5.10")),
        (4, ip4("10.1.0.0"), ip4("10.1.255.255")),
        (4, ip4("192.168.6.1"), ip4("192.168.6.20")),
    ]


def test_single_string_is_a_list_of_one():
    relay = one(bindings="10.0.0.1:25", remote_ip_ranges="10.2.0.0/16", permission_groups="AnonymousUsers")
    assert [str(b) for b in relay.bindings] == ["10.0.0.1:25"]
    assert [span(r) for r in relay.remote_ip_ranges] == [(4, ip4("10.2.0.0"), ip4("10.2.255.255"))]


def test_remote_range_forms():
    relay = one(
        remote_ip_ranges=["192.168.1.1/24", "2001:0DB8::CD3/60", "fe80::39bd:88f7:6969:d223%11", "::ffff:192.168.7.7"]
    )
    assert [span(r) for r in relay.remote_ip_ranges] == [
        (4, ip4("192.168.1.0"), ip4("192.168.1.255")),  # host bits dropped
        (6, ip6("2001:db8::"), ip6("2001:db8:0:f:ffff:ffff:ffff:ffff")),
        (6, ip6("fe80::39bd:88f7:6969:d223"), ip6("fe80::39bd:88f7:6969:d223")),  # zone dropped
        (4, ip4("192.168.7.7"), ip4("192.168.7.7")),  # IPv4-mapped counts as IPv4
    ]


def test_bindings_forms():
    relay = one(bindings=["0.0.0.0:25", "[::]:25", "10.0.0.5:2525", "[2001:db8::1]:587"])
    assert [(b.version, b.is_wildcard, b.port) for b in relay.bindings] == [
        (4, True, 25),
        (6, True, 25),
        (4, False, 2525),
        (6, False, 587),
    ]
    assert [str(b) for b in relay.bindings] == ["0.0.0.0:25", "[::]:25", "10.0.0.5:2525", "[2001:db8::1]:587"]


@pytest.mark.parametrize(("written", "value"), [("$true", True), ("$False", False), ("true", True), (False, False)])
def test_powershell_booleans(written, value):
    assert one(require_ehlo_domain=written).require_ehlo_domain is value


def test_well_known_principal_is_canonicalised():
    relay = one(permissions=[{"user": "nt authority\\anonymous logon", "extended_rights": ["ms-exch-smtp-submit"]}])
    assert relay.permissions[0].user == ANONYMOUS_LOGON
    assert relay.permissions[0].extended_rights == frozenset({Right.SMTP_SUBMIT})


def test_extended_rights_spellings():
    relay = one(
        permissions=[
            {"user": "Printers", "extended_rights": "MS-EXCH-SMTP-ACCEPT-ANY-RECIPIENT", "deny": True},
            {"user": "Apps", "extended_rights": ["ms-Exch-Accept-Exch50", "ms-Exch-Bypass-Anti-Spam"]},
        ]
    )
    first, second = relay.permissions
    assert (first.user, first.extended_rights, first.deny) == (
        "Printers",
        frozenset({Right.SMTP_ACCEPT_ANY_RECIPIENT}),
        True,
    )
    assert second.extended_rights == frozenset({Right.SMTP_ACCEPT_EXCH50, Right.BYPASS_ANTI_SPAM})
    assert second.deny is False


def test_connector_defaults_for_left_out_keys():
    relay = one()
    assert relay.enabled is True
    assert relay.max_recipients_per_message == 200
    assert relay.max_hop_count == 30
    assert relay.max_local_hop_count == 8
    assert relay.max_protocol_errors == 5
    assert relay.max_inbound_connection == 5000
    assert relay.max_inbound_connection_per_source == 20
    assert relay.max_inbound_connection_percentage_per_source == 2
    assert relay.message_rate_limit is None
    assert relay.connection_timeout == timedelta(minutes=10)
    assert relay.connection_inactivity_timeout == timedelta(minutes=5)
    assert relay.tarpit_interval == timedelta(seconds=5)
    assert relay.auth_tarpit_interval == timedelta(seconds=5)
    assert relay.max_logon_failures == 3
    assert relay.banner is None
    assert relay.fqdn is None
    assert relay.require_tls is False


# --- usage defaults (reference §5) ----------------------------------------------------------------


def _bare(usage: str | None, **keys: object) -> dict[str, object]:
    data: dict[str, object] = {"name": "Conn", **keys}
    if usage is not None:
        data["usage"] = usage
    return data


def test_client_usage_defaults():
    (conn,) = config_from_mapping({"connectors": [_bare("Client", remote_ip_ranges=["10.0.0.0/8"])]}).connectors
    assert conn.usage is Usage.CLIENT
    assert conn.permission_groups == frozenset({PermissionGroup.EXCHANGE_USERS})
    assert conn.auth_mechanism == frozenset(
        {AuthMechanism.TLS, AuthMechanism.BASIC_AUTH, AuthMechanism.BASIC_AUTH_REQUIRE_TLS, AuthMechanism.INTEGRATED}
    )
    assert {str(b) for b in conn.bindings} == {"0.0.0.0:587", "[::]:587"}
    assert len(conn.bindings) == 2
    assert conn.bindings == (parse_binding("0.0.0.0:587"), parse_binding("[::]:587"))


def test_internal_usage_defaults():
    (conn,) = config_from_mapping({"connectors": [_bare("Internal", remote_ip_ranges=["10.0.0.0/8"])]}).connectors
    assert conn.usage is Usage.INTERNAL
    assert conn.permission_groups == frozenset(
        {PermissionGroup.EXCHANGE_LEGACY_SERVERS, PermissionGroup.EXCHANGE_SERVERS}
    )
    assert conn.auth_mechanism == frozenset({AuthMechanism.TLS, AuthMechanism.EXCHANGE_SERVER})
    assert {str(b) for b in conn.bindings} == {"0.0.0.0:25", "[::]:25"}
    assert {b.port for b in conn.bindings} == {25}


def test_internet_usage_defaults():
    (conn,) = config_from_mapping({"connectors": [_bare("Internet", bindings=["0.0.0.0:25"])]}).connectors
    assert conn.usage is Usage.INTERNET
    assert conn.permission_groups == frozenset({PermissionGroup.ANONYMOUS_USERS})
    assert conn.auth_mechanism == frozenset({AuthMechanism.TLS})
    assert [span(r) for r in conn.remote_ip_ranges] == [ALL_IPV4]
    assert conn.remote_ip_ranges == (parse_remote_ip_range("0.0.0.0-255.255.255.255"),)


@pytest.mark.parametrize(
    ("usage", "groups"),
    [("Custom", {PermissionGroup.NONE}), ("Partner", {PermissionGroup.PARTNERS}), (None, {PermissionGroup.NONE})],
)
def test_custom_and_partner_usage_defaults(usage, groups):
    data = _bare(usage, bindings=["0.0.0.0:2525"], remote_ip_ranges=["10.0.0.0/8"])
    (conn,) = config_from_mapping({"connectors": [data]}).connectors
    assert conn.usage is (Usage.CUSTOM if usage is None else Usage(usage))
    assert conn.permission_groups == frozenset(groups)
    assert conn.auth_mechanism == frozenset({AuthMechanism.TLS})


@pytest.mark.parametrize(
    ("usage", "given", "missing"),
    [
        ("Client", {}, ["remote_ip_ranges"]),
        ("Internal", {}, ["remote_ip_ranges"]),
        ("Internet", {}, ["bindings"]),
        ("Custom", {}, ["bindings", "remote_ip_ranges"]),
        ("Custom", {"bindings": ["0.0.0.0:2525"]}, ["remote_ip_ranges"]),
        ("Custom", {"remote_ip_ranges": ["10.0.0.0/8"]}, ["bindings"]),
        ("Partner", {}, ["bindings", "remote_ip_ranges"]),
        ("Partner", {"remote_ip_ranges": ["10.0.0.0/8"]}, ["bindings"]),
        (None, {}, ["bindings", "remote_ip_ranges"]),
    ],
)
def test_required_fields_per_usage(usage, given, missing):
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"connectors": [_bare(usage, **given)]}, "usage.toml")
    errors = info.value.errors
    assert sorted(problem.field for problem in errors) == sorted(missing)
    shown = usage or "Custom"
    for problem in errors:
        assert problem.source == "usage.toml"
        assert problem.section == "connector 'Conn'"
        assert "required" in problem.message
        assert shown in problem.message
        assert str(problem).startswith(f"usage.toml: connector 'Conn': {problem.field}: ")


def test_explicit_keys_override_client_defaults():
    (conn,) = config_from_mapping(
        {
            "connectors": [
                _bare(
                    "Client",
                    bindings=["10.0.0.1:2587"],
                    remote_ip_ranges=["10.0.0.0/8"],
                    auth_mechanism=["Tls"],
                    permission_groups=["AnonymousUsers"],
                )
            ]
        }
    ).connectors
    assert [str(b) for b in conn.bindings] == ["10.0.0.1:2587"]
    assert conn.auth_mechanism == frozenset({AuthMechanism.TLS})
    assert conn.permission_groups == frozenset({PermissionGroup.ANONYMOUS_USERS})
    assert conn.usage is Usage.CLIENT


def test_explicit_keys_override_internet_and_internal_defaults():
    internet, internal = config_from_mapping(
        {
            "connectors": [
                _bare("Internet", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.0/8"], permission_groups="Partners"),
                _bare("Internal", name="Org", bindings=["10.1.1.2:25"], remote_ip_ranges=["10.1.0.0/16"]),
            ]
        }
    ).connectors
    assert [span(r) for r in internet.remote_ip_ranges] == [(4, ip4("10.0.0.0"), ip4("10.255.255.255"))]
    assert internet.permission_groups == frozenset({PermissionGroup.PARTNERS})
    assert [str(b) for b in internal.bindings] == ["10.1.1.2:25"]
    # groups and auth still come from the Internal defaults
    assert internal.auth_mechanism == frozenset({AuthMechanism.TLS, AuthMechanism.EXCHANGE_SERVER})


# --- round trip ----------------------------------------------------------------------------------

RICH_MAPPING = {
    "server": {"fqdn": "relay.example.org"},
    "accepted_domains": [
        {"domain": "*.contoso.com", "type": "InternalRelay"},
        {"domain": "fabrikam.com", "type": "ExternalRelay"},
    ],
    "plugins": {"disabled": ["relayauth.selection"]},
    "connectors": [
        {
            "name": "Clients – Büro",
            "usage": "Client",
            "remote_ip_ranges": ["2001:db8::/64", "fe80::1%11", "::ffff:10.0.0.1", "10.0.0.0-10.0.0.5", "::-ffff::1"],
            "max_message_size": "1.5MB",
            "max_header_size": 1,
            "connection_timeout": "1.00:00:00",
            "connection_inactivity_timeout": "00:00:01.5",
            "message_rate_limit": 10,
            "max_protocol_errors": "Unlimited",
            "max_inbound_connection": "Unlimited",
            "banner": "220 relay ready",
            "fqdn": "mail.example.org",
            "enabled": False,
            "comment": 'multi\nline "quoted" \\ back',
            "size_enabled": "EnabledWithoutValue",
            "protocol_logging_level": "Verbose",
            "message_rate_source": "User",
            "tarpit_interval": "00:00:00",
            "long_addresses_enabled": True,
            "binary_mime_enabled": False,
            "chunking_enabled": False,
            "permissions": [
                {
                    "user": "nt authority\\anonymous logon",
                    "extended_rights": ["ms-Exch-SMTP-Submit", "ms-exch-accept-exch50"],
                    "deny": True,
                },
                {"user": "CONTOSO\\apps", "extended_rights": "ms-Exch-Bypass-Anti-Spam"},
            ],
        },
        {
            "name": "Org",
            "usage": "Internal",
            "remote_ip_ranges": ["0.0.0.0/0", "::/0"],
            "bindings": ["[2001:db8::1]:25", "10.1.2.3:25"],
            "max_message_size": 65537,
            "transport_role": "HubTransport",
        },
        {
            "name": "Locked",
            "bindings": ["0.0.0.0:2526"],
            "remote_ip_ranges": ["192.168.0.0/16"],
            "max_logon_failures": 0,
        },
    ],
    "smarthost": {"host": "mx.example.org", "port": 587, "starttls": True, "username": "u", "password": "p@ss"},
}

MINIMAL_MAPPING = {"connectors": [{"name": "Only", "usage": "Internet", "bindings": ["[::]:25"]}]}


ROUND_TRIP_CASES = {
    "sample": lambda: load_config(SAMPLE),
    "rich": lambda: config_from_mapping(RICH_MAPPING, "rich.toml"),
    "minimal": lambda: config_from_mapping(MINIMAL_MAPPING),
    "readme": lambda: config_from_mapping(tomllib.loads(README_TOML), "readme.toml"),
    "issue": lambda: config_from_mapping(tomllib.loads(ISSUE_TOML), "issue.toml"),
}


@pytest.mark.parametrize("label", sorted(ROUND_TRIP_CASES))
def test_round_trip_through_toml(label):
    config = ROUND_TRIP_CASES[label]()
    text = dump_toml(config)
    back = config_from_mapping(tomllib.loads(text), config.source)
    assert back.connectors == config.connectors
    assert back.accepted_domains == config.accepted_domains
    assert back.smarthost == config.smarthost
    assert back.server == config.server
    assert back.plugins == config.plugins
    assert back == config
    assert config_to_mapping(back) == config_to_mapping(config)
    assert dump_toml(back) == text


@pytest.mark.parametrize("label", sorted(ROUND_TRIP_CASES))
def test_mapping_round_trip(label):
    config = ROUND_TRIP_CASES[label]()
    mapping = config_to_mapping(config)
    back = config_from_mapping(mapping, config.source)
    assert back == config
    assert config_to_mapping(back) == mapping


def test_round_trip_through_a_file(tmp_path):
    config = config_from_mapping(RICH_MAPPING, "rich.toml")
    path = write(tmp_path, dump_toml(config))
    loaded = load_config(path)
    assert loaded.connectors == config.connectors
    assert loaded.smarthost == config.smarthost
    assert loaded.source == str(path)


def test_dump_uses_exchange_spellings():
    config = config_from_mapping(
        {"connectors": [connector(max_message_size="36MB", message_rate_limit="Unlimited", max_protocol_errors=7)]}
    )
    data = tomllib.loads(dump_toml(config))
    (written,) = data["connectors"]
    assert written["max_message_size"] == "36MB"
    assert written["max_header_size"] == "256KB"
    assert written["message_rate_limit"] == "Unlimited"
    assert written["max_protocol_errors"] == 7
    assert written["connection_timeout"] == "00:10:00"
    assert written["connection_inactivity_timeout"] == "00:05:00"
    assert written["permission_groups"] == ["AnonymousUsers"]
    assert written["bindings"] == ["0.0.0.0:2525"]
    assert written["remote_ip_ranges"] == ["192.168.5.10"]
    assert "banner" not in written  # unset: Exchange's default banner
    assert data["server"] == {"fqdn": "localhost"}


def test_dump_writes_usage_defaults_explicitly():
    config = config_from_mapping({"connectors": [_bare("Client", remote_ip_ranges=["10.0.0.0/8"])]})
    (written,) = tomllib.loads(dump_toml(config))["connectors"]
    assert written["usage"] == "Client"
    assert sorted(written["bindings"]) == ["0.0.0.0:587", "[::]:587"]
    assert sorted(written["auth_mechanism"]) == ["BasicAuth", "BasicAuthRequireTLS", "Integrated", "Tls"]
    assert written["permission_groups"] == ["ExchangeUsers"]


# --- Python API and TOML file give the same configuration -----------------------------------------


def test_python_api_equals_toml_file_for_sample():
    mapping = {
        "server": {"fqdn": "relay.contoso.com"},
        "accepted_domains": [{"domain": "contoso.com", "type": "Authoritative"}],
        "connectors": [
            {
                "name": "Default Frontend",
                "bindings": ["0.0.0.0:2525"],
                "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
                "permission_groups": ["AnonymousUsers"],
            },
            {
                "name": "Anonymous Relay",
                "transport_role": "FrontendTransport",
                "usage": "Custom",
                "bindings": ["0.0.0.0:2525"],
                "remote_ip_ranges": ["192.168.5.10", "192.168.5.11", "10.1.0.0/16", "192.168.6.1-192.168.6.20"],
                "permission_groups": ["AnonymousUsers"],
                "permissions": [
                    {"user": "NT AUTHORITY\\ANONYMOUS LOGON", "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}
                ],
            },
        ],
        "smarthost": {"host": "127.0.0.1", "port": 2526},
    }
    from_python = config_from_mapping(mapping, str(SAMPLE))
    from_file = load_config(SAMPLE)
    assert from_python.connectors == from_file.connectors
    assert from_python == from_file
    assert config_from_mapping(mapping).source == "<python>"


def test_python_values_equal_toml_spellings(tmp_path):
    """Python callers may pass model values (enums, timedeltas) where TOML has strings."""
    toml_text = r'''
[[connectors]]
name = "Apps"
usage = "Custom"
bindings = ["0.0.0.0:2525"]
remote_ip_ranges = ["10.1.0.0/16"]
permission_groups = ["AnonymousUsers"]
auth_mechanism = ["Tls"]
connection_timeout = "00:20:00"
size_enabled = "Disabled"

[[connectors.permissions]]
user = "NT AUTHORITY\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]
'''
    path = write(tmp_path, toml_text)
    from_file = load_config(path)
    from_python = config_from_mapping(
        {
            "connectors": [
                {
                    "name": "Apps",
                    "usage": Usage.CUSTOM,
                    "bindings": ("0.0.0.0:2525",),
                    "remote_ip_ranges": ["10.1.0.0/16"],
                    "permission_groups": [PermissionGroup.ANONYMOUS_USERS],
                    "auth_mechanism": [AuthMechanism.TLS],
                    "connection_timeout": timedelta(minutes=20),
                    "size_enabled": SizeMode.DISABLED,
                    "permissions": [
                        {"user": ANONYMOUS_LOGON, "extended_rights": [Right.SMTP_ACCEPT_ANY_RECIPIENT]}
                    ],
                }
            ]
        },
        str(path),
    )
    assert from_python.connectors == from_file.connectors
    assert from_python == from_file


def test_python_api_raises_config_error_with_every_problem():
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"connectors": [connector(max_hop_count=0, banner="hello")]}, "api")
    fields = sorted(problem.field for problem in info.value.errors)
    assert fields == ["banner", "max_hop_count"]
    assert "api: connector 'Relay': max_hop_count:" in str(info.value)
    assert "api: connector 'Relay': banner:" in str(info.value)


# --- unreadable files -----------------------------------------------------------------------------


def _assert_single_file_problem(path: Path, fragment: str) -> None:
    result = read_config(path)
    assert result.config is None
    assert len(result.problems) == 1
    (problem,) = result.problems
    assert problem.severity is Severity.ERROR
    assert problem.source == str(path)
    assert str(problem).startswith(f"{path}: ")
    assert fragment in problem.message
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert len(info.value.problems) == 1


def test_file_that_is_not_toml(tmp_path):
    path = write(tmp_path, "[[connectors]\nname = 'x'\n", "broken.toml")
    _assert_single_file_problem(path, "invalid TOML")


def test_file_with_a_toml_syntax_error_in_a_value(tmp_path):
    path = write(tmp_path, '[[connectors]]\nname = "x"\nmax_message_size = 36MB\n', "value.toml")
    _assert_single_file_problem(path, "invalid TOML")


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[server]\nfqdn = "relais-é.example"\n'.encode("latin-1") + b"\xff\xfe")
    _assert_single_file_problem(path, "not UTF-8")


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "relay.toml"
    _assert_single_file_problem(path, "cannot read the file")


def test_load_config_accepts_str_path():
    assert load_config(str(SAMPLE)).source == str(SAMPLE)
