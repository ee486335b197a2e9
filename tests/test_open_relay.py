"""The open-relay check (defaults/open_relay.py): never an open relay, unless the operator says so in writing.

A connector on which an anonymous or externally secured session holds
ms-Exch-SMTP-Accept-Any-Recipient may serve only private space, at most a /16 of IPv4 or a /48 of IPv6.
Checked by ``salmon-relayauth check`` and by ``load_policy`` (which the relay starts through).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from salmon_relayauth import ConfigError, Severity, load_policy
from salmon_relayauth.cli import main

RELAY_RIGHT = "ms-Exch-SMTP-Accept-Any-Recipient"
ANONYMOUS_RELAY = (
    'permission_groups = ["AnonymousUsers"]\n'
    "[[connectors.permissions]]\n"
    'user = "NT AUTHORITY\\\\ANONYMOUS LOGON"\n'
    'extended_rights = ["Ms-Exch-SMTP-Accept-Any-Recipient"]\n'
)
EXTERNALLY_SECURED = 'auth_mechanism = ["ExternalAuthoritative"]\npermission_groups = ["ExchangeServers"]\n'


def connector_toml(name: str, ranges: list[str], security: str, extra: str = "", binding: str = "0.0.0.0:25") -> str:
    quoted = ", ".join(f'"{r}"' for r in ranges)
    return (
        f'[[connectors]]\nname = "{name}"\nbindings = ["{binding}"]\nremote_ip_ranges = [{quoted}]\n{extra}{security}'
    )


def write(tmp_path: Path, *connectors: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text('[server]\nfqdn = "relay.contoso.com"\n[[accepted_domains]]\ndomain = "contoso.com"\n\n' + "\n".join(connectors))
    return path


def check(capsys, path: Path) -> tuple[int, str, str]:
    status = main(["check", str(path)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def check_json(capsys, path: Path) -> tuple[int, dict]:
    status = main(["check", str(path), "--json"])
    return status, json.loads(capsys.readouterr().out)


def open_relay_problems(data: dict) -> list[dict]:
    return [p for p in data["problems"] if "open relay" in p["message"]]


def assert_refused(capsys, path: Path, connector: str, shown_range: str) -> str:
    """Both ways in refuse the file with an error naming the connector, the range and the right."""
    status, out, err = check(capsys, path)
    assert status == 1
    line = next(line for line in err.splitlines() if "open relay" in line)
    assert f"connector {connector!r}" in line
    assert "remote_ip_ranges" in line
    assert shown_range in line
    assert RELAY_RIGHT in line
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    errors = [p for p in caught.value.errors if "open relay" in p.message]
    assert len(errors) >= 1
    assert errors[0].section == f"connector {connector!r}"
    assert errors[0].field == "remote_ip_ranges"
    assert shown_range in errors[0].message and RELAY_RIGHT in errors[0].message
    return line


def assert_fine(capsys, path: Path) -> None:
    status, out, err = check(capsys, path)
    assert status == 0, err
    assert "open relay" not in out + err
    policy = load_policy(path)
    assert not [p for p in policy.plugin_problems() if "open relay" in p.message]


# --- refused -------------------------------------------------------------------------------------------


def test_anonymous_relay_for_every_ipv4_address_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Anonymous Relay", ["0.0.0.0-255.255.255.255"], ANONYMOUS_RELAY))
    line = assert_refused(capsys, path, "Anonymous Relay", "0.0.0.0-255.255.255.255")
    assert "NT AUTHORITY\\ANONYMOUS LOGON" in line
    assert "permission entry 1" in line


def test_public_single_host_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Printer", ["203.0.113.25"], ANONYMOUS_RELAY))
    assert_refused(capsys, path, "Printer", "203.0.113.25")


def test_private_range_wider_than_a_16_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Branch Offices", ["10.0.0.0/8"], ANONYMOUS_RELAY))
    line = assert_refused(capsys, path, "Branch Offices", "10.0.0.0/8")
    assert "/16" in line
    assert "public" not in line


def test_private_range_one_bit_wider_than_a_16_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Relay", ["172.16.0.0/15"], ANONYMOUS_RELAY))
    assert_refused(capsys, path, "Relay", "172.16.0.0/15")


def test_private_range_partly_public_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Relay", ["192.168.255.0-192.169.0.10"], ANONYMOUS_RELAY))
    line = assert_refused(capsys, path, "Relay", "192.168.255.0-192.169.0.10")
    assert "public" in line


def test_ipv6_public_range_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Relay v6", ["2001:db8:1::/64"], ANONYMOUS_RELAY, binding="[::]:25"))
    assert_refused(capsys, path, "Relay v6", "2001:db8:1::/64")


def test_ipv6_every_address_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Relay v6", ["::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"], ANONYMOUS_RELAY, binding="[::]:25"))
    assert_refused(capsys, path, "Relay v6", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")


def test_ipv6_unique_local_wider_than_a_48_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Relay v6", ["fd12:3456:7800::/47"], ANONYMOUS_RELAY, binding="[::]:25"))
    line = assert_refused(capsys, path, "Relay v6", "fd12:3456:7800::/47")
    assert "/48" in line


def test_externally_secured_connector_over_public_range_is_refused(capsys, tmp_path):
    path = write(tmp_path, connector_toml("Anonymous Relay", ["198.51.100.0/24"], EXTERNALLY_SECURED))
    line = assert_refused(capsys, path, "Anonymous Relay", "198.51.100.0/24")
    assert "MS Exchange\\Externally Secured Servers" in line
    assert "permission group ExchangeServers" in line


def test_every_offending_connector_and_range_is_reported(capsys, tmp_path):
    path = write(
        tmp_path,
        connector_toml("One", ["10.0.0.0/8", "192.168.5.10", "203.0.113.0/24"], ANONYMOUS_RELAY, binding="10.0.0.1:25"),
        connector_toml("Two", ["198.51.100.7"], EXTERNALLY_SECURED, binding="10.0.0.2:25"),
    )
    status, data = check_json(capsys, path)
    assert status == 1
    problems = open_relay_problems(data)
    assert {(p["section"], p["field"]) for p in problems} == {("connector 'One'", "remote_ip_ranges"), ("connector 'Two'", "remote_ip_ranges")}
    assert len(problems) == 3
    assert all(p["severity"] == "error" for p in problems)
    messages = " ".join(p["message"] for p in problems)
    assert "10.0.0.0/8" in messages and "203.0.113.0/24" in messages and "198.51.100.7" in messages
    assert "192.168.5.10" not in messages
    assert data["valid"] is False


# --- allowed -------------------------------------------------------------------------------------------


def test_exactly_a_private_16_is_fine(capsys, tmp_path):
    assert_fine(capsys, write(tmp_path, connector_toml("Relay", ["10.1.0.0/16"], ANONYMOUS_RELAY)))


def test_listed_private_hosts_and_ranges_are_fine(capsys, tmp_path):
    path = write(
        tmp_path,
        connector_toml("Relay", ["192.168.5.10", "192.168.5.11", "192.168.6.1-192.168.6.20", "172.16.0.0/16"], ANONYMOUS_RELAY),
    )
    assert_fine(capsys, path)


def test_ipv6_unique_local_48_is_fine(capsys, tmp_path):
    assert_fine(capsys, write(tmp_path, connector_toml("Relay v6", ["fd12:3456:7800::/48"], ANONYMOUS_RELAY, binding="[::]:25")))


def test_externally_secured_private_range_is_fine(capsys, tmp_path):
    assert_fine(capsys, write(tmp_path, connector_toml("Relay", ["192.168.5.0/24"], EXTERNALLY_SECURED)))


def test_default_frontend_without_relay_right_over_every_address_is_fine(capsys, tmp_path):
    path = write(
        tmp_path,
        connector_toml("Default Frontend", ["0.0.0.0-255.255.255.255"], 'permission_groups = ["AnonymousUsers"]\n'),
        connector_toml("Relay", ["192.168.5.10"], ANONYMOUS_RELAY),
    )
    assert_fine(capsys, path)


def test_exchange_users_relay_for_every_address_is_fine(capsys, tmp_path):
    # relay is granted to authenticated users only, never to an anonymous session
    security = 'auth_mechanism = ["Tls", "BasicAuth"]\npermission_groups = ["ExchangeUsers"]\n'
    path = write(tmp_path, connector_toml("Client Frontend", ["0.0.0.0-255.255.255.255"], security, binding="0.0.0.0:587"))
    status, out, err = check(capsys, path)
    assert status == 0
    assert "open relay" not in out + err


def test_deny_entry_removing_the_relay_right_makes_it_fine(capsys, tmp_path):
    deny = (
        "[[connectors.permissions]]\n"
        'user = "NT AUTHORITY\\\\ANONYMOUS LOGON"\n'
        'extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]\n'
        "deny = true\n"
    )
    assert_fine(capsys, write(tmp_path, connector_toml("Relay", ["0.0.0.0-255.255.255.255"], ANONYMOUS_RELAY + deny)))


def test_deny_entry_on_externally_secured_connector_makes_it_fine(capsys, tmp_path):
    deny = (
        "[[connectors.permissions]]\n"
        'user = "MS Exchange\\\\Externally Secured Servers"\n'
        'extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]\n'
        "deny = true\n"
    )
    assert_fine(capsys, write(tmp_path, connector_toml("Relay", ["198.51.100.0/24"], EXTERNALLY_SECURED + deny)))


def test_disabled_connector_is_not_checked(capsys, tmp_path):
    assert_fine(capsys, write(tmp_path, connector_toml("Old", ["0.0.0.0-255.255.255.255"], ANONYMOUS_RELAY, extra="enabled = false\n")))


# --- acknowledged ----------------------------------------------------------------------------------------


def test_acknowledged_open_relay_is_a_warning(capsys, tmp_path):
    path = write(
        tmp_path,
        connector_toml("Anonymous Relay", ["0.0.0.0-255.255.255.255"], ANONYMOUS_RELAY, extra="acknowledge_open_relay = true\n"),
    )
    status, out, err = check(capsys, path)
    assert status == 0
    assert "open relay" not in err
    line = next(line for line in out.splitlines() if "open relay" in line)
    assert "warning:" in line
    assert "connector 'Anonymous Relay'" in line and "0.0.0.0-255.255.255.255" in line and RELAY_RIGHT in line
    policy = load_policy(path)  # the relay starts
    problems = [p for p in policy.plugin_problems() if "open relay" in p.message]
    assert len(problems) == 1 and problems[0].severity is Severity.WARNING
    status, data = check_json(capsys, path)
    assert status == 0 and data["valid"] is True
    assert [p["severity"] for p in open_relay_problems(data)] == ["warning"]


def test_acknowledgement_applies_only_to_its_own_connector(capsys, tmp_path):
    path = write(
        tmp_path,
        connector_toml("Acknowledged", ["10.0.0.0/8"], ANONYMOUS_RELAY, extra="acknowledge_open_relay = true\n", binding="10.0.0.1:25"),
        connector_toml("Not Acknowledged", ["203.0.113.0/24"], ANONYMOUS_RELAY, binding="10.0.0.2:25"),
    )
    status, data = check_json(capsys, path)
    assert status == 1
    severities = {p["section"]: p["severity"] for p in open_relay_problems(data)}
    assert severities == {"connector 'Acknowledged'": "warning", "connector 'Not Acknowledged'": "error"}
    with pytest.raises(ConfigError) as caught:
        load_policy(path)
    assert [p.section for p in caught.value.errors] == ["connector 'Not Acknowledged'"]


def test_blocking_the_open_relay_check_is_explicit(tmp_path):
    path = write(tmp_path, connector_toml("Anonymous Relay", ["0.0.0.0-255.255.255.255"], ANONYMOUS_RELAY))
    text = path.read_text().replace('[server]', '[plugins]\ndisabled = ["relayauth.open_relay"]\n[server]', 1)
    path.write_text(text)
    policy = load_policy(path)
    assert policy.plugin_manager.get_plugin("relayauth.open_relay") is None
