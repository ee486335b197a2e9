"""Tests of the domain deny list, written the way any team tests its relay rules: with the fixtures of
``salmon_relayauth.testing`` (a real relay on 127.0.0.1, a recording smarthost, SMTP clients posing as
other 127.x hosts) and the public API of ``salmon_relayauth``."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import relayauth_domain_denylist
from salmon_relayauth import (
    ENTRY_POINT_GROUP,
    ConfigError,
    ConfigProblem,
    ConnectionInfo,
    RelayPolicy,
    RelaySession,
    Severity,
    config_from_mapping,
    load_policy,
)

NAME = relayauth_domain_denylist.PLUGIN_NAME
SECTION = "[plugins.domain_denylist]"

# How the plugin under test reaches the relay, whether or not this package is pip-installed.
# make_plugin_manager registers the installed entry-point plugins by name, then the caller's own.
# Installed, the entry point already registers this very module as "domain_denylist", and a second
# registration under that name is an error; naming it in `disabled` as well makes the caller's plugin
# replace the entry point instead (a caller's plugin with a disabled name replaces it). Not installed,
# `disabled` must not name it: disabling an unknown plugin is an error too. So disable it only when
# the entry point exists; either way exactly this module runs, once.
INSTALLED = any(ep.name == NAME for ep in entry_points(group=ENTRY_POINT_GROUP))
PLUGIN: dict[str, Any] = {"plugins": [(NAME, relayauth_domain_denylist)], "disabled": [NAME] if INSTALLED else []}

# 127.0.0.10 is a printer that may relay through "Anonymous Relay"; 127.0.0.12 an application server
# that may relay through "App Relay"; every other 127.x host lands on "Default Frontend" and may only
# send to the accepted domain contoso.com.
BASE = """
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"

# tarpit_interval: Exchange holds every refusal to an anonymous client for 5 seconds; not in tests
[[connectors]]
name = "Default Frontend"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.10"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[[connectors]]
name = "App Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.12"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
retry_interval = "00:00:01"
"""

DENYLIST = """
[plugins.domain_denylist]
domains = ["gmail.com", "*.tailspintoys.com"]
reply = "550 5.7.1 Webmail recipients are not allowed from this relay"
"""

REFUSAL = (550, b"5.7.1 Webmail recipients are not allowed from this relay")
OK = (250, b"2.1.5 Recipient OK")
UNABLE = (550, b"5.7.1 Unable to relay")
PRINTER, APP_SERVER, OUTSIDER = "127.0.0.10", "127.0.0.12", "127.0.0.20"
MESSAGE = b"From: scanner@contoso.com\r\nSubject: Scan\r\n\r\nYour scan is attached.\r\n"


@pytest.fixture
def relay(live_relay: Any) -> Any:
    return live_relay(BASE + DENYLIST, **PLUGIN)


def rcpt_replies(smtp_client: Any, port: int, client: str, *recipients: str) -> list[tuple[int, bytes]]:
    """One session from ``client``: MAIL FROM, then each RCPT TO; the RCPT replies."""
    smtp = smtp_client(client, port)
    smtp.ehlo("host.contoso.com")
    assert smtp.mail("scanner@contoso.com")[0] == 250
    replies = [smtp.rcpt(recipient) for recipient in recipients]
    smtp.rset()
    smtp.quit()
    return replies


# --- live over SMTP -------------------------------------------------------------------------------


def test_denied_domain_gets_the_configured_refusal_and_the_rest_still_relays(relay: Any, smarthost: Any, smtp_client: Any) -> None:
    smtp = smtp_client(PRINTER, relay.port)
    smtp.ehlo("printer.contoso.com")
    refused = smtp.sendmail("scanner@contoso.com", ["someone@gmail.com", "kate@fabrikam.com"], MESSAGE)
    smtp.quit()
    assert refused == {"someone@gmail.com": REFUSAL}
    received = smarthost.wait_for(1)
    assert received[0].rcpt_tos == ("kate@fabrikam.com",)  # the allowed external domain arrived, alone
    assert b"Your scan is attached." in received[0].content


def test_the_reply_defaults_to_the_plugins_own(live_relay: Any, smtp_client: Any) -> None:
    relay = live_relay(BASE + '[plugins.domain_denylist]\ndomains = ["gmail.com"]\n', **PLUGIN)
    assert rcpt_replies(smtp_client, relay.port, PRINTER, "a@gmail.com") == [
        (550, b"5.7.1 Recipient domain not allowed from this relay")
    ]
    assert relayauth_domain_denylist.DEFAULT_REPLY == "550 5.7.1 Recipient domain not allowed from this relay"


def test_wildcard_covers_the_domain_and_its_subdomains_only(relay: Any, smtp_client: Any) -> None:
    replies = rcpt_replies(
        smtp_client, relay.port, PRINTER,
        "a@tailspintoys.com", "b@mail.tailspintoys.com", "c@EU.Mail.TailspinToys.com", "d@nottailspintoys.com",
        "e@tailspintoys.com.fabrikam.com", "f@mail.gmail.com",
    )
    assert replies == [REFUSAL, REFUSAL, REFUSAL, OK, OK, OK]  # gmail.com is exact: mail.gmail.com is not on it


def test_a_denied_domain_hidden_in_the_local_part_is_refused(relay: Any, smtp_client: Any) -> None:
    replies = rcpt_replies(
        smtp_client, relay.port, PRINTER,
        "someone%gmail.com@fabrikam.com",              # percent hack: fabrikam.com would pass it on to gmail.com
        "someone%gmail.com%fabrikam.com@contoso.com",  # two hops, the denied one last
        "gmail.com!someone@fabrikam.com",              # bang path
        "someone%fabrikam.com@gmail.com",
        "someone%fabrikam.com@contoso.com",            # hidden hop that is allowed
    )
    assert replies == [REFUSAL, REFUSAL, REFUSAL, REFUSAL, OK]


@pytest.mark.parametrize("written", ["Anonymous Relay", "anonymous relay"])  # connector names are case-insensitive
def test_connectors_limit_the_list_to_those_connectors(live_relay: Any, smtp_client: Any, written: str) -> None:
    relay = live_relay(BASE + DENYLIST + f'connectors = ["{written}"]\n', **PLUGIN)
    assert rcpt_replies(smtp_client, relay.port, PRINTER, "a@gmail.com") == [REFUSAL]
    assert rcpt_replies(smtp_client, relay.port, APP_SERVER, "a@gmail.com", "b@fabrikam.com") == [OK, OK]


def test_the_list_never_lets_a_host_relay_that_may_not(relay: Any, smarthost: Any, smtp_client: Any) -> None:
    replies = rcpt_replies(smtp_client, relay.port, OUTSIDER, "a@fabrikam.com", "b@gmail.com", "c@contoso.com")
    # the default relay check still decides everything else: the list only ever adds refusals (for
    # gmail.com both refuse with 550; fold_decisions picks one of the two texts by its own order)
    assert (replies[0], replies[1][0], replies[2]) == (UNABLE, 550, OK)
    assert smarthost.messages == []


def test_without_a_settings_table_the_plugin_does_nothing(live_relay: Any, smtp_client: Any) -> None:
    relay = live_relay(BASE, **PLUGIN)
    assert relay.receiver.policy.plugin_manager.get_plugin(NAME) is relayauth_domain_denylist  # loaded, yet idle
    assert rcpt_replies(smtp_client, relay.port, PRINTER, "a@gmail.com", "b@mail.tailspintoys.com") == [OK, OK]


# --- configuration --------------------------------------------------------------------------------


def plugin_problems(tmp_path: Path, relayauth_plugin_manager: Any, table: str) -> list[ConfigProblem]:
    """What start-up says about a ``[plugins.domain_denylist]`` table (``load_policy``, as the relay)."""
    path = tmp_path / "relay.toml"
    path.write_text(BASE.replace("{port}", "2525").replace("{smarthost_port}", "2526") + "[plugins.domain_denylist]\n" + table)
    try:
        load_policy(path, relayauth_plugin_manager(**PLUGIN))
    except ConfigError as error:
        return error.problems
    return []


def where(problems: list[ConfigProblem]) -> list[tuple[str, str]]:
    return [(problem.section, problem.field) for problem in problems]


def test_a_valid_table_passes(tmp_path: Path, relayauth_plugin_manager: Any) -> None:
    table = 'domains = ["gmail.com", "*.Example-Mail.net"]\nconnectors = ["App Relay"]\nreply = "450 4.7.1 Not now"\n'
    assert plugin_problems(tmp_path, relayauth_plugin_manager, table) == []


@pytest.mark.parametrize(
    ("table", "field", "message"),
    [
        ('domains = ["gmail.com"]\nreplay = "550 5.7.1 No"\n', "replay", "unknown key (did you mean 'reply'?)"),
        ('reply = "550 5.7.1 No"\n', "domains", "is required"),
        ('domains = "gmail.com"\n', "domains", "must be an array of strings"),
        ("domains = [42]\n", "domains[0]", "42 is not a string"),
        ('domains = ["gmail.com", "gmail..com"]\n', "domains[1]", "'gmail..com' is not a domain name"),
        ('domains = ["*"]\n', "domains[0]", "is not a domain name"),
        ('domains = ["mail.*.com"]\n', "domains[0]", "is not a domain name"),
        ('domains = ["-gmail.com"]\n', "domains[0]", "is not a domain name"),
        ('domains = ["under_score.com"]\n', "domains[0]", "is not a domain name"),
        ('domains = ["192.0.2.1"]\n', "domains[0]", "is an IP address"),
        ('domains = ["bücher.de"]\n', "domains[0]", "xn-- A-label"),
        ('domains = ["gmail.com"]\nconnectors = ["Anonymous Relais"]\n', "connectors[0]",
         "no connector is named 'Anonymous Relais' (did you mean 'Anonymous Relay'?)"),
        ('domains = ["gmail.com"]\nconnectors = "Anonymous Relay"\n', "connectors", "must be an array of strings"),
        ('domains = ["gmail.com"]\nconnectors = []\n', "connectors", "is empty"),
        ('domains = ["gmail.com"]\nreply = "250 OK"\n', "reply", "is not a 4xx or 5xx SMTP reply line"),
        ('domains = ["gmail.com"]\nreply = "550 4.7.1 Mixed classes"\n', "reply", "is not a 4xx or 5xx"),
        ('domains = ["gmail.com"]\nreply = "550 5.7.1 "\n', "reply", "is not a 4xx or 5xx"),
        ('domains = ["gmail.com"]\nreply = "550-5.7.1 Multi-line"\n', "reply", "is not a 4xx or 5xx"),
        ('domains = ["gmail.com"]\nreply = "Denied"\n', "reply", "is not a 4xx or 5xx"),
        ('domains = ["gmail.com"]\nreply = 550\n', "reply", "is not a 4xx or 5xx"),
    ],
)
def test_bad_settings_are_errors_naming_the_table_and_key(
    tmp_path: Path, relayauth_plugin_manager: Any, table: str, field: str, message: str
) -> None:
    problems = plugin_problems(tmp_path, relayauth_plugin_manager, table)
    assert where(problems) == [(SECTION, field)]
    assert problems[0].severity is Severity.ERROR
    assert message in problems[0].message


def test_every_problem_is_reported_at_once(tmp_path: Path, relayauth_plugin_manager: Any) -> None:
    table = 'domains = ["ok.com", "bad..com", 7]\nconnectors = ["Nope"]\nreply = "250 OK"\ncolour = "red"\n'
    problems = plugin_problems(tmp_path, relayauth_plugin_manager, table)
    assert sorted(where(problems)) == sorted(
        [(SECTION, "colour"), (SECTION, "domains[1]"), (SECTION, "domains[2]"), (SECTION, "connectors[0]"), (SECTION, "reply")]
    )


def test_an_unknown_key_with_a_line_break_is_shown_escaped(relayauth_plugin_manager: Any) -> None:
    session = printer_session(relayauth_plugin_manager, {"domains": ["gmail.com"], "x\nforged: line": 1})
    problems = session.policy.plugin_problems()
    assert [(p.section, p.field) for p in problems] == [(SECTION, "'x\\nforged: line'")]


def test_an_empty_list_is_only_a_warning(tmp_path: Path, relayauth_plugin_manager: Any) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(BASE.replace("{port}", "2525").replace("{smarthost_port}", "2526") + "[plugins.domain_denylist]\ndomains = []\n")
    policy = load_policy(path, relayauth_plugin_manager(**PLUGIN))
    assert [(p.field, p.severity) for p in policy.plugin_problems()] == [("domains", Severity.WARNING)]


# --- the decision itself (the operator's log sees reason and source) -------------------------------


def printer_session(relayauth_plugin_manager: Any, table: dict[str, Any]) -> RelaySession:
    """A session of the printer, through the same RelaySession the listener and ``explain`` drive,
    under a configuration built with the Python API (which, unlike start-up, skips plugin checks)."""
    config = config_from_mapping({
        "accepted_domains": [{"domain": "contoso.com"}],
        "connectors": [{
            "name": "Anonymous Relay", "bindings": ["127.0.0.1:2525"], "remote_ip_ranges": ["127.0.0.10"],
            "permission_groups": ["AnonymousUsers"],
            "permissions": [{"user": "NT AUTHORITY\\ANONYMOUS LOGON", "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}],
        }],
        "plugins": {NAME: table},
    })
    session = RelaySession(RelayPolicy(config, relayauth_plugin_manager(**PLUGIN)), ConnectionInfo("127.0.0.1", 2525, PRINTER))
    session.open()
    session.helo("printer.contoso.com")
    assert session.mail("<scanner@contoso.com>").code == 250
    return session


def test_the_decision_names_the_plugin_and_the_matched_entry(relayauth_plugin_manager: Any) -> None:
    session = printer_session(relayauth_plugin_manager, {"domains": ["gmail.com", "*.tailspintoys.com"]})
    decision = session.rcpt("<kim%eu.tailspintoys.com@fabrikam.com>")
    assert decision.render() == relayauth_domain_denylist.DEFAULT_REPLY
    assert decision.source == NAME
    assert "'*.tailspintoys.com'" in decision.reason and "eu.tailspintoys.com" in decision.reason
    allowed = session.rcpt("<kate@fabrikam.com>")
    assert allowed.code == 250 and allowed.source == "relayauth.relay"


def test_settings_that_skipped_validation_fail_closed(relayauth_plugin_manager: Any) -> None:
    # a policy built straight from config_from_mapping never ran the plugin's checks: it must still
    # not relay on a deny list it cannot read
    session = printer_session(relayauth_plugin_manager, {"domains": ["gmail..com"]})
    decision = session.rcpt("<kate@fabrikam.com>")
    assert (decision.code, decision.status, decision.source) == (451, "4.3.5", NAME)
    assert "domains[0]" in decision.reason
