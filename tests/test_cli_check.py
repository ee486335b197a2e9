"""``salmon-relayauth check CONFIG [--json]``: exit status, problems on stderr, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from salmon_relayauth.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "configs" / "exchange_example.toml"
CONFIGS = Path(__file__).resolve().parent / "configs"
BROKEN = CONFIGS / "broken.toml"
WARNING = CONFIGS / "warning.toml"
SEVERAL = CONFIGS / "several_errors.toml"

PROBLEM_KEYS = {"severity", "source", "section", "field", "message"}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def run_json(capsys, path: Path | str) -> tuple[int, dict]:
    status, out, err = run(capsys, "check", str(path), "--json")
    assert err == ""
    return status, json.loads(out)


# --- the sample file ------------------------------------------------------------------------------


def test_sample_file_is_valid(capsys):
    status, out, err = run(capsys, "check", str(SAMPLE))
    assert status == 0
    assert err == ""
    assert f"{SAMPLE}: valid, 2 connector(s), server fqdn relay.contoso.com" in out
    assert "Default Frontend (enabled)" in out
    assert "Anonymous Relay (enabled)" in out
    assert "192.168.5.10, 192.168.5.11, 10.1.0.0/16, 192.168.6.1-192.168.6.20" in out
    assert "0.0.0.0-255.255.255.255" in out
    assert "allow NT AUTHORITY\\ANONYMOUS LOGON: ms-Exch-SMTP-Accept-Any-Recipient" in out
    assert "smarthost 127.0.0.1:2526" in out


def test_sample_file_summary_lists_each_connector_setting(capsys):
    _, out, _ = run(capsys, "check", str(SAMPLE))
    relay_block = out.split("Anonymous Relay (enabled)", 1)[1]
    lines = {line.split()[0]: line.split(None, 1)[1] for line in relay_block.splitlines() if line.strip() and not line.strip().startswith("smarthost")}
    assert lines["bindings"] == "0.0.0.0:2525"
    assert lines["permission_groups"] == "AnonymousUsers"
    assert lines["auth_mechanism"] == "Tls"


def test_sample_file_json(capsys):
    status, data = run_json(capsys, SAMPLE)
    assert status == 0
    assert data["valid"] is True
    assert data["problems"] == []
    assert [c["name"] for c in data["connectors"]] == ["Default Frontend", "Anonymous Relay"]
    frontend, relay = data["connectors"]
    assert frontend == {
        "name": "Default Frontend",
        "enabled": True,
        "bindings": ["0.0.0.0:2525"],
        "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
        "permission_groups": ["AnonymousUsers"],
        "auth_mechanism": ["Tls"],
        "permissions": [],
    }
    assert relay["remote_ip_ranges"] == ["192.168.5.10", "192.168.5.11", "10.1.0.0/16", "192.168.6.1-192.168.6.20"]
    assert relay["permissions"] == [
        {
            "user": "NT AUTHORITY\\ANONYMOUS LOGON",
            "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"],
            "deny": False,
        }
    ]


# --- broken files ---------------------------------------------------------------------------------


def test_broken_file_exits_1_with_problem_on_stderr(capsys):
    status, out, err = run(capsys, "check", str(BROKEN))
    assert status == 1
    assert f"{BROKEN}: connector 'Printers': max_hop_count: 0 is outside the allowed range 1-500" in err
    assert f"{BROKEN}: 1 error(s); the relay will not start with this file" in err
    assert "valid" not in out
    assert "max_hop_count" not in out


def test_broken_file_json(capsys):
    status, data = run_json(capsys, BROKEN)
    assert status == 1
    assert data["valid"] is False
    assert data["connectors"] == []
    assert len(data["problems"]) == 1
    (problem,) = data["problems"]
    assert set(problem) == PROBLEM_KEYS
    assert problem == {
        "severity": "error",
        "source": str(BROKEN),
        "section": "connector 'Printers'",
        "field": "max_hop_count",
        "message": "0 is outside the allowed range 1-500",
    }


def test_several_errors_are_all_listed(capsys):
    status, out, err = run(capsys, "check", str(SEVERAL))
    assert status == 1
    assert f"{SEVERAL}: connector 'Wide': banner: '250 not a greeting' must start with '220 '" in err
    assert f"{SEVERAL}: connector 'Narrow': max_recipients_per_message: 0 is outside the allowed range 1-512000" in err
    overlap = [line for line in err.splitlines() if "remote_ip_ranges" in line]
    assert len(overlap) == 1
    assert "'Wide'" in overlap[0] and "'Narrow'" in overlap[0] and "partly overlaps" in overlap[0]
    assert f"{SEVERAL}: 3 error(s)" in err
    assert out == ""


def test_several_errors_json(capsys):
    status, data = run_json(capsys, SEVERAL)
    assert status == 1
    assert data["valid"] is False
    by_field = {p["field"]: p for p in data["problems"]}
    assert sorted(by_field) == ["banner", "max_recipients_per_message", "remote_ip_ranges"]
    assert by_field["banner"]["section"] == "connector 'Wide'"
    assert by_field["max_recipients_per_message"]["section"] == "connector 'Narrow'"
    assert by_field["remote_ip_ranges"]["section"] in {"connector 'Wide'", "connector 'Narrow'"}
    assert "partly overlaps" in by_field["remote_ip_ranges"]["message"]
    for problem in data["problems"]:
        assert set(problem) == PROBLEM_KEYS
        assert problem["severity"] == "error"
        assert problem["source"] == str(SEVERAL)


def test_unknown_key_is_reported_with_suggestion(capsys, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text(
        '[[connectors]]\nname = "Apps"\nbindings = ["0.0.0.0:25"]\nremote_ip_ranges = ["10.0.0.0/8"]\n'
        'permission_groups = ["AnonymousUsers"]\nmax_recipients_per_mesage = 10\n',
        encoding="utf-8",
    )
    status, _, err = run(capsys, "check", str(path))
    assert status == 1
    assert (
        f"{path}: connector 'Apps': max_recipients_per_mesage: unknown key (did you mean 'max_recipients_per_message'?)"
        in err
    )


def test_unknown_disabled_plugin_is_an_error_naming_it(capsys, tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text(SAMPLE.read_text(encoding="utf-8") + '\n[plugins]\ndisabled = ["relayauth.no-such-plugin"]\n', encoding="utf-8")
    status, out, err = run(capsys, "check", str(path))
    assert status == 1
    assert "relayauth.no-such-plugin" in err
    assert str(path) in err
    assert "valid," not in out


# --- warnings -------------------------------------------------------------------------------------


def test_warnings_are_printed_but_exit_0(capsys):
    status, out, err = run(capsys, "check", str(WARNING))
    assert status == 0
    assert err == ""
    assert (
        f"{WARNING}: connector 'Locked': permission_groups: warning: no permission group and no allow entry" in out
    )
    assert f"{WARNING}: valid, 1 connector(s)" in out


def test_warnings_json(capsys):
    status, data = run_json(capsys, WARNING)
    assert status == 0
    assert data["valid"] is True
    assert [c["name"] for c in data["connectors"]] == ["Locked"]
    assert data["connectors"][0]["permission_groups"] == ["None"]
    (problem,) = data["problems"]
    assert set(problem) == PROBLEM_KEYS
    assert problem["severity"] == "warning"
    assert problem["source"] == str(WARNING)
    assert problem["section"] == "connector 'Locked'"
    assert problem["field"] == "permission_groups"
    assert "accepts no mail from anyone" in problem["message"]


# --- unreadable files -----------------------------------------------------------------------------


def test_missing_file_exits_1_naming_the_file(capsys, tmp_path):
    path = tmp_path / "absent.toml"
    status, out, err = run(capsys, "check", str(path))
    assert status == 1
    assert f"{path}: cannot read the file" in err
    assert f"{path}: 1 error(s)" in err
    assert out == ""


def test_missing_file_json(capsys, tmp_path):
    path = tmp_path / "absent.toml"
    status, data = run_json(capsys, path)
    assert status == 1
    assert data["valid"] is False
    assert data["connectors"] == []
    (problem,) = data["problems"]
    assert problem["source"] == str(path)
    assert problem["severity"] == "error"
    assert "cannot read the file" in problem["message"]


def test_invalid_toml_exits_1_naming_the_file(capsys, tmp_path):
    path = tmp_path / "notoml.toml"
    path.write_text("this is not = = toml\n", encoding="utf-8")
    status, _, err = run(capsys, "check", str(path))
    assert status == 1
    assert f"{path}: invalid TOML" in err


def test_not_utf8_exits_1_naming_the_file(capsys, tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nfqdn = "r\xe9lais"\n')
    status, _, err = run(capsys, "check", str(path))
    assert status == 1
    assert f"{path}: the file is not UTF-8 text" in err


# --- usage errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["check"], ["frobnicate", str(SAMPLE)], ["check", str(SAMPLE), "--bogus"], ["check", str(SAMPLE), str(SAMPLE)]],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: salmon-relayauth" in capsys.readouterr().err


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--help"])
    assert info.value.code == 0
    assert "CONFIG" in capsys.readouterr().out


# --- as a real process ----------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def test_module_entry_point_as_subprocess():
    completed = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", "check", str(SAMPLE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"{SAMPLE}: valid, 2 connector(s)" in completed.stdout
    assert completed.stderr == ""


def test_module_entry_point_broken_file_as_subprocess():
    completed = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", "check", str(BROKEN), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert completed.returncode == 1
    data = json.loads(completed.stdout)
    assert data["valid"] is False
    assert data["problems"][0]["field"] == "max_hop_count"


def test_module_entry_point_usage_error_as_subprocess():
    completed = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )
    assert completed.returncode == 2
    assert "usage:" in completed.stderr


SCRIPT = Path(sys.executable).parent / "salmon-relayauth"


def test_console_script_as_subprocess():
    assert SCRIPT.exists(), "the README's install step puts the console script next to this interpreter"
    completed = subprocess.run(
        [str(SCRIPT), "check", "tests/configs/exchange_example.toml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert "tests/configs/exchange_example.toml: valid, 2 connector(s), server fqdn relay.contoso.com" in completed.stdout
    broken = subprocess.run(
        [str(SCRIPT), "check", str(BROKEN)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert broken.returncode == 1
    assert "connector 'Printers': max_hop_count: 0 is outside the allowed range 1-500" in broken.stderr
