"""The admin verbs (new-/set-/get-/remove-connector, add-/remove-/get-permission), driven as an operator would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from salmon_relayauth.config.fields import CONNECTOR_FIELDS

from salmon_relayauth import load_config
from salmon_relayauth.cli import main
from salmon_relayauth.config import editor
from salmon_relayauth.engine.permissions import connector_grants, fold_grants

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "configs" / "exchange_example.toml"
ANONYMOUS = "NT AUTHORITY\\ANONYMOUS LOGON"
EXTERNALLY_SECURED = "MS Exchange\\Externally Secured Servers"

# The rights tables of "Allow anonymous relay on Exchange servers", copied from the document.
METHOD_1_RIGHTS = {
    "ms-Exch-Accept-Headers-Routing",
    "ms-Exch-SMTP-Accept-Any-Recipient",
    "ms-Exch-SMTP-Accept-Any-Sender",
    "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
    "ms-Exch-SMTP-Submit",
}
METHOD_2_RIGHTS = {
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

DEFAULT_ONLY = """\
# A server as setup leaves it: only the Default Frontend connector.
[server]
fqdn = "mbx01.contoso.com"

[[accepted_domains]]
domain = "contoso.com"

# Anyone may connect and submit mail for contoso.com.
[[connectors]]
name = "Default Frontend"
bindings = ["0.0.0.0:2525"]   # all available IPv4
remote_ip_ranges = ["0.0.0.0-255.255.255.255"]
# anonymous submission, never relay
permission_groups = ["AnonymousUsers"]

# where accepted mail goes
[smarthost]
host = "127.0.0.1"
port = 2526
"""

STEP_1 = [
    "new-connector", "--name", "Anonymous Relay", "--transport-role", "FrontendTransport", "--custom",
    "--bindings", "0.0.0.0:2525", "--remote-ip-ranges", "192.168.5.10,192.168.5.11",
]


def run(capsys, *argv: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def verb(capsys, name: str, path: Path, *rest: object) -> tuple[int, str, str]:
    return run(capsys, name, path, *rest)


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(DEFAULT_ONLY, encoding="utf-8")
    return path


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "relay.toml"
    shutil.copy(SAMPLE, path)
    return path


def step_1(capsys, path: Path) -> None:
    status, out, err = run(capsys, STEP_1[0], path, *STEP_1[1:])
    assert status == 0, err
    assert "'Anonymous Relay' created" in out


def effective(path: Path, connector: str, principal: str) -> set[str]:
    config = load_config(path)
    rights = fold_grants(connector_grants(config.connector(connector)), [principal])
    return {right.value for right in rights.granted}


def toml(path: Path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def connector_table(path: Path, name: str) -> dict:
    return next(table for table in toml(path)["connectors"] if table["name"] == name)


# --- the source document, replayed step by step ----------------------------------------------------


def test_method_1_configure_the_connections_as_anonymous(capsys, fresh):
    step_1(capsys, fresh)
    # Set-ReceiveConnector "Anonymous Relay" -PermissionGroups AnonymousUsers
    assert verb(capsys, "set-connector", fresh, "Anonymous Relay", "--permission-groups", "AnonymousUsers")[0] == 0
    # Get-ReceiveConnector "Anonymous Relay" | Add-ADPermission -User "NT AUTHORITY\ANONYMOUS LOGON"
    #     -ExtendedRights "Ms-Exch-SMTP-Accept-Any-Recipient"
    status, _, err = verb(
        capsys, "add-permission", fresh, "Anonymous Relay",
        "--user", ANONYMOUS, "--extended-rights", "Ms-Exch-SMTP-Accept-Any-Recipient",
    )
    assert status == 0, err
    assert effective(fresh, "Anonymous Relay", ANONYMOUS) == METHOD_1_RIGHTS
    # the Default Frontend connector is untouched: anonymous senders there still cannot relay
    assert "ms-Exch-SMTP-Accept-Any-Recipient" not in effective(fresh, "Default Frontend", ANONYMOUS)
    assert connector_table(fresh, "Anonymous Relay")["permissions"] == [
        {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}
    ]


def test_method_2_configure_the_connections_as_externally_secured(capsys, fresh):
    step_1(capsys, fresh)
    # Set-ReceiveConnector "Anonymous Relay" -AuthMechanism ExternalAuthoritative -PermissionGroups ExchangeServers
    status, _, err = verb(
        capsys, "set-connector", fresh, "Anonymous Relay",
        "--auth-mechanism", "ExternalAuthoritative", "--permission-groups", "ExchangeServers",
    )
    assert status == 0, err
    assert effective(fresh, "Anonymous Relay", EXTERNALLY_SECURED) == METHOD_2_RIGHTS
    table = connector_table(fresh, "Anonymous Relay")
    assert table["auth_mechanism"] == ["ExternalAuthoritative"]
    assert table["permission_groups"] == ["ExchangeServers"]


def test_how_do_you_know_this_worked(capsys, fresh):
    """The document's verification commands: Format-List of four properties, Get-ADPermission -User."""
    step_1(capsys, fresh)
    verb(capsys, "set-connector", fresh, "Anonymous Relay", "--permission-groups", "AnonymousUsers")
    verb(capsys, "add-permission", fresh, "Anonymous Relay", "--user", ANONYMOUS,
         "--extended-rights", "ms-Exch-SMTP-Accept-Any-Recipient")
    status, out, _ = verb(capsys, "get-connector", fresh, "Anonymous Relay",
                          "--property", "Enabled,TransportRole,Bindings,RemoteIPRanges")
    assert status == 0
    assert out.splitlines() == [
        "Enabled        : True",
        "TransportRole  : FrontendTransport",
        "Bindings       : {0.0.0.0:2525}",
        "RemoteIPRanges : {192.168.5.10, 192.168.5.11}",
    ]
    status, out, _ = verb(capsys, "get-permission", fresh, "Anonymous Relay", "--user", ANONYMOUS, "--json")
    rows = json.loads(out)
    assert [(row["source"], row["deny"], row["inherited"]) for row in rows] == [
        ("PermissionGroup AnonymousUsers", False, False),
        ("explicit", False, False),
    ]
    assert set().union(*(row["extended_rights"] for row in rows)) == METHOD_1_RIGHTS


def test_new_connector_writes_only_the_keys_given(capsys, fresh):
    step_1(capsys, fresh)
    assert connector_table(fresh, "Anonymous Relay") == {
        "name": "Anonymous Relay",
        "usage": "Custom",
        "transport_role": "FrontendTransport",
        "bindings": ["0.0.0.0:2525"],
        "remote_ip_ranges": ["192.168.5.10", "192.168.5.11"],
    }
    status, _, _ = verb(capsys, "new-connector", fresh, "--name", "Printers",
                        "--bindings", "10.1.1.1:2525", "--remote-ip-ranges", "192.168.7.0/24")
    assert status == 0
    assert "usage" not in connector_table(fresh, "Printers")


def test_new_connector_usage_option(capsys, fresh):
    status, _, err = verb(capsys, "new-connector", fresh, "--name", "Web", "--usage", "internet", "--bindings", "0.0.0.0:26")
    assert status == 0, err
    assert connector_table(fresh, "Web")["usage"] == "Internet"
    assert load_config(fresh).connector("Web").remote_ip_ranges[0].size == 1 << 32  # Internet's default


def test_usage_option_and_switch_are_mutually_exclusive(capsys, fresh):
    before = fresh.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["new-connector", str(fresh), "--name", "X", "--usage", "Custom", "--partner"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert fresh.read_bytes() == before


# --- the file: comments, layout, atomic writes -------------------------------------------------------


def test_an_edit_keeps_every_comment_and_changes_one_line(capsys, sample):
    before = sample.read_text(encoding="utf-8").splitlines()
    status, _, err = verb(capsys, "set-connector", sample, "anonymous relay", "--remote-ip-ranges", "192.168.5.10,192.168.5.12")
    assert status == 0, err
    after = sample.read_text(encoding="utf-8").splitlines()
    assert len(after) == len(before)
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    assert changed == [(
        'remote_ip_ranges = ["192.168.5.10", "192.168.5.11", "10.1.0.0/16", "192.168.6.1-192.168.6.20"]',
        'remote_ip_ranges = ["192.168.5.10", "192.168.5.12"]',
    )]


def test_comments_before_and_inside_a_connector_survive(capsys, fresh):
    step_1(capsys, fresh)
    verb(capsys, "set-connector", fresh, "Default Frontend", "--max-message-size", "20MB", "--enabled", "$false")
    text = fresh.read_text(encoding="utf-8")
    for line in DEFAULT_ONLY.splitlines():
        if line.startswith("#") or "#" in line:
            assert line in text
    # new keys go after the connector's last key, before the comments that introduce what follows
    assert text.index("max_message_size") < text.index("# where accepted mail goes")
    assert text.index('name = "Anonymous Relay"') < text.index("# where accepted mail goes") < text.index("[smarthost]")
    assert load_config(fresh).connector("Default Frontend").max_message_size == 20 << 20
    assert load_config(fresh).connector("Default Frontend").enabled is False


def test_no_temporary_file_is_left_and_the_mode_is_kept(capsys, sample):
    sample.chmod(0o640)
    assert verb(capsys, "set-connector", sample, "Anonymous Relay", "--comment", "printers")[0] == 0
    assert sorted(p.name for p in sample.parent.iterdir()) == ["relay.toml"]
    assert sample.stat().st_mode & 0o777 == 0o640


def test_crlf_line_endings_are_kept(capsys, sample):
    sample.write_bytes(SAMPLE.read_bytes().replace(b"\n", b"\r\n"))
    assert verb(capsys, "add-permission", sample, "Default Frontend", "--user", "CONTOSO\\app",
                "--extended-rights", "ms-Exch-SMTP-Submit")[0] == 0
    data = sample.read_bytes()
    assert data.count(b"\n") == data.count(b"\r\n")


def test_dollar_null_restores_the_default(capsys, sample):
    assert verb(capsys, "set-connector", sample, "Anonymous Relay", "--banner", "220 relay ready")[0] == 0
    assert connector_table(sample, "Anonymous Relay")["banner"] == "220 relay ready"
    assert verb(capsys, "set-connector", sample, "Anonymous Relay", "--banner", "$null")[0] == 0
    assert "banner" not in connector_table(sample, "Anonymous Relay")


def test_changing_usage_afterwards_keeps_what_the_connector_does(capsys, fresh):
    verb(capsys, "new-connector", fresh, "--name", "Web", "--internet", "--bindings", "0.0.0.0:26")
    before = load_config(fresh).connector("Web")
    status, out, err = verb(capsys, "set-connector", fresh, "Web", "--usage", "Custom")
    assert status == 0, err
    assert "usage only chooses defaults" in out
    after = load_config(fresh).connector("Web")
    assert after.usage.value == "Custom"
    for key in ("permission_groups", "auth_mechanism", "bindings", "remote_ip_ranges"):
        assert getattr(after, key) == getattr(before, key)


# --- refused changes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # partly overlaps Anonymous Relay's 192.168.6.1-192.168.6.20 on the shared 0.0.0.0:2525 binding
        (["set-connector", "Default Frontend", "--remote-ip-ranges", "192.168.6.10-192.168.6.30"],
         ["connector 'Default Frontend'", "remote_ip_ranges", "partly overlaps"]),
        (["set-connector", "Anonymous Relay", "--max-hop-count", "0"],
         ["connector 'Anonymous Relay'", "max_hop_count", "1-500"]),
        (["set-connector", "Anonymous Relay", "--auth-mechanism", "ExternalAuthoritative"],
         ["connector 'Anonymous Relay'", "permission_groups", "ExchangeServers"]),
        # the open-relay plugin's check runs too
        (["set-connector", "Anonymous Relay", "--remote-ip-ranges", "0.0.0.0/1"],
         ["connector 'Anonymous Relay'", "remote_ip_ranges", "open relay"]),
        (["new-connector", "--name", "DEFAULT FRONTEND", "--bindings", "0.0.0.0:25", "--remote-ip-ranges", "10.9.9.9"],
         ["name", "duplicate connector name"]),
        (["set-connector", "Anonymous Relay", "--name", "x" * 65], ["name", "at most 64"]),
        (["set-connector", "Anonymous Relay", "--bindings", "$null"], ["bindings", "is required"]),
    ],
)
def test_a_refused_change_leaves_the_file_byte_identical(capsys, sample, argv, expected):
    before = sample.read_bytes()
    status, out, err = run(capsys, argv[0], sample, *argv[1:])
    assert status == 1
    assert sample.read_bytes() == before
    assert f"{sample}: change refused" in err
    for text in expected:
        assert text in err
    assert str(sample) in err.splitlines()[0]


def test_an_acknowledged_open_relay_is_written_with_its_warning(capsys, sample):
    status, out, err = verb(capsys, "set-connector", sample, "Anonymous Relay",
                            "--remote-ip-ranges", "0.0.0.0/1", "--acknowledge-open-relay", "$true")
    assert status == 0, err
    assert "warning: open relay" in out
    assert connector_table(sample, "Anonymous Relay")["acknowledge_open_relay"] is True


@pytest.mark.parametrize(
    ("argv", "option", "value"),
    [
        (["new-connector", "--name", "X", "--usage", "Bogus"], "--usage", "Bogus"),
        (["set-connector", "Anonymous Relay", "--remote-ip-ranges", "192.168.5.10,192.168.5.300"],
         "--remote-ip-ranges", "192.168.5.300"),
        (["set-connector", "Anonymous Relay", "--bindings", "0.0.0.0"], "--bindings", "0.0.0.0"),
        (["set-connector", "Anonymous Relay", "--permission-groups", "AnonymousUsers,Everyone"],
         "--permission-groups", "Everyone"),
        (["set-connector", "Anonymous Relay", "--auth-mechanism", "Kerberos"], "--auth-mechanism", "Kerberos"),
        (["set-connector", "Anonymous Relay", "--enabled", "maybe"], "--enabled", "maybe"),
        (["set-connector", "Anonymous Relay", "--max-hop-count", "many"], "--max-hop-count", "many"),
        (["set-connector", "Anonymous Relay", "--connection-timeout", "10 minutes"], "--connection-timeout", "10 minutes"),
        (["add-permission", "Anonymous Relay", "--user", ANONYMOUS, "--extended-rights", "ms-Exch-SMTP-Relay"],
         "--extended-rights", "ms-Exch-SMTP-Relay"),
    ],
)
def test_a_bad_argument_names_the_option_and_value(capsys, sample, argv, option, value):
    before = sample.read_bytes()
    status, _, err = run(capsys, argv[0], sample, *argv[1:])
    assert status == 2
    assert option in err and value in err
    assert sample.read_bytes() == before


def test_set_connector_needs_something_to_change(capsys, sample):
    status, _, err = verb(capsys, "set-connector", sample, "Anonymous Relay")
    assert status == 2
    assert "nothing to change" in err


# --- permissions -------------------------------------------------------------------------------------


def test_remove_permission_of_a_group_granted_right_refuses_and_explains(capsys, sample):
    before = sample.read_bytes()
    status, _, err = verb(capsys, "remove-permission", sample, "Anonymous Relay",
                          "--user", ANONYMOUS, "--extended-rights", "ms-Exch-SMTP-Submit")
    assert status == 1
    assert sample.read_bytes() == before
    assert "ms-Exch-SMTP-Submit" in err
    assert "granted by the permission group AnonymousUsers" in err
    assert "add-permission" in err and "--deny" in err
    assert "set-connector" in err and "--permission-groups None" in err


def test_remove_permission_removes_the_explicit_entry(capsys, sample):
    status, out, err = verb(capsys, "remove-permission", sample, "Anonymous Relay",
                            "--user", "nt authority\\anonymous logon", "--extended-rights", "ms-exch-smtp-accept-any-recipient")
    assert status == 0, err
    assert "permissions" not in connector_table(sample, "Anonymous Relay")
    assert "ms-Exch-SMTP-Accept-Any-Recipient" not in effective(sample, "Anonymous Relay", ANONYMOUS)
    text = sample.read_text(encoding="utf-8")
    assert "[[connectors.permissions]]" not in text
    assert "# Step 2 of the source document" not in text  # the comment introducing the entry went with it
    assert text.endswith('[smarthost]\nhost = "127.0.0.1"\nport = 2526\n')


def test_remove_permission_keeps_the_rest_of_an_entry_and_notes_group_grants(capsys, sample):
    verb(capsys, "add-permission", sample, "Anonymous Relay", "--user", ANONYMOUS, "--extended-rights", "ms-Exch-SMTP-Submit")
    status, out, err = verb(capsys, "remove-permission", sample, "Anonymous Relay",
                            "--user", ANONYMOUS, "--extended-rights", "ms-Exch-SMTP-Submit")
    assert status == 0, err
    assert "still granted" in out and "AnonymousUsers" in out
    assert connector_table(sample, "Anonymous Relay")["permissions"] == [
        {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}
    ]


def test_remove_permission_of_a_right_nobody_granted(capsys, sample):
    before = sample.read_bytes()
    status, _, err = verb(capsys, "remove-permission", sample, "Anonymous Relay",
                          "--user", "CONTOSO\\nobody", "--extended-rights", "ms-Exch-Bypass-Anti-Spam")
    assert status == 1
    assert "no explicit allow entry of CONTOSO\\nobody holds ms-Exch-Bypass-Anti-Spam" in err
    assert sample.read_bytes() == before


def test_add_permission_merges_into_the_same_users_entry(capsys, sample):
    status, out, _ = verb(capsys, "add-permission", sample, "Anonymous Relay",
                          "--user", "nt authority\\ANONYMOUS LOGON", "--extended-rights", "ms-Exch-Bypass-Anti-Spam,ms-Exch-SMTP-Accept-Any-Recipient")
    assert status == 0
    assert "merged" in out
    assert connector_table(sample, "Anonymous Relay")["permissions"] == [
        {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient", "ms-Exch-Bypass-Anti-Spam"]}
    ]


def test_deny_entries_are_separate_and_win(capsys, sample):
    status, _, err = verb(capsys, "add-permission", sample, "Anonymous Relay",
                          "--user", ANONYMOUS, "--extended-rights", "ms-Exch-SMTP-Accept-Any-Recipient", "--deny")
    assert status == 0, err
    assert connector_table(sample, "Anonymous Relay")["permissions"] == [
        {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]},
        {"user": ANONYMOUS, "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"], "deny": True},
    ]
    assert "ms-Exch-SMTP-Accept-Any-Recipient" not in effective(sample, "Anonymous Relay", ANONYMOUS)
    # a deny of a group-granted right is how such a right is taken away
    verb(capsys, "add-permission", sample, "Anonymous Relay", "--user", ANONYMOUS,
         "--extended-rights", "ms-Exch-SMTP-Submit", "--deny")
    assert "ms-Exch-SMTP-Submit" not in effective(sample, "Anonymous Relay", ANONYMOUS)
    status, _, _ = verb(capsys, "remove-permission", sample, "Anonymous Relay", "--user", ANONYMOUS,
                        "--extended-rights", "ms-Exch-SMTP-Submit,ms-Exch-SMTP-Accept-Any-Recipient", "--deny")
    assert status == 0
    assert effective(sample, "Anonymous Relay", ANONYMOUS) == METHOD_1_RIGHTS


def test_get_permission_lists_group_grants_and_explicit_entries(capsys, sample):
    verb(capsys, "add-permission", sample, "Default Frontend", "--user", "CONTOSO\\scanner",
         "--extended-rights", "ms-Exch-SMTP-Submit", "--deny")
    status, out, _ = verb(capsys, "get-permission", sample)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["Identity", "User", "Deny", "Inherited", "ExtendedRights", "Source"]
    assert any("Default Frontend" in line and "CONTOSO\\scanner" in line and " True " in line
               and line.endswith("explicit") for line in lines)
    assert sum(line.endswith("PermissionGroup AnonymousUsers") for line in lines) == 2
    assert any("{ms-Exch-SMTP-Accept-Any-Recipient}" in line and "Anonymous Relay" in line for line in lines)

    status, out, _ = verb(capsys, "get-permission", sample, "--user", "contoso\\SCANNER", "--json")
    assert json.loads(out) == [{
        "identity": "Default Frontend", "user": "CONTOSO\\scanner", "deny": True, "inherited": False,
        "extended_rights": ["ms-Exch-SMTP-Submit"], "source": "explicit",
    }]


def test_get_permission_of_exchange_servers_lists_every_principal(capsys, fresh):
    step_1(capsys, fresh)
    verb(capsys, "set-connector", fresh, "Anonymous Relay",
         "--auth-mechanism", "ExternalAuthoritative", "--permission-groups", "ExchangeServers")
    status, out, _ = verb(capsys, "get-permission", fresh, "Anonymous Relay", "--json")
    rows = {row["user"]: row for row in json.loads(out)}
    assert set(rows[EXTERNALLY_SECURED]["extended_rights"]) == METHOD_2_RIGHTS
    assert {row["source"] for row in rows.values()} == {"PermissionGroup ExchangeServers"}
    assert len(rows) == 4


# --- get, remove, rename, identity ---------------------------------------------------------------------


def test_get_connector_table(capsys, sample):
    status, out, _ = verb(capsys, "get-connector", sample)
    assert status == 0
    assert out.splitlines() == [
        "Name             Bindings       Enabled",
        "----             --------       -------",
        "Default Frontend {0.0.0.0:2525} True",
        "Anonymous Relay  {0.0.0.0:2525} True",
    ]


def test_get_connector_format_list_shows_every_field(capsys, sample):
    status, out, _ = verb(capsys, "get-connector", sample, "ANONYMOUS RELAY", "--format-list")
    assert status == 0
    values = dict(line.split(" : ", 1) if " : " in line else (line.rstrip(" :"), "") for line in out.splitlines())
    values = {name.strip(): value for name, value in values.items()}
    assert values["Name"] == "Anonymous Relay"
    assert values["RemoteIPRanges"] == "{192.168.5.10, 192.168.5.11, 10.1.0.0/16, 192.168.6.1-192.168.6.20}"
    assert values["PermissionGroups"] == "AnonymousUsers"
    assert values["AuthMechanism"] == "Tls"
    assert values["MaxMessageSize"] == "36 MB (37,748,736 bytes)"
    assert values["MessageRateLimit"] == "Unlimited"
    assert values["ConnectionTimeout"] == "00:10:00"
    assert values["RequireTLS"] == "False"
    assert len(values) == len(CONNECTOR_FIELDS) + 1  # Name and every connector field


def test_get_connector_json(capsys, sample):
    status, out, _ = verb(capsys, "get-connector", sample, "--json")
    data = json.loads(out)
    assert [item["name"] for item in data] == ["Default Frontend", "Anonymous Relay"]
    assert data[1]["permissions"][0]["user"] == ANONYMOUS


def test_get_connector_unknown_property(capsys, sample):
    status, _, err = verb(capsys, "get-connector", sample, "--property", "Enabled,Colour")
    assert status == 2
    assert "'Colour'" in err and "RemoteIPRanges" in err


def test_remove_connector(capsys, sample):
    status, out, _ = verb(capsys, "remove-connector", sample, "default frontend")
    assert status == 0
    assert "'Default Frontend' removed" in out
    text = sample.read_text(encoding="utf-8")
    assert [table["name"] for table in toml(sample)["connectors"]] == ["Anonymous Relay"]
    assert "# The connector for everyone" not in text          # its own comment went with it
    assert "# The dedicated relay connector" in text           # the next connector's stayed
    assert "# Mail to these domains is accepted" in text


def test_removing_the_last_connector_is_refused(capsys, sample):
    assert verb(capsys, "remove-connector", sample, "Default Frontend")[0] == 0
    before = sample.read_bytes()
    status, _, err = verb(capsys, "remove-connector", sample, "Anonymous Relay")
    assert status == 1
    assert "no [[connectors]]" in err
    assert sample.read_bytes() == before


def test_rename(capsys, sample):
    status, out, _ = verb(capsys, "set-connector", sample, "anonymous relay", "--name", "Printers and Apps")
    assert status == 0
    assert "renamed to 'Printers and Apps'" in out
    assert verb(capsys, "get-connector", sample, "printers and apps")[0] == 0
    status, _, err = verb(capsys, "get-connector", sample, "Anonymous Relay")
    assert status == 1 and "'Printers and Apps'" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["set-connector", "Relay", "--enabled", "false"],
        ["remove-connector", "Relay"],
        ["get-connector", "Relay"],
        ["add-permission", "Relay", "--user", ANONYMOUS, "--extended-rights", "ms-Exch-SMTP-Submit"],
        ["remove-permission", "Relay", "--user", ANONYMOUS, "--extended-rights", "ms-Exch-SMTP-Submit"],
        ["get-permission", "Relay"],
    ],
)
def test_unknown_identity(capsys, sample, argv):
    before = sample.read_bytes()
    status, _, err = run(capsys, argv[0], sample, *argv[1:])
    assert status == 1
    assert "no connector named 'Relay'" in err
    assert "'Default Frontend', 'Anonymous Relay'" in err
    assert sample.read_bytes() == before


# --- the editor on its own: which comments go with a removed table ---------------------------------------


def test_editor_moves_comments_with_the_table_they_introduce():
    text = (
        '# top\n\n# about A\n[[connectors]]\nname = "A"\n\n'
        '# about B\n[[connectors]]\nname = "B"\n# about C\n[[connectors]]\nname = "C"\n\n# tail\n[smarthost]\nport = 25\n'
    )
    document = editor.parse_document(text)
    editor.remove_connector(document, "b")
    assert editor.render(document) == (
        '# top\n\n# about A\n[[connectors]]\nname = "A"\n# about C\n[[connectors]]\nname = "C"\n\n# tail\n[smarthost]\nport = 25\n'
    )
    document = editor.parse_document(text)
    editor.add_connector(document, "D", [("enabled", False)])
    assert editor.render(document).endswith('name = "C"\n\n[[connectors]]\nname = "D"\nenabled = false\n\n# tail\n[smarthost]\nport = 25\n')
    document = editor.parse_document(text)
    editor.remove_connector(document, "c")
    assert editor.render(document).endswith('name = "B"\n\n# tail\n[smarthost]\nport = 25\n')


def test_editor_field_value_spellings():
    assert editor.field_value("permission_groups", "anonymous, ExchangeServers,anonymoususers") == ["AnonymousUsers", "ExchangeServers"]
    assert editor.field_value("enabled", "$FALSE") is False
    assert editor.field_value("max_message_size", "10MB") == "10MB"
    assert editor.field_value("max_message_size", "65536") == 65536
    assert editor.field_value("message_rate_limit", "unlimited") == "Unlimited"
    assert editor.field_value("remote_ip_ranges", "10.0.0.1, 10.0.0.0/24") == ["10.0.0.1", "10.0.0.0/24"]
    with pytest.raises(ValueError, match="item 2"):
        editor.field_value("bindings", "0.0.0.0:25,nowhere")


# --- a real process ----------------------------------------------------------------------------------------


def test_module_entry_point_in_a_subprocess(fresh):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", STEP_1[0], str(fresh), *STEP_1[1:]],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "'Anonymous Relay' created" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", "get-connector", str(fresh), "Anonymous Relay", "--format-list"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "RemoteIPRanges" in result.stdout and "{192.168.5.10, 192.168.5.11}" in result.stdout


def test_inline_tables_stay_inline(capsys, tmp_path):
    path = tmp_path / "inline.toml"
    path.write_text(
        'connectors = [{name = "Default Frontend", bindings = ["0.0.0.0:2525"], '
        'remote_ip_ranges = ["0.0.0.0-255.255.255.255"], permission_groups = ["AnonymousUsers"]}]\n',
        encoding="utf-8",
    )
    assert run(capsys, *STEP_1[:1], path, *STEP_1[1:])[0] == 0
    assert verb(capsys, "set-connector", path, "Anonymous Relay", "--permission-groups", "AnonymousUsers")[0] == 0
    assert verb(capsys, "add-permission", path, "Anonymous Relay", "--user", ANONYMOUS,
                "--extended-rights", "ms-Exch-SMTP-Accept-Any-Recipient")[0] == 0
    assert path.read_text(encoding="utf-8").count("\n") == 1
    assert effective(path, "Anonymous Relay", ANONYMOUS) == METHOD_1_RIGHTS
    assert verb(capsys, "remove-connector", path, "Default Frontend")[0] == 0
    assert [table["name"] for table in toml(path)["connectors"]] == ["Anonymous Relay"]
