"""Validation rules: each problem names the file, the connector (or section) and the field.

Facts from the reference: §4.2 (auth rules), §5 (usage), §6.3 (overlaps), §7 (ranges), §7.7 (cross rules).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from salmon_relayauth import (
    ConfigError,
    ConfigProblem,
    PermissionGroup,
    Severity,
    config_from_mapping,
    read_config,
)

SOURCE = "relay-under-test.toml"
MAX_INT32 = 2147483647


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


def config(*connectors: dict[str, object], **top: object) -> dict[str, object]:
    return {"connectors": list(connectors) or [connector()], **top}


def problems_of(data: dict[str, object]) -> list[ConfigProblem]:
    """The problems of a configuration that must be refused."""
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, SOURCE)
    error = info.value
    assert error.errors, "a refused configuration must list at least one error"
    for problem in error.errors:
        assert str(problem) in str(error)
    return error.problems


def loads(data: dict[str, object]):
    """A configuration that must be accepted."""
    return config_from_mapping(data, SOURCE)


def find(problems: list[ConfigProblem], section: str, field: str, severity: Severity = Severity.ERROR) -> list[ConfigProblem]:
    return [p for p in problems if p.section == section and p.field == field and p.severity is severity]


def assert_problem(
    problems: list[ConfigProblem],
    section: str,
    field: str,
    *fragments: str,
    severity: Severity = Severity.ERROR,
    source: str = SOURCE,
) -> ConfigProblem:
    """Exactly one problem at ``section``/``field``; its text names the file, section and field."""
    found = find(problems, section, field, severity)
    assert len(found) == 1, f"expected one problem at {section!r} {field!r}, got: {[str(p) for p in problems]}"
    problem = found[0]
    assert problem.source == source
    where = ": ".join(part for part in (source, section, field) if part)
    assert str(problem).startswith(f"{where}: "), str(problem)
    for fragment in fragments:
        assert fragment in problem.message, f"{fragment!r} not in {problem.message!r}"
    return problem


def only_error(data: dict[str, object], section: str, field: str, *fragments: str) -> ConfigProblem:
    """The configuration is refused for exactly one error, at ``section``/``field``."""
    problems = problems_of(data)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    assert len(errors) == 1, [str(p) for p in errors]
    return assert_problem(problems, section, field, *fragments)


RELAY = "connector 'Relay'"


def test_baseline_connector_is_valid():
    """Every negative test below changes one thing in this valid configuration."""
    loaded = loads(config())
    assert [c.name for c in loaded.connectors] == ["Relay"]


# --- unknown keys ---------------------------------------------------------------------------------


def test_unknown_top_level_key_with_suggestion():
    data = config()
    data["conectors"] = []
    problem = only_error(data, "", "conectors", "unknown key", "did you mean 'connectors'?")
    assert str(problem) == f"{SOURCE}: conectors: unknown key (did you mean 'connectors'?)"


def test_unknown_top_level_key_without_close_match_has_no_suggestion():
    data = config()
    data["zzzzqqq"] = 1
    problem = only_error(data, "", "zzzzqqq", "unknown key")
    assert "did you mean" not in problem.message


def test_unknown_key_in_server():
    only_error(config(server={"fdqn": "relay.contoso.com"}), "[server]", "fdqn", "unknown key", "'fqdn'")


def test_unknown_key_in_smarthost():
    only_error(config(smarthost={"host": "127.0.0.1", "prot": 2526}), "[smarthost]", "prot", "unknown key", "'port'")


def test_unknown_key_in_plugins():
    only_error(config(plugins={"disable": []}), "[plugins]", "disable", "unknown key", "'disabled'")


def test_unknown_key_in_accepted_domain():
    data = config(accepted_domains=[{"domain": "contoso.com", "typ": "Authoritative"}])
    only_error(data, "accepted_domains[0]", "typ", "unknown key", "'type'")


def test_unknown_key_in_connector():
    data = config(connector(max_mesage_size="10MB"))
    only_error(data, RELAY, "max_mesage_size", "unknown key", "did you mean 'max_message_size'?")


def test_unknown_key_in_connector_is_not_silently_ignored_even_when_everything_else_is_fine():
    data = config(connector(remote_ip_range=["10.0.0.0/8"]))
    only_error(data, RELAY, "remote_ip_range", "did you mean 'remote_ip_ranges'?")


def test_unknown_key_in_permission_entry():
    data = config(
        connector(permissions=[{"user": "Apps", "extended_rights": ["ms-Exch-SMTP-Submit"], "denny": True}])
    )
    only_error(data, RELAY, "permissions[0].denny", "unknown key", "did you mean 'deny'?")


# --- wrong types ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "field", "fragment"),
    [
        ("enabled", "yes", "enabled", "'yes' is not true or false"),
        ("require_tls", 1, "require_tls", "1 is not true or false"),
        ("max_hop_count", "30", "max_hop_count", "'30' is not a whole number"),
        ("max_hop_count", 30.5, "max_hop_count", "30.5 is not a whole number"),
        ("max_hop_count", True, "max_hop_count", "True is not a whole number"),
        ("max_hop_count", "Unlimited", "max_hop_count", "is not a whole number"),
        ("message_rate_limit", "lots", "message_rate_limit", "'lots' is not a whole number or 'Unlimited'"),
        ("max_message_size", "big", "max_message_size", "'big' is not a size"),
        ("max_message_size", True, "max_message_size", "True is not a size"),
        ("max_message_size", "10 XB", "max_message_size", "is not a size"),
        ("connection_timeout", "10 minutes", "connection_timeout", "is not a timespan"),
        ("connection_timeout", "00:61:00", "connection_timeout", "is not a timespan"),
        ("connection_timeout", True, "connection_timeout", "is not a timespan"),
        ("comment", 5, "comment", "5 is not a string"),
        ("banner", 220, "banner", "220 is not a string"),
        ("usage", "Relay", "usage", "'Relay' is not one of"),
        ("size_enabled", "Sometimes", "size_enabled", "'Sometimes' is not one of"),
        ("transport_role", "Edge", "transport_role", "'Edge' is not one of"),
        ("bindings", 25, "bindings", "25 is not a list"),
        ("bindings", ["0.0.0.0"], "bindings[0]", "'0.0.0.0'"),
        ("bindings", ["0.0.0.0:25", "0.0.0.0:0"], "bindings[1]", "port 0"),
        ("bindings", ["[::1]25"], "bindings[0]", "[IPv6]:port"),
        ("bindings", ["::ffff:10.0.0.1:25"], "bindings[0]", "IPv4:port"),
        ("bindings", ["0.0.0.0:smtp"], "bindings[0]", "not a number"),
        ("remote_ip_ranges", ["10.0.0.0/33"], "remote_ip_ranges[0]", "prefix length 33"),
        ("remote_ip_ranges", ["10.0.0.1", "10.0.0.9-10.0.0.1"], "remote_ip_ranges[1]", "reversed"),
        ("remote_ip_ranges", ["10.0.0.1-2001:db8::1"], "remote_ip_ranges[0]", "mixes IPv4 and IPv6"),
        ("remote_ip_ranges", ["10.0.0.300"], "remote_ip_ranges[0]", "'10.0.0.300' is not a valid IP address"),
        ("remote_ip_ranges", [5], "remote_ip_ranges[0]", "5 is not a string"),
        ("remote_ip_ranges", {"a": 1}, "remote_ip_ranges", "is not a list"),
        ("permission_groups", ["Everyone"], "permission_groups[0]", "'Everyone' is not one of"),
        ("permission_groups", [], "permission_groups", "an empty list"),
        ("auth_mechanism", "Tls,Bogus", "auth_mechanism[1]", "'Bogus' is not one of"),
        ("auth_mechanism", [], "auth_mechanism", "an empty list"),
        ("permissions", {"user": "x"}, "permissions", "must be an array of tables"),
    ],
)
def test_wrong_type_or_value_in_connector(key, value, field, fragment):
    only_error(config(connector(**{key: value})), RELAY, field, fragment)


@pytest.mark.parametrize(
    ("top", "section", "field", "fragment"),
    [
        ({"server": {"fqdn": 5}}, "[server]", "fqdn", "5 is not a string"),
        ({"server": "relay.contoso.com"}, "[server]", "", "must be a table"),
        ({"smarthost": {"port": "25"}}, "[smarthost]", "port", "'25' is not a int"),
        ({"smarthost": {"port": 70000}}, "[smarthost]", "port", "70000 is outside 1-65535"),
        ({"smarthost": {"port": 0}}, "[smarthost]", "port", "0 is outside 1-65535"),
        ({"smarthost": {"starttls": "yes"}}, "[smarthost]", "starttls", "'yes' is not a bool"),
        ({"smarthost": {"host": 127}}, "[smarthost]", "host", "127 is not a str"),
        ({"smarthost": "127.0.0.1"}, "[smarthost]", "", "must be a table"),
        ({"plugins": {"disabled": [5]}}, "[plugins]", "disabled[0]", "5 is not a plugin name"),
        ({"accepted_domains": {"domain": "contoso.com"}}, "", "accepted_domains", "must be an array of tables"),
        ({"accepted_domains": [{"type": "Authoritative"}]}, "accepted_domains[0]", "domain", "is required"),
        ({"accepted_domains": [{"domain": 5}]}, "accepted_domains[0]", "domain", "5 is not a string"),
        (
            {"accepted_domains": [{"domain": "contoso.com", "type": "Weird"}]},
            "accepted_domains[0]",
            "type",
            "'Weird' is not one of",
        ),
    ],
)
def test_wrong_type_outside_connectors(top, section, field, fragment):
    only_error(config(**top), section, field, fragment)


def test_connectors_must_be_an_array_of_tables():
    only_error({"connectors": {"name": "Relay"}}, "", "connectors", "must be an array of tables")


def test_no_connectors_at_all_is_an_error():
    only_error({"server": {"fqdn": "relay.contoso.com"}}, "", "connectors", "no [[connectors]] defined")


def test_connector_that_is_not_a_table():
    problems = problems_of({"connectors": ["Relay"]})
    assert_problem(problems, "connectors[0]", "", "must be a table")


@pytest.mark.parametrize("name", [None, "", "   ", 5])
def test_connector_name_is_required(name):
    raw = connector()
    if name is None:
        del raw["name"]
    else:
        raw["name"] = name
    only_error(config(raw), "connectors[0]", "name", "is required")


def test_connector_position_is_named_for_a_nameless_connector():
    raw = connector()
    del raw["name"]
    only_error(config(connector("First"), raw), "connectors[1]", "name", "is required")


# --- names ----------------------------------------------------------------------------------------


def test_duplicate_names_are_case_insensitive():
    data = config(connector("Relay"), connector("RELAY", bindings=["0.0.0.0:2526"]))
    problem = only_error(data, "connector 'RELAY'", "name", "duplicate connector name")
    assert "'Relay'" in problem.message


def test_identical_duplicate_names():
    data = config(connector("Printers"), connector("Printers", bindings=["0.0.0.0:2526"]))
    only_error(data, "connector 'Printers'", "name", "duplicate connector name", "'Printers'")


def test_name_over_64_characters():
    name = "R" * 65
    only_error(config(connector(name)), f"connector {name!r}", "name", "65 characters", "at most 64")


def test_name_of_64_characters_is_accepted():
    name = "R" * 64
    assert loads(config(connector(name))).connectors[0].name == name


def test_name_with_backslash_is_refused():
    only_error(config(connector("Srv\\Relay")), "connector 'Srv\\\\Relay'", "name", "backslash")


# --- integer ranges (reference §7.1-§7.3) ---------------------------------------------------------

INTEGER_RANGES = [
    ("max_message_size", 65536, MAX_INT32),
    ("max_header_size", 1, MAX_INT32),
    ("max_recipients_per_message", 1, 512000),
    ("max_hop_count", 1, 500),
    ("max_local_hop_count", 0, 50),
    ("max_protocol_errors", 0, MAX_INT32),
    ("max_inbound_connection", 1, MAX_INT32),
    ("max_inbound_connection_per_source", 1, 10000),
    ("max_inbound_connection_percentage_per_source", 1, 100),
    ("message_rate_limit", 1, MAX_INT32),
    ("max_logon_failures", 0, 10),
]


RANGE_IDS = [case[0] for case in INTEGER_RANGES]


@pytest.mark.parametrize(("field", "low", "high"), INTEGER_RANGES, ids=RANGE_IDS)
def test_integer_below_range(field, low, high):
    only_error(
        config(connector(**{field: low - 1})), RELAY, field, f"{low - 1} is outside the allowed range {low}-{high}"
    )


@pytest.mark.parametrize(("field", "low", "high"), INTEGER_RANGES, ids=RANGE_IDS)
def test_integer_above_range(field, low, high):
    only_error(
        config(connector(**{field: high + 1})), RELAY, field, f"{high + 1} is outside the allowed range {low}-{high}"
    )


@pytest.mark.parametrize(("field", "low", "high"), INTEGER_RANGES, ids=RANGE_IDS)
def test_integer_range_ends_are_accepted(field, low, high):
    low_connector = loads(config(connector(**{field: low}))).connectors[0]
    high_connector = loads(config(connector(**{field: high}))).connectors[0]
    assert getattr(low_connector, field) == low
    assert getattr(high_connector, field) == high


def test_size_below_range_written_in_kb():
    only_error(config(connector(max_message_size="63KB")), RELAY, "max_message_size", "64512 is outside")


def test_size_above_range_written_in_gb():
    only_error(config(connector(max_message_size="2GB")), RELAY, "max_message_size", "2147483648 is outside")


def test_negative_size_is_refused():
    only_error(config(connector(max_header_size=-1)), RELAY, "max_header_size", "negative")


# --- timespans ------------------------------------------------------------------------------------


def test_connection_timeout_above_one_day():
    only_error(
        config(connector(connection_timeout="1.00:00:01")),
        RELAY,
        "connection_timeout",
        "1.00:00:01 is outside the allowed range 00:00:01-1.00:00:00",
    )


def test_connection_timeout_below_one_second():
    problems = problems_of(config(connector(connection_timeout="00:00:00", connection_inactivity_timeout="00:00:01")))
    assert_problem(problems, RELAY, "connection_timeout", "00:00:00 is outside the allowed range 00:00:01-1.00:00:00")


def test_connection_timeout_range_ends_are_accepted():
    relay = loads(config(connector(connection_timeout="1.00:00:00", connection_inactivity_timeout="23:59:59"))).connectors[0]
    assert relay.connection_timeout.days == 1
    relay = loads(config(connector(connection_timeout="00:00:02", connection_inactivity_timeout="00:00:01"))).connectors[0]
    assert relay.connection_inactivity_timeout.total_seconds() == 1


@pytest.mark.parametrize("value", ["00:00:00", 0.5, "00:00:00.5"])
def test_connection_inactivity_timeout_below_one_second(value):
    only_error(
        config(connector(connection_inactivity_timeout=value)),
        RELAY,
        "connection_inactivity_timeout",
        "is outside the allowed range 00:00:01-1.00:00:00",
    )


def test_connection_inactivity_timeout_above_one_day():
    problems = problems_of(
        config(connector(connection_timeout="1.00:00:00", connection_inactivity_timeout="1.00:00:01"))
    )
    # Above one day it is necessarily not shorter than connection_timeout too: two problems, one field.
    messages = [p.message for p in find(problems, RELAY, "connection_inactivity_timeout")]
    assert "1.00:00:01 is outside the allowed range 00:00:01-1.00:00:00" in messages
    assert any("must be shorter than connection_timeout" in message for message in messages)


@pytest.mark.parametrize("field", ["tarpit_interval", "auth_tarpit_interval"])
def test_tarpit_intervals_above_ten_minutes(field):
    only_error(config(connector(**{field: "00:10:01"})), RELAY, field, "00:10:01 is outside the allowed range 00:00:00-00:10:00")


@pytest.mark.parametrize("field", ["tarpit_interval", "auth_tarpit_interval"])
@pytest.mark.parametrize("value", ["00:00:00", "00:10:00"])
def test_tarpit_intervals_range_ends_accepted(field, value):
    assert loads(config(connector(**{field: value}))).connectors[0] is not None


@pytest.mark.parametrize(
    ("timeout", "inactivity"),
    [("00:10:00", "00:10:00"), ("00:05:00", "00:10:00"), ("00:00:02", "00:00:03")],
)
def test_inactivity_not_shorter_than_connection_timeout(timeout, inactivity):
    only_error(
        config(connector(connection_timeout=timeout, connection_inactivity_timeout=inactivity)),
        RELAY,
        "connection_inactivity_timeout",
        "must be shorter than connection_timeout",
        f"({inactivity} is not less than {timeout})",
    )


def test_default_inactivity_against_short_connection_timeout():
    # Defaults: inactivity 00:05:00; a connection timeout of 00:05:00 breaks the rule.
    only_error(
        config(connector(connection_timeout="00:05:00")),
        RELAY,
        "connection_inactivity_timeout",
        "must be shorter than connection_timeout",
    )


# --- ESMTP and identity ---------------------------------------------------------------------------


def test_binary_mime_without_chunking():
    only_error(
        config(connector(binary_mime_enabled=True, chunking_enabled=False)),
        RELAY,
        "binary_mime_enabled",
        "chunking_enabled",
    )


def test_chunking_off_with_default_binary_mime_is_refused():
    # BinaryMimeEnabled defaults to $true, and BINARYMIME requires CHUNKING.
    only_error(config(connector(chunking_enabled=False)), RELAY, "binary_mime_enabled", "chunking_enabled")


def test_binary_mime_and_chunking_both_off_is_fine():
    relay = loads(config(connector(binary_mime_enabled=False, chunking_enabled=False))).connectors[0]
    assert (relay.binary_mime_enabled, relay.chunking_enabled) == (False, False)


@pytest.mark.parametrize("banner", ["250 relay.contoso.com ready", "Welcome", "relay 220", "2200 hi", "220-relay"])
def test_banner_must_start_with_220(banner):
    only_error(config(connector(banner=banner)), RELAY, "banner", f"{banner!r}", "must start with '220 '")


def test_banner_must_be_one_line():
    only_error(config(connector(banner="220 relay\r\n250 injected")), RELAY, "banner", "one line")


@pytest.mark.parametrize("banner", ["220", "220 relay.contoso.com Microsoft ESMTP MAIL service ready"])
def test_valid_banners(banner):
    assert loads(config(connector(banner=banner))).connectors[0].banner == banner


def test_empty_banner_means_default():
    assert loads(config(connector(banner=""))).connectors[0].banner is None


@pytest.mark.parametrize("fqdn", ["relay_1.contoso.com", "-relay.contoso.com", "relay..contoso.com", "re lay.com", "a" * 64 + ".com"])
def test_bad_connector_fqdn(fqdn):
    only_error(config(connector(fqdn=fqdn)), RELAY, "fqdn", f"{fqdn!r} is not a valid host name")


def test_bad_server_fqdn():
    only_error(config(server={"fqdn": "relay_host.contoso.com"}), "[server]", "fqdn", "is not a valid host name")


def test_good_fqdns():
    loaded = loads(config(connector(fqdn="mail-1.contoso.com"), server={"fqdn": "relay"}))
    assert loaded.connectors[0].fqdn == "mail-1.contoso.com"
    assert loaded.server.fqdn == "relay"


# --- authentication rules (reference §4.2) --------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "field", "fragment"),
    [
        ({"auth_mechanism": ["None", "Tls"]}, "auth_mechanism", "'None' must be used by itself"),
        ({"auth_mechanism": "None,BasicAuth"}, "auth_mechanism", "'None' must be used by itself"),
        (
            {"auth_mechanism": ["BasicAuthRequireTLS", "BasicAuth"]},
            "auth_mechanism",
            "'BasicAuthRequireTLS' also needs 'BasicAuth' and 'Tls'",
        ),
        (
            {"auth_mechanism": ["BasicAuthRequireTLS", "Tls"]},
            "auth_mechanism",
            "'BasicAuthRequireTLS' also needs 'BasicAuth' and 'Tls'",
        ),
        (
            {"auth_mechanism": ["ExternalAuthoritative", "BasicAuth"], "permission_groups": ["ExchangeServers"]},
            "auth_mechanism",
            "the only value allowed with 'ExternalAuthoritative' is 'Tls'",
        ),
        (
            {"auth_mechanism": ["ExternalAuthoritative", "Tls", "Integrated"], "permission_groups": ["ExchangeServers"]},
            "auth_mechanism",
            "the only value allowed with 'ExternalAuthoritative' is 'Tls'",
        ),
        (
            {"auth_mechanism": ["ExternalAuthoritative"], "permission_groups": ["AnonymousUsers"]},
            "permission_groups",
            "'ExternalAuthoritative' needs the 'ExchangeServers' permission group",
        ),
        ({"require_tls": True, "auth_mechanism": ["None"]}, "require_tls", "needs 'Tls'"),
        ({"require_tls": True, "auth_mechanism": ["Integrated"]}, "require_tls", "needs 'Tls'"),
        ({"domain_secure_enabled": True, "auth_mechanism": ["Integrated"]}, "domain_secure_enabled", "needs 'Tls'"),
        (
            {
                "domain_secure_enabled": True,
                "auth_mechanism": ["ExternalAuthoritative", "Tls"],
                "permission_groups": ["ExchangeServers"],
            },
            "domain_secure_enabled",
            "cannot be used with 'ExternalAuthoritative'",
        ),
    ],
)
def test_auth_rules(keys, field, fragment):
    only_error(config(connector(**keys)), RELAY, field, fragment)


def test_domain_secure_without_tls_and_with_external_authoritative_gives_both_errors():
    problems = problems_of(
        config(
            connector(
                domain_secure_enabled=True,
                auth_mechanism=["ExternalAuthoritative"],
                permission_groups=["ExchangeServers"],
            )
        )
    )
    found = find(problems, RELAY, "domain_secure_enabled")
    assert len(found) == 2
    assert any("needs 'Tls'" in p.message for p in found)
    assert any("ExternalAuthoritative" in p.message for p in found)


@pytest.mark.parametrize(
    "keys",
    [
        {"auth_mechanism": ["None"]},
        {"auth_mechanism": ["BasicAuthRequireTLS", "BasicAuth", "Tls"]},
        {"auth_mechanism": ["ExternalAuthoritative"], "permission_groups": ["ExchangeServers"]},
        {"auth_mechanism": ["ExternalAuthoritative", "Tls"], "permission_groups": ["ExchangeServers", "AnonymousUsers"]},
        {"require_tls": True, "auth_mechanism": ["Tls"]},
        {"domain_secure_enabled": True, "auth_mechanism": ["Tls"], "permission_groups": ["Partners"]},
        {"auth_mechanism": ["Tls", "ExchangeServer", "Integrated", "BasicAuth"]},
    ],
)
def test_auth_combinations_that_are_allowed(keys):
    assert loads(config(connector(**keys))).connectors[0].name == "Relay"


def test_none_permission_group_combined_with_others():
    only_error(
        config(connector(permission_groups=["None", "AnonymousUsers"])),
        RELAY,
        "permission_groups",
        "'None' cannot be combined",
    )


# --- permission entries ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        ({"extended_rights": ["ms-Exch-SMTP-Submit"]}, "permissions[0].user", "is required"),
        ({"user": "  ", "extended_rights": ["ms-Exch-SMTP-Submit"]}, "permissions[0].user", "is required"),
        ({"user": 5, "extended_rights": ["ms-Exch-SMTP-Submit"]}, "permissions[0].user", "is required"),
        ({"user": "Apps"}, "permissions[0].extended_rights", "is required"),
        ({"user": "Apps", "extended_rights": []}, "permissions[0].extended_rights", "at least one extended right"),
        (
            {"user": "Apps", "extended_rights": ["ms-Exch-SMTP-Submit", "ms-Exch-Relay"]},
            "permissions[0].extended_rights[1]",
            "'ms-Exch-Relay' is not one of",
        ),
        ({"user": "Apps", "extended_rights": "Send-As"}, "permissions[0].extended_rights[0]", "'Send-As' is not one of"),
        ({"user": "Apps", "extended_rights": 5}, "permissions[0].extended_rights", "5 is not a list"),
        (
            {"user": "Apps", "extended_rights": ["ms-Exch-SMTP-Submit"], "deny": "false"},
            "permissions[0].deny",
            "'false' is not true or false",
        ),
        (
            {"user": "Apps", "extended_rights": ["ms-Exch-SMTP-Submit"], "deny": 0},
            "permissions[0].deny",
            "0 is not true or false",
        ),
    ],
)
def test_bad_permission_entries(entry, field, fragment):
    only_error(config(connector(permissions=[entry])), RELAY, field, fragment)


def test_bad_permission_entry_position_is_named():
    good = {"user": "Apps", "extended_rights": ["ms-Exch-SMTP-Submit"]}
    bad = {"user": "Apps", "extended_rights": ["nope"]}
    only_error(config(connector(permissions=[good, good, bad])), RELAY, "permissions[2].extended_rights[0]", "'nope'")


def test_permission_entry_not_a_table():
    problems = problems_of(config(connector(permissions=["Apps"])))
    assert_problem(problems, RELAY, "permissions[0]", "must be a table")


# --- accepted domains -----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["contoso..com", "-contoso.com", "conto so.com", "*", "*.", "contoso.com.*", "a_b.com"])
def test_bad_accepted_domain(domain):
    only_error(
        config(accepted_domains=[{"domain": domain}]),
        "accepted_domains[0]",
        "domain",
        f"{domain.strip().lower()!r} is not a domain name",
    )


def test_duplicate_accepted_domain_is_case_insensitive():
    data = config(accepted_domains=[{"domain": "contoso.com"}, {"domain": "Contoso.COM", "type": "InternalRelay"}])
    only_error(data, "accepted_domains[1]", "domain", "'contoso.com' is listed twice")


def test_wildcard_accepted_domain_is_accepted():
    loaded = loads(
        config(accepted_domains=[{"domain": "*.contoso.com"}, {"domain": "contoso.com"}, {"domain": "*.Fabrikam.com"}])
    )
    assert [d.domain for d in loaded.accepted_domains] == ["*.contoso.com", "contoso.com", "*.fabrikam.com"]


# --- overlap rules (reference §6.3) ---------------------------------------------------------------


def overlap_error(data: dict[str, object], names: tuple[str, str], ranges: tuple[str, str], fragment: str) -> ConfigProblem:
    problems = problems_of(data)
    errors = [p for p in problems if p.severity is Severity.ERROR]
    assert len(errors) == 1, [str(p) for p in errors]
    (problem,) = errors
    assert problem.field == "remote_ip_ranges"
    assert problem.source == SOURCE
    assert problem.section in {f"connector {names[0]!r}", f"connector {names[1]!r}"}
    for name in names:
        assert f"connector {name!r}" in str(problem)
    for shown in ranges:
        assert shown in problem.message
    assert fragment in problem.message
    assert str(problem).startswith(f"{SOURCE}: {problem.section}: remote_ip_ranges: ")
    return problem


def test_exchange_example_nested_ranges_on_same_binding_are_allowed():
    loaded = loads(
        config(
            connector("Client Frontend Exchange01", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
            connector("Custom Connector A", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0/24"]),
            connector("Custom Connector B", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.75"]),
        )
    )
    assert len(loaded.connectors) == 3


def test_reference_allowed_example_set():
    # §6.3: "0.0.0.0, 192.168.1.1/24, 192.168.1.10" on different connectors.
    loads(
        config(
            connector("A", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0"]),
            connector("B", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.1/24"]),
            connector("C", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.10"]),
        )
    )


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_partial_overlap_on_same_binding_is_refused(order):
    a = connector("A", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0-192.168.1.200"])
    b = connector("B", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.100-192.168.1.255"])
    data = config(*([a, b] if order == "AB" else [b, a]))
    overlap_error(data, ("A", "B"), ("192.168.1.0-192.168.1.200", "192.168.1.100-192.168.1.255"), "partly overlaps")


def test_partial_overlap_of_cidr_blocks_inside_a_wider_range():
    data = config(
        connector("All", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
        connector("Apps", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.1.0.0/16"]),
        connector("Odd", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.1.255.0-10.2.0.255"]),
    )
    overlap_error(data, ("Apps", "Odd"), ("10.1.0.0/16", "10.1.255.0-10.2.0.255"), "partly overlaps")


def test_identical_ranges_on_identical_wildcard_bindings_are_refused():
    data = config(
        connector("Default Frontend", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
        connector("Second Anonymous", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
    )
    overlap_error(data, ("Default Frontend", "Second Anonymous"), ("0.0.0.0-255.255.255.255",), "same range")


def test_identical_ranges_on_identical_specific_bindings_are_refused():
    data = config(
        connector("A", bindings=["10.0.0.1:25"], remote_ip_ranges=["192.168.1.0/24"]),
        connector("B", bindings=["10.0.0.1:25"], remote_ip_ranges=["192.168.1.0/24"]),
    )
    overlap_error(data, ("A", "B"), ("192.168.1.0/24",), "same range")


def test_identical_ranges_written_differently_are_refused():
    data = config(
        connector("A", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0/24"]),
        connector("B", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0-192.168.1.255"]),
    )
    overlap_error(data, ("A", "B"), ("192.168.1.0/24", "192.168.1.0-192.168.1.255"), "same range")


def test_identical_ranges_specific_binding_and_wildcard_binding_are_allowed():
    loaded = loads(
        config(
            connector("Wildcard", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
            connector("Specific", bindings=["10.0.0.1:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
        )
    )
    assert [c.name for c in loaded.connectors] == ["Wildcard", "Specific"]


def test_partial_overlap_on_different_ports_is_allowed():
    loads(
        config(
            connector("A", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0-192.168.1.200"]),
            connector("B", bindings=["0.0.0.0:2525"], remote_ip_ranges=["192.168.1.100-192.168.1.255"]),
        )
    )


def test_identical_ranges_on_different_ports_are_allowed():
    loads(
        config(
            connector("A", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
            connector("B", bindings=["0.0.0.0:587"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
        )
    )


def test_partial_overlap_on_different_specific_ipv4_bindings_is_allowed():
    loads(
        config(
            connector("A", bindings=["10.0.0.1:25"], remote_ip_ranges=["192.168.1.0-192.168.1.200"]),
            connector("B", bindings=["10.0.0.2:25"], remote_ip_ranges=["192.168.1.100-192.168.1.255"]),
        )
    )


def test_identical_ranges_on_different_specific_bindings_are_allowed():
    loads(
        config(
            connector("A", bindings=["10.0.0.1:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
            connector("B", bindings=["10.0.0.2:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
        )
    )


@pytest.mark.parametrize("order", ["wildcard first", "specific first"])
def test_partial_overlap_wildcard_and_specific_on_same_port_is_refused(order):
    wild = connector("Wild", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0-192.168.1.200"])
    spec = connector("Spec", bindings=["10.0.0.1:25"], remote_ip_ranges=["192.168.1.100-192.168.1.255"])
    data = config(*([wild, spec] if order == "wildcard first" else [spec, wild]))
    overlap_error(data, ("Wild", "Spec"), ("192.168.1.0-192.168.1.200", "192.168.1.100-192.168.1.255"), "partly overlaps")


def test_overlap_found_through_any_of_several_bindings():
    data = config(
        connector("A", bindings=["0.0.0.0:587", "10.0.0.1:25"], remote_ip_ranges=["192.168.1.0-192.168.1.200"]),
        connector("B", bindings=["10.0.0.2:2525", "10.0.0.1:25"], remote_ip_ranges=["192.168.1.100-192.168.1.255"]),
    )
    overlap_error(data, ("A", "B"), ("192.168.1.0-192.168.1.200", "192.168.1.100-192.168.1.255"), "partly overlaps")


def test_ipv6_partial_overlap_on_wildcard_binding_is_refused():
    data = config(
        connector("A", bindings=["[::]:25"], remote_ip_ranges=["2001:db8::/64"]),
        connector("B", bindings=["[::]:25"], remote_ip_ranges=["2001:db8::8000:0:0:0-2001:db8:0:1::ffff"]),
    )
    overlap_error(data, ("A", "B"), ("2001:db8::/64",), "partly overlaps")


def test_ipv6_nested_ranges_are_allowed():
    loads(
        config(
            connector("All", bindings=["[::]:25"], remote_ip_ranges=["::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]),
            connector("Site", bindings=["[::]:25"], remote_ip_ranges=["2001:db8::/48"]),
            connector("Lan", bindings=["[::]:25"], remote_ip_ranges=["2001:db8:0:1::/64"]),
            connector("Host", bindings=["[::]:25"], remote_ip_ranges=["2001:db8:0:1::25"]),
        )
    )


def test_ipv6_identical_ranges_on_same_binding_are_refused():
    data = config(
        connector("A", bindings=["[::]:25"], remote_ip_ranges=["2001:db8::/64"]),
        connector("B", bindings=["[::]:25"], remote_ip_ranges=["2001:db8::/64"]),
    )
    overlap_error(data, ("A", "B"), ("2001:db8::/64",), "same range")


def test_ipv6_specific_and_wildcard_partial_overlap_is_refused():
    data = config(
        connector("Wild6", bindings=["[::]:25"], remote_ip_ranges=["2001:db8::/64"]),
        connector("Spec6", bindings=["[2001:db8::1]:25"], remote_ip_ranges=["2001:db8::8000:0:0:0-2001:db8:0:1::ffff"]),
    )
    overlap_error(data, ("Wild6", "Spec6"), ("2001:db8::/64",), "partly overlaps")


def test_ipv6_partial_overlap_on_different_specific_bindings_is_allowed():
    loads(
        config(
            connector("A", bindings=["[2001:db8::1]:25"], remote_ip_ranges=["2001:db8::/64"]),
            connector("B", bindings=["[2001:db8::2]:25"], remote_ip_ranges=["2001:db8::8000:0:0:0-2001:db8:0:1::ffff"]),
        )
    )


def test_ipv4_and_ipv6_wildcards_on_the_same_port_do_not_share_ranges():
    # The IPv6 ranges of A and B partly overlap, but A only listens on IPv4: the bindings do not overlap.
    loads(
        config(
            connector("V4", bindings=["0.0.0.0:25"], remote_ip_ranges=["2001:db8::/64", "10.0.0.0/8"]),
            connector("V6", bindings=["[::]:25"], remote_ip_ranges=["2001:db8::8000:0:0:0-2001:db8:0:1::ffff"]),
        )
    )


def test_dual_stack_connectors_checked_per_family():
    data = config(
        connector("A", bindings=["0.0.0.0:25", "[::]:25"], remote_ip_ranges=["10.0.0.0/8", "2001:db8::/64"]),
        connector("B", bindings=["0.0.0.0:25", "[::]:25"], remote_ip_ranges=["10.0.0.0/16", "2001:db8::/63"]),
    )
    # IPv4 ranges nest; IPv6 ranges nest the other way round: both fine.
    loads(data)
    data = config(
        connector("A", bindings=["0.0.0.0:25", "[::]:25"], remote_ip_ranges=["10.0.0.0/8", "2001:db8::/64"]),
        connector("B", bindings=["0.0.0.0:25", "[::]:25"], remote_ip_ranges=["10.0.0.0/16", "2001:db8::1-2001:db8:1::"]),
    )
    overlap_error(data, ("A", "B"), ("2001:db8::/64", "2001:db8::1-2001:db8:1::"), "partly overlaps")


@pytest.mark.parametrize(
    "ranges",
    [["192.168.1.100-192.168.1.255"], ["192.168.1.0-192.168.1.200"]],
)
def test_disabled_connectors_are_excluded_from_overlap_checks(ranges):
    loaded = loads(
        config(
            connector("A", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0-192.168.1.200"]),
            connector("Off", bindings=["0.0.0.0:25"], remote_ip_ranges=ranges, enabled=False),
        )
    )
    assert [c.enabled for c in loaded.connectors] == [True, False]
    assert [c.name for c in loaded.enabled_connectors] == ["A"]


def test_reenabling_the_disabled_connector_is_refused():
    data = config(
        connector("A", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.0-192.168.1.200"]),
        connector("Off", bindings=["0.0.0.0:25"], remote_ip_ranges=["192.168.1.100-192.168.1.255"], enabled=True),
    )
    overlap_error(data, ("A", "Off"), ("192.168.1.0-192.168.1.200",), "partly overlaps")


def test_a_connectors_own_overlapping_ranges_are_allowed():
    loaded = loads(
        config(
            connector(
                "Own",
                bindings=["0.0.0.0:25"],
                remote_ip_ranges=["10.0.0.0/24", "10.0.0.128-10.0.1.255", "10.0.0.5", "10.0.0.0/24"],
            ),
        )
    )
    assert len(loaded.connectors[0].remote_ip_ranges) == 4


def test_a_connectors_own_overlapping_ranges_nested_in_another_connector():
    loads(
        config(
            connector("Everyone", bindings=["0.0.0.0:25"], remote_ip_ranges=["0.0.0.0-255.255.255.255"]),
            connector("Own", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.0/24", "10.0.0.128-10.0.1.255"]),
            connector("Host", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.200"]),
        )
    )


def test_own_overlapping_ranges_inside_an_equal_wider_range_are_allowed():
    """Each of Own's ranges nests inside Wide's 10.0.0.0/24, and neither is the same range as Wide's.

    The pair is allowed by §6.3 ("as long as one range is completely overlapped by another"); only the
    union of Own's ranges equals Wide's range, which is not a range anyone wrote.
    """
    loads(
        config(
            connector("Wide", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.0/24"]),
            connector("Own", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.0-10.0.0.200", "10.0.0.100-10.0.0.255"]),
        )
    )


def test_partial_overlap_with_one_of_a_connectors_own_overlapping_ranges_is_refused():
    """Other's 10.0.0.0-10.0.0.150 partly overlaps Own's 10.0.0.50-10.0.0.200 (neither contains the other).

    Both are 151 addresses, so for 10.0.0.120 the two connectors tie on the most-specific rule (§6.4):
    exactly the ambiguity the overlap rules exist to refuse.
    """
    data = config(
        connector("Own", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.0-10.0.0.100", "10.0.0.50-10.0.0.200"]),
        connector("Other", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.0-10.0.0.150"]),
    )
    overlap_error(data, ("Own", "Other"), ("10.0.0.0-10.0.0.150", "10.0.0.50-10.0.0.200"), "partly overlaps")


# --- the "accepts nobody" warning (reference §7.7) ------------------------------------------------


def _read(tmp_path: Path, text: str):
    path = tmp_path / "relay.toml"
    path.write_text(text, encoding="utf-8")
    return path, read_config(path)


LOCKED = """
[[connectors]]
name = "Locked"
bindings = ["0.0.0.0:2525"]
remote_ip_ranges = ["10.0.0.0/8"]
"""


def test_connector_without_permission_group_or_allow_entry_is_a_warning(tmp_path):
    path, result = _read(tmp_path, LOCKED)
    assert result.config is not None  # a warning does not refuse the configuration
    assert result.errors == []
    assert len(result.problems) == 1
    problem = assert_problem(
        result.problems,
        "connector 'Locked'",
        "permission_groups",
        "no permission group and no allow entry",
        severity=Severity.WARNING,
        source=str(path),
    )
    assert str(problem) == (
        f"{path}: connector 'Locked': permission_groups: warning: "
        "no permission group and no allow entry: this connector accepts no mail from anyone"
    )


def test_explicit_none_group_and_only_deny_entries_is_a_warning(tmp_path):
    text = LOCKED + """permission_groups = ["None"]
[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Submit"]
deny = true
"""
    path, result = _read(tmp_path, text)
    assert result.config is not None
    assert result.config.connectors[0].permission_groups == frozenset({PermissionGroup.NONE})
    assert_problem(result.problems, "connector 'Locked'", "permission_groups", severity=Severity.WARNING, source=str(path))


def test_custom_group_alone_is_a_warning(tmp_path):
    path, result = _read(tmp_path, LOCKED + 'permission_groups = ["Custom"]\n')
    assert result.config is not None
    assert_problem(result.problems, "connector 'Locked'", "permission_groups", severity=Severity.WARNING, source=str(path))


def test_allow_entry_silences_the_warning(tmp_path):
    text = LOCKED + """[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Submit"]
"""
    _, result = _read(tmp_path, text)
    assert result.config is not None
    assert result.problems == []


def test_permission_group_silences_the_warning(tmp_path):
    _, result = _read(tmp_path, LOCKED + 'permission_groups = ["Partners"]\n')
    assert result.config is not None
    assert result.problems == []


def test_warning_alone_does_not_raise_from_python_api():
    loaded = config_from_mapping({"connectors": [{"name": "Locked", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["10.0.0.0/8"]}]})
    assert loaded.connectors[0].permission_groups == frozenset({PermissionGroup.NONE})


def test_warnings_are_kept_next_to_errors():
    problems = problems_of(
        config(
            connector("Locked", permission_groups=["None"], bindings=["0.0.0.0:2526"]),
            connector("Broken", max_hop_count=0),
        )
    )
    assert_problem(problems, "connector 'Locked'", "permission_groups", severity=Severity.WARNING)
    assert_problem(problems, "connector 'Broken'", "max_hop_count", "outside the allowed range")


# --- several errors are all reported --------------------------------------------------------------


def test_several_reading_errors_are_all_reported():
    data = config(
        connector("A", max_mesage_size="10MB", enabled="perhaps"),
        connector("B", bindings=["0.0.0.0:2526"], max_hop_count="many", permission_groups=["Everyone"]),
        server={"fdqn": "x"},
        smarthost={"port": "25"},
        accepted_domains=[{"domain": "contoso.com", "type": "Weird"}],
    )
    problems = problems_of(data)
    assert_problem(problems, "connector 'A'", "max_mesage_size", "unknown key")
    assert_problem(problems, "connector 'A'", "enabled", "'perhaps'")
    assert_problem(problems, "connector 'B'", "max_hop_count", "'many'")
    assert_problem(problems, "connector 'B'", "permission_groups[0]", "'Everyone'")
    assert_problem(problems, "[server]", "fdqn", "unknown key")
    assert_problem(problems, "[smarthost]", "port", "'25'")
    assert_problem(problems, "accepted_domains[0]", "type", "'Weird'")
    assert len([p for p in problems if p.severity is Severity.ERROR]) == 7


def test_several_validation_errors_are_all_reported():
    data = config(
        connector("Wide", bindings=["0.0.0.0:25"], remote_ip_ranges=["10.0.0.0-10.0.0.200"], banner="hello"),
        connector(
            "Narrow",
            bindings=["0.0.0.0:25"],
            remote_ip_ranges=["10.0.0.100-10.0.0.255"],
            max_recipients_per_message=0,
            auth_mechanism=["None", "Tls"],
        ),
        connector("wide", bindings=["0.0.0.0:2526"], chunking_enabled=False),
        server={"fqdn": "bad_host"},
        accepted_domains=[{"domain": "contoso.com"}, {"domain": "contoso.com"}],
    )
    problems = problems_of(data)
    assert_problem(problems, "connector 'Wide'", "banner", "must start with '220 '")
    assert_problem(problems, "connector 'Narrow'", "max_recipients_per_message", "outside the allowed range 1-512000")
    assert_problem(problems, "connector 'Narrow'", "auth_mechanism", "'None' must be used by itself")
    assert_problem(problems, "connector 'Narrow'", "remote_ip_ranges", "partly overlaps")
    assert_problem(problems, "connector 'wide'", "name", "duplicate")
    assert_problem(problems, "connector 'wide'", "binary_mime_enabled", "chunking_enabled")
    assert_problem(problems, "[server]", "fqdn", "not a valid host name")
    assert_problem(problems, "accepted_domains[1]", "domain", "listed twice")
    assert len([p for p in problems if p.severity is Severity.ERROR]) == 8


def test_reading_and_validation_errors_in_one_file_are_all_reported(tmp_path):
    """The loader promises "every bad key and value is collected so an operator fixes a file in one
    pass": a misspelt key in one connector must not hide a range error and an overlap elsewhere."""
    path = tmp_path / "mixed.toml"
    path.write_text(
        """
[server]
fqdn = "bad_host"

[[connectors]]
name = "A"
bindings = ["0.0.0.0:25"]
remote_ip_ranges = ["10.0.0.0/24"]
permission_groups = ["AnonymousUsers"]
max_mesage_size = "10MB"

[[connectors]]
name = "B"
bindings = ["0.0.0.0:25"]
remote_ip_ranges = ["10.0.0.128-10.0.1.5"]
permission_groups = ["AnonymousUsers"]
max_hop_count = 0
""",
        encoding="utf-8",
    )
    result = read_config(path)
    assert result.config is None
    source = str(path)
    assert_problem(result.problems, "connector 'A'", "max_mesage_size", "unknown key", source=source)
    assert_problem(result.problems, "connector 'B'", "max_hop_count", "outside the allowed range 1-500", source=source)
    assert_problem(result.problems, "[server]", "fqdn", "not a valid host name", source=source)


def test_every_bad_item_of_a_list_is_reported():
    """Two bad remote ranges in one list: both must be named, not only the first."""
    problems = problems_of(config(connector(remote_ip_ranges=["10.0.0.0/33", "192.168.5.10", "10.0.0.300"])))
    assert_problem(problems, RELAY, "remote_ip_ranges[0]", "prefix length 33")
    assert_problem(problems, RELAY, "remote_ip_ranges[2]", "'10.0.0.300'")
