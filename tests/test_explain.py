"""``salmon-relayauth explain``: what the relay would do for a client, and why (DESIGN.md: explain and
the live listener drive the same RelaySession, so they can never disagree)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from salmon_relayauth import ConnectionInfo, RelayPolicy, load_policy, make_plugin_manager
from salmon_relayauth.cli import main
from salmon_relayauth.cli.explain import explain, render
from salmon_relayauth.session import RelaySession

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "configs" / "exchange_example.toml"
RELAY_RIGHT = "ms-Exch-SMTP-Accept-Any-Recipient"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def explain_sample(capsys, client: str, *extra: str, rcpt: str = "kate@fabrikam.com") -> tuple[int, str, str]:
    return run(capsys, "explain", str(SAMPLE), "--client", client, "--mail-from", "chris@contoso.com", "--rcpt", rcpt, *extra)


def explain_json(capsys, config: Path, *argv: str) -> dict:
    status, out, err = run(capsys, "explain", str(config), *argv, "--json")
    assert status == 0, err
    assert err == ""
    return json.loads(out)


def line_with(text: str, needle: str) -> str:
    lines = [line for line in text.splitlines() if needle in line]
    assert len(lines) >= 1, f"no line contains {needle!r}:\n{text}"
    return lines[0]


# --- the sample configuration -------------------------------------------------------------------------


def test_allowed_host_lands_on_anonymous_relay_and_relays(capsys):
    status, out, err = explain_sample(capsys, "192.168.5.10")
    assert status == 0 and err == ""
    assert line_with(out, "Connector:").startswith("Connector: Anonymous Relay (remote range 192.168.5.10, 1 address(es)")
    assert "runner-up: Default Frontend (remote range 0.0.0.0-255.255.255.255" in out
    assert "Runs as: NT AUTHORITY\\ANONYMOUS LOGON" in out
    relay_line = line_with(out, RELAY_RIGHT)
    assert relay_line.split()[0] == "granted"
    assert "permission entry 1" in relay_line
    submit_line = line_with(out, "ms-Exch-SMTP-Submit")
    assert submit_line.split()[0] == "granted" and "permission group AnonymousUsers" in submit_line
    assert line_with(out, "ms-Exch-Bypass-Message-Size-Limit").split()[0] == "-"
    assert "C: MAIL FROM:<chris@contoso.com>" in out
    assert "S: 250 2.1.0 Sender OK" in out
    assert "C: RCPT TO:<kate@fabrikam.com>" in out
    assert "S: 250 2.1.5 Recipient OK" in out
    assert "S: 354 Start mail input; end with <CRLF>.<CRLF>" in out
    assert line_with(out, "Verdict:").startswith("Verdict: accepted")
    assert "'Anonymous Relay'" in line_with(out, "Verdict:")


@pytest.mark.parametrize("client", ["192.168.5.11", "10.1.200.3", "192.168.6.20"])
def test_every_listed_range_of_the_sample_relays(capsys, client):
    status, out, _ = explain_sample(capsys, client)
    assert status == 0
    assert "Connector: Anonymous Relay" in out
    assert "S: 250 2.1.5 Recipient OK" in out


@pytest.mark.parametrize("client", ["203.0.113.9", "192.168.5.12", "10.2.0.1", "192.168.6.21"])
def test_host_outside_the_ranges_lands_on_default_frontend_and_cannot_relay(capsys, client):
    status, out, err = explain_sample(capsys, client)
    assert status == 0 and err == ""
    assert "Connector: Default Frontend (remote range 0.0.0.0-255.255.255.255" in out
    assert "runner-up" not in out
    assert "S: 550 5.7.1 Unable to relay" in out
    assert "S: 250 2.1.5 Recipient OK" not in out
    assert line_with(out, RELAY_RIGHT).split()[0] == "-"
    assert "S: 503 5.5.2 Need rcpt command" in out
    assert line_with(out, "Verdict:").startswith("Verdict: refused")


def test_outside_host_may_still_send_to_the_accepted_domain(capsys):
    status, out, _ = explain_sample(capsys, "203.0.113.9", rcpt="kate@contoso.com")
    assert status == 0
    assert "Connector: Default Frontend" in out
    assert "S: 250 2.1.5 Recipient OK" in out


def test_json_structure_for_allowed_host(capsys):
    data = explain_json(
        capsys, SAMPLE, "--client", "192.168.5.10", "--mail-from", "chris@contoso.com",
        "--rcpt", "kate@fabrikam.com", "--rcpt", "kate@contoso.com",
    )
    assert data["client"] == "192.168.5.10"
    assert data["local"] == "0.0.0.0:2525"
    assert data["local_assumed"] is True
    assert data["connector"]["name"] == "Anonymous Relay"
    assert data["connector"]["matched_range"] == "192.168.5.10"
    assert data["connector"]["range_size"] == 1
    assert data["connector"]["selected_by"] == "relayauth.selection"
    assert [r["name"] for r in data["runners_up"]] == ["Default Frontend"]
    assert data["runners_up"][0]["matched_range"] == "0.0.0.0-255.255.255.255"
    assert data["principals"] == ["NT AUTHORITY\\ANONYMOUS LOGON"]
    rights = {r["right"]: r for r in data["rights"]}
    assert set(rights) >= {
        "ms-Exch-SMTP-Submit", RELAY_RIGHT, "ms-Exch-SMTP-Accept-Any-Sender", "ms-Exch-Accept-Headers-Routing",
    }
    for right in rights.values():
        assert set(right) == {"right", "granted", "allowed_by", "denied_by"}
    relay = rights[RELAY_RIGHT]
    assert relay["granted"] is True
    assert len(relay["allowed_by"]) == 1 and relay["allowed_by"][0].startswith("permission entry 1")
    assert relay["denied_by"] == []
    assert rights["ms-Exch-SMTP-Submit"]["allowed_by"] == ["permission group AnonymousUsers"]
    granted = {name for name, right in rights.items() if right["granted"]}
    assert granted == {
        "ms-Exch-Accept-Headers-Routing", RELAY_RIGHT, "ms-Exch-SMTP-Accept-Any-Sender",
        "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender", "ms-Exch-SMTP-Submit",
    }
    steps = data["conversation"]
    assert [s["command"] for s in steps] == [
        "(connect)", "EHLO explain.invalid", "MAIL FROM:<chris@contoso.com>",
        "RCPT TO:<kate@fabrikam.com>", "RCPT TO:<kate@contoso.com>", "DATA",
    ]
    assert [s["reply"] for s in steps[2:]] == [
        "250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "250 2.1.5 Recipient OK",
        "354 Start mail input; end with <CRLF>.<CRLF>",
    ]
    assert steps[0]["code"] == 220
    assert steps[3]["source"] == "relayauth.relay"
    assert RELAY_RIGHT in steps[3]["reason"]
    assert set(steps[0]) == {"command", "reply", "code", "reason", "source"}
    assert data["verdict"].startswith("accepted")


def test_json_for_outside_host(capsys):
    data = explain_json(capsys, SAMPLE, "--client", "203.0.113.9", "--mail-from", "chris@contoso.com", "--rcpt", "kate@fabrikam.com")
    assert data["connector"]["name"] == "Default Frontend"
    assert data["runners_up"] == []
    relay = next(r for r in data["rights"] if r["right"] == RELAY_RIGHT)
    assert relay == {"right": RELAY_RIGHT, "granted": False, "allowed_by": [], "denied_by": []}
    rcpt = next(s for s in data["conversation"] if s["command"].startswith("RCPT"))
    assert rcpt["reply"] == "550 5.7.1 Unable to relay"
    assert rcpt["code"] == 550
    assert data["verdict"].startswith("refused")


def test_null_sender(capsys):
    data = explain_json(capsys, SAMPLE, "--client", "203.0.113.9", "--mail-from", "", "--rcpt", "kate@contoso.com")
    mail = data["conversation"][2]
    assert mail["command"] == "MAIL FROM:<>"
    assert mail["reply"] == "250 2.1.0 Sender OK"


# --- a configuration written for the options --------------------------------------------------------

OPTIONS_CONFIG = """
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"

[authentication]
users_file = "users"

[[connectors]]
name = "Public"
bindings = ["0.0.0.0:25"]
remote_ip_ranges = ["192.168.0.0/16"]
permission_groups = ["AnonymousUsers"]

[[connectors]]
name = "Internal NIC"
bindings = ["10.1.1.1:25"]
remote_ip_ranges = ["192.168.0.0/16"]
permission_groups = ["AnonymousUsers"]

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[[connectors]]
name = "Submission"
bindings = ["0.0.0.0:587"]
remote_ip_ranges = ["192.168.0.0/16"]
auth_mechanism = ["Tls", "BasicAuth"]
permission_groups = ["AnonymousUsers", "ExchangeUsers"]

[[connectors]]
name = "Submission TLS"
bindings = ["0.0.0.0:588"]
remote_ip_ranges = ["192.168.0.0/16"]
auth_mechanism = ["Tls", "BasicAuth", "BasicAuthRequireTLS"]
permission_groups = ["AnonymousUsers", "ExchangeUsers"]

[[connectors]]
name = "Plain Codes"
bindings = ["0.0.0.0:2500"]
remote_ip_ranges = ["192.168.0.0/16"]
permission_groups = ["AnonymousUsers"]
enhanced_status_codes_enabled = false
"""


@pytest.fixture
def options_config(tmp_path: Path) -> Path:
    from salmon_relayauth.engine.passwords import hash_password

    (tmp_path / "users").write_text(f"alice@contoso.com:{hash_password('pw')}\n")
    path = tmp_path / "relay.toml"
    path.write_text(OPTIONS_CONFIG)
    return path


def ask(capsys, config: Path, *argv: str, rcpt: str = "kate@fabrikam.com", sender: str = "alice@contoso.com") -> dict:
    return explain_json(capsys, config, "--client", "192.168.5.50", "--mail-from", sender, "--rcpt", rcpt, *argv)


def replies_of(data: dict) -> dict[str, str]:
    return {step["command"].split(":")[0].split()[0]: step["reply"] for step in data["conversation"]}


def test_local_chooses_a_specific_binding(capsys, options_config):
    internal = ask(capsys, options_config, "--local", "10.1.1.1:25")
    assert internal["local"] == "10.1.1.1:25"
    assert internal["local_assumed"] is False
    assert internal["connector"]["name"] == "Internal NIC"
    assert internal["connector"]["binding"] == "specific local IP"
    assert [r["name"] for r in internal["runners_up"]] == ["Public"]
    assert replies_of(internal)["RCPT"] == "250 2.1.5 Recipient OK"

    other_nic = ask(capsys, options_config, "--local", "10.1.1.2:25")
    assert other_nic["connector"]["name"] == "Public"
    assert other_nic["connector"]["binding"] == "wildcard"
    assert other_nic["runners_up"] == []
    assert replies_of(other_nic)["RCPT"] == "550 5.7.1 Unable to relay"


def test_local_port_chooses_the_connector(capsys, options_config):
    assert ask(capsys, options_config, "--local", "10.1.1.2:587")["connector"]["name"] == "Submission"
    assert ask(capsys, options_config, "--local", "10.1.1.2:588")["connector"]["name"] == "Submission TLS"
    assert ask(capsys, options_config)["connector"]["name"] == "Public"  # first binding assumed
    assert ask(capsys, options_config)["local_assumed"] is True


def test_auth_on_a_basic_auth_connector(capsys, options_config):
    anonymous = ask(capsys, options_config, "--local", "10.1.1.2:587")
    assert anonymous["principals"] == ["NT AUTHORITY\\ANONYMOUS LOGON"]
    assert replies_of(anonymous)["RCPT"] == "550 5.7.1 Unable to relay"

    data = ask(capsys, options_config, "--local", "10.1.1.2:587", "--auth", "alice@contoso.com")
    assert data["principals"] == ["NT AUTHORITY\\Authenticated Users", "alice@contoso.com"]
    assert any("alice@contoso.com" in note and "AUTH" in note for note in data["notes"])
    assert "AUTH" not in replies_of(data)
    relay = next(r for r in data["rights"] if r["right"] == RELAY_RIGHT)
    assert relay["granted"] is True and relay["allowed_by"] == ["permission group ExchangeUsers"]
    assert replies_of(data)["MAIL"] == "250 2.1.0 Sender OK"
    assert replies_of(data)["RCPT"] == "250 2.1.5 Recipient OK"
    assert data["verdict"].startswith("accepted")


def test_auth_on_a_connector_without_basic_auth(capsys, options_config):
    data = ask(capsys, options_config, "--local", "10.1.1.2:25", "--auth", "alice@contoso.com")
    assert data["connector"]["name"] == "Public"
    assert data["principals"] == ["NT AUTHORITY\\ANONYMOUS LOGON"]
    assert replies_of(data)["AUTH"] == "504 5.7.4 Unrecognized authentication type"
    assert any("stays anonymous" in note for note in data["notes"])
    assert replies_of(data)["RCPT"] == "550 5.7.1 Unable to relay"


def test_auth_requiring_tls_needs_tls(capsys, options_config):
    without = ask(capsys, options_config, "--local", "10.1.1.2:588", "--auth", "alice@contoso.com")
    assert replies_of(without)["AUTH"] == "504 5.7.4 Unrecognized authentication type"
    assert replies_of(without)["RCPT"] == "550 5.7.1 Unable to relay"
    with_tls = ask(capsys, options_config, "--local", "10.1.1.2:588", "--auth", "alice@contoso.com", "--tls")
    assert "AUTH" not in replies_of(with_tls)
    assert replies_of(with_tls)["RCPT"] == "250 2.1.5 Recipient OK"
    assert "assuming STARTTLS completed" in with_tls["notes"]


def test_auth_in_text_output(capsys, options_config):
    status, out, _ = run(
        capsys, "explain", str(options_config), "--client", "192.168.5.50", "--local", "10.1.1.2:25",
        "--auth", "alice@contoso.com", "--mail-from", "alice@contoso.com", "--rcpt", "kate@fabrikam.com",
    )
    assert status == 0
    assert "C: AUTH LOGIN" in out
    assert "S: 504 5.7.4 Unrecognized authentication type" in out
    assert "Note: the connector does not offer AUTH here, so the session stays anonymous" in out


def test_enhanced_status_codes_disabled_in_explain(capsys, options_config):
    data = ask(capsys, options_config, "--local", "10.1.1.2:2500")
    assert data["connector"]["name"] == "Plain Codes"
    assert replies_of(data)["MAIL"] == "250 Sender OK"
    assert replies_of(data)["RCPT"] == "550 Unable to relay"
    assert replies_of(data)["DATA"] == "503 Need rcpt command"


# --- refused connections and bad input -----------------------------------------------------------------


def test_unmatched_client_gets_421(capsys, options_config):
    data = explain_json(
        capsys, options_config, "--client", "203.0.113.9", "--mail-from", "a@contoso.com", "--rcpt", "b@fabrikam.com"
    )
    assert data["connector"] is None
    assert data["principals"] == [] and data["rights"] == []
    assert len(data["conversation"]) == 1
    assert data["conversation"][0]["command"] == "(connect)"
    assert data["conversation"][0]["reply"].startswith("421 4.3.2 ")
    assert data["conversation"][0]["code"] == 421
    assert "203.0.113.9" in data["verdict"] and data["verdict"].startswith("refused at connect")


def test_unbound_local_endpoint_gets_421(capsys):
    status, out, _ = explain_sample(capsys, "192.168.5.10", "--local", "127.0.0.1:2600")
    assert status == 0
    assert "S: 421 4.3.2 Service not available, closing transmission channel" in out
    assert "Connector:" not in out
    assert "refused at connect" in line_with(out, "Verdict:")


@pytest.mark.parametrize("client", ["192.168.5.300", "not-an-ip", "192.168.5.10/32", ""])
def test_bad_client_exits_2_naming_the_value(capsys, client):
    status, out, err = explain_sample(capsys, client)
    assert status == 2
    assert out == ""
    assert repr(client) in err


def test_bad_local_exits_2_naming_the_value(capsys):
    status, out, err = explain_sample(capsys, "192.168.5.10", "--local", "10.1.1.1")
    assert status == 2
    assert "'10.1.1.1'" in err


def test_ipv6_client_without_ipv6_binding_exits_2(capsys):
    status, _, err = explain_sample(capsys, "2001:db8::1")
    assert status == 2
    assert "2001:db8::1" in err and "--local" in err


def test_invalid_config_exits_1_naming_the_field(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[connectors]]\nname = "Relay"\nbindings = ["0.0.0.0:25"]\nremote_ip_ranges = ["192.168.5.10"]\n'
        'permission_groups = ["AnonymousUsers"]\nmax_hop_count = 0\n'
    )
    status, out, err = run(capsys, "explain", str(path), "--client", "192.168.5.10", "--mail-from", "a@b.example", "--rcpt", "c@d.example")
    assert status == 1
    assert out == ""
    assert "connector 'Relay'" in err and "max_hop_count" in err


def test_open_relay_config_exits_1(capsys, tmp_path):
    path = tmp_path / "open.toml"
    path.write_text(
        '[[connectors]]\nname = "Open"\nbindings = ["0.0.0.0:25"]\nremote_ip_ranges = ["0.0.0.0-255.255.255.255"]\n'
        'permission_groups = ["AnonymousUsers"]\n[[connectors.permissions]]\n'
        'user = "NT AUTHORITY\\\\ANONYMOUS LOGON"\nextended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]\n'
    )
    status, _, err = run(capsys, "explain", str(path), "--client", "192.168.5.10", "--mail-from", "a@b.example", "--rcpt", "c@d.example")
    assert status == 1
    assert "'Open'" in err and RELAY_RIGHT in err


def test_missing_config_file_exits_1(capsys, tmp_path):
    status, _, err = run(capsys, "explain", str(tmp_path / "nope.toml"), "--client", "192.168.5.10", "--mail-from", "a@b.example", "--rcpt", "c@d.example")
    assert status == 1
    assert "nope.toml" in err


# --- as a program ----------------------------------------------------------------------------------


def test_explain_as_a_subprocess():
    completed = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", "explain", str(SAMPLE), "--client", "192.168.5.10",
         "--mail-from", "chris@contoso.com", "--rcpt", "kate@fabrikam.com", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(completed.stdout)
    assert data["connector"]["name"] == "Anonymous Relay"
    assert [r["name"] for r in data["runners_up"]] == ["Default Frontend"]
    assert next(s for s in data["conversation"] if s["command"].startswith("RCPT"))["reply"] == "250 2.1.5 Recipient OK"

    bad = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", "explain", str(SAMPLE), "--client", "300.1.1.1",
         "--mail-from", "chris@contoso.com", "--rcpt", "kate@fabrikam.com"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert bad.returncode == 2
    assert "'300.1.1.1'" in bad.stderr


# --- explain and a live session give the same replies ------------------------------------------------


@pytest.mark.parametrize("client", ["192.168.5.10", "192.168.6.3", "203.0.113.9", "10.1.0.1"])
@pytest.mark.parametrize("sender", ["chris@contoso.com", "", "someone@fabrikam.com"])
def test_explain_and_a_direct_session_agree(client, sender):
    recipients = ["kate@fabrikam.com", "kate@contoso.com", "victim%evil.example@contoso.com", "x@[192.0.2.1]"]
    policy = load_policy(SAMPLE)
    connection = ConnectionInfo("0.0.0.0", 2525, client)
    result = explain(policy, connection, sender, recipients)
    explained = [(step["command"], step["reply"]) for step in result.conversation[1:]]

    # the same conversation, driven directly on a fresh policy
    direct_policy = RelayPolicy(policy.config, make_plugin_manager(load_entrypoints=False))
    session = RelaySession(direct_policy, connection)
    assert session.open().code == 220
    live = [("EHLO explain.invalid", session.helo("explain.invalid").render())]
    live.append((f"MAIL FROM:<{sender}>", session.mail(f"<{sender}>").render()))
    for recipient in recipients:
        live.append((f"RCPT TO:<{recipient}>", session.rcpt(f"<{recipient}>").render()))
    live.append(("DATA", session.data().render()))
    assert explained == live
    assert result.principals == sorted(session.session.principals)
    assert {r["right"] for r in result.rights if r["granted"]} == {r.value for r in session.session.rights.granted}
    assert result.connector is not None and result.connector["name"] == session.session.connector.name


def test_render_is_the_text_of_explain():
    policy = load_policy(SAMPLE)
    result = explain(policy, ConnectionInfo("0.0.0.0", 2525, "192.168.5.10"), "chris@contoso.com", ["kate@fabrikam.com"])
    text = render(result)
    assert "Connector: Anonymous Relay" in text
    assert "runner-up: Default Frontend" in text
    assert "S: 250 2.1.5 Recipient OK" in text


def test_denied_right_is_shown_with_the_entry_that_denies_it(capsys, tmp_path):
    path = tmp_path / "deny.toml"
    path.write_text(
        '[[accepted_domains]]\ndomain = "contoso.com"\n'
        '[[connectors]]\nname = "Relay"\nbindings = ["0.0.0.0:25"]\nremote_ip_ranges = ["192.168.5.0/24"]\n'
        'permission_groups = ["AnonymousUsers"]\n'
        '[[connectors.permissions]]\nuser = "NT AUTHORITY\\\\ANONYMOUS LOGON"\n'
        'extended_rights = ["ms-Exch-SMTP-Accept-Authoritative-Domain-Sender"]\ndeny = true\n'
    )
    args = ("--client", "192.168.5.7", "--mail-from", "chris@contoso.com", "--rcpt", "kate@contoso.com")
    data = explain_json(capsys, path, *args)
    right = next(r for r in data["rights"] if r["right"] == "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender")
    assert right["granted"] is False
    assert right["allowed_by"] == ["permission group AnonymousUsers"]
    assert len(right["denied_by"]) == 1 and right["denied_by"][0].startswith("permission entry 1")
    mail = data["conversation"][2]
    assert mail["reply"] == "550 5.7.1 Anonymous client does not have permissions to send as this sender"
    assert [s["command"] for s in data["conversation"]] == ["(connect)", "EHLO explain.invalid", "MAIL FROM:<chris@contoso.com>"]
    assert data["verdict"].startswith("refused at MAIL FROM")

    status, out, _ = run(capsys, "explain", str(path), *args)
    assert status == 0
    line = line_with(out, "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender")
    assert line.split()[0] == "denied"
    assert "denied by permission entry 1" in line and "over allow by permission group AnonymousUsers" in line
