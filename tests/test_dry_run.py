"""Dry-run connectors: tried on live traffic, logged, never obeyed."""

from __future__ import annotations

import json
import smtplib

import pytest

from salmon_relayauth import ConfigError, config_from_mapping

CONFIG = """
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"

[[connectors]]
name = "Default Frontend"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.10", "127.0.0.11"]
permission_groups = ["AnonymousUsers"]

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

# The rule being tried: only 127.0.0.10 should relay from now on.
[[connectors]]
name = "Anonymous Relay (narrower)"
dry_run = true
dry_run_replaces = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.10"]
permission_groups = ["AnonymousUsers"]

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}
"""

MESSAGE = b"Subject: dry run\r\n\r\nbody\r\n"


def decisions(relay) -> list[dict]:
    path = relay.config_path.parent / "logs" / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_dry_run_connector_logs_what_it_would_refuse_but_never_decides(live_relay, smarthost) -> None:
    relay = live_relay(CONFIG)
    # 127.0.0.11 loses the relay right under the rule being tried, yet relays today
    client = smtplib.SMTP("127.0.0.1", relay.port, source_address=("127.0.0.11", 0), timeout=10)
    assert client.sendmail("chris@contoso.com", ["kate@fabrikam.com"], MESSAGE) == {}
    client.quit()
    # 127.0.0.10 is treated the same by both: nothing to report
    client = smtplib.SMTP("127.0.0.1", relay.port, source_address=("127.0.0.10", 0), timeout=10)
    client.sendmail("chris@contoso.com", ["kate@fabrikam.com"], MESSAGE)
    client.quit()
    assert len(smarthost.wait_for(2)) == 2
    relay.stop()
    entries = decisions(relay)
    trials = [entry for entry in entries if entry.get("dry_run")]
    # 127.0.0.10: the trial connector takes it and answers every command as the live one did
    same = [entry for entry in trials if entry["client"].startswith("127.0.0.10:")]
    assert [(entry["command"], entry["dry_run_connector"]) for entry in same] == [("(connect)", "Anonymous Relay (narrower)")]
    trials = [entry for entry in trials if entry["client"].startswith("127.0.0.11:")]
    connect = next(entry for entry in trials if entry["command"] == "(connect)")
    assert connect["dry_run_connector"] == "Default Frontend" and connect["live_connector"] == "Anonymous Relay"
    refusal = next(entry for entry in trials if entry["command"].startswith("RCPT"))
    assert refusal["decision"] == "550 5.7.1 Unable to relay"
    assert refusal["live_decision"] == "250 2.1.5 Recipient OK"
    assert refusal["dry_run_connector"] == "Default Frontend"
    live = [entry for entry in entries if not entry.get("dry_run") and entry["command"].startswith("RCPT")]
    assert all(entry["code"] == 250 for entry in live)


def test_explain_and_selection_ignore_dry_run_connectors() -> None:
    from salmon_relayauth import ConnectionInfo, RelayPolicy

    config = config_from_mapping(
        {
            "connectors": [
                {"name": "All", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["0.0.0.0-255.255.255.255"], "permission_groups": ["AnonymousUsers"]},
                {"name": "Trial", "dry_run": True, "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["192.0.2.1"], "permission_groups": ["AnonymousUsers"]},
            ]
        }
    )
    policy = RelayPolicy(config)
    selection = policy.select_connector(ConnectionInfo("10.0.0.1", 25, "192.0.2.1"))
    assert selection is not None and selection.connector.name == "All"
    assert policy.what_if is not None
    trial = policy.what_if.select_connector(ConnectionInfo("10.0.0.1", 25, "192.0.2.1"))
    assert trial is not None and trial.connector.name == "Trial"


def test_dry_run_configuration_is_validated_as_if_live() -> None:
    base = {"name": "All", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["10.0.0.0/24"], "permission_groups": ["AnonymousUsers"]}
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(
            {"connectors": [base, {"name": "Trial", "dry_run": True, "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["10.0.0.128-10.0.1.5"], "permission_groups": ["AnonymousUsers"]}]},
            "t.toml",
        )
    assert "once the dry run is made live" in str(caught.value) and "partly overlaps" in str(caught.value)
    with pytest.raises(ConfigError, match="dry_run_replaces"):
        config_from_mapping(
            {"connectors": [base, {"name": "Trial", "dry_run": True, "dry_run_replaces": "Nope", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["10.0.0.5"], "permission_groups": ["AnonymousUsers"]}]},
            "t.toml",
        )
