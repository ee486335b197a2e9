"""The worked third-party plugin, ``examples/relayauth-domain-denylist``, installed as any team's plugin
would be (``pip install -e examples/relayauth-domain-denylist``, part of the test set-up): found through
the ``salmon_relayauth`` entry-point group, its rule takes effect in ``explain`` and on a live relay."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import pytest

from salmon_relayauth import ENTRY_POINT_GROUP, make_plugin_manager
from salmon_relayauth.cli import main

DISTRIBUTION = "relayauth-domain-denylist"
NAME = "domain_denylist"
INSTALL = "pip install -e examples/relayauth-domain-denylist"

CONFIG = """
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
connectors = ["Anonymous Relay"]
"""

REFUSAL = "550 5.7.1 Recipient domain not allowed from this relay"
MESSAGE = b"From: scanner@contoso.com\r\nSubject: Scan\r\n\r\nYour scan is attached.\r\n"


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text.replace("{port}", "2525").replace("{smarthost_port}", "2526"))
    return path


def explain_args(config: Path, *recipients: str) -> list[str]:
    args = ["explain", str(config), "--client", "127.0.0.10", "--mail-from", "scanner@contoso.com"]
    for recipient in recipients:
        args += ["--rcpt", recipient]
    return args


def test_the_distribution_is_installed_and_its_entry_point_is_loaded() -> None:
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        pytest.fail(f"{DISTRIBUTION} is not installed; the test set-up runs {INSTALL!r}")
    published = [(ep.name, ep.value) for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
    assert published == [(NAME, "relayauth_domain_denylist")]
    import relayauth_domain_denylist

    assert make_plugin_manager().get_plugin(NAME) is relayauth_domain_denylist
    # ... and it is the entry point that brings it in
    assert make_plugin_manager(load_entrypoints=False).get_plugin(NAME) is None


def test_explain_shows_the_refusal_and_names_the_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, CONFIG + DENYLIST)
    status = main(explain_args(config, "kim@mail.tailspintoys.com", "kate@fabrikam.com"))
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    refused = [line for line in out.splitlines() if line.strip().startswith(f"S: {REFUSAL}")]
    assert len(refused) == 1, out
    assert "[domain_denylist: recipient domain mail.tailspintoys.com" in refused[0]
    assert "'*.tailspintoys.com'" in refused[0]
    assert "S: 250 2.1.5 Recipient OK   [relayauth.relay:" in out  # the other recipient relays as before
    assert "Verdict: partly accepted: 1 of 2 recipients" in out

    assert main([*explain_args(config, "someone@gmail.com"), "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["conversation"]
    rcpt = next(step for step in steps if step["command"].startswith("RCPT TO:"))
    assert (rcpt["reply"], rcpt["source"]) == (REFUSAL, NAME)


def test_the_installed_command_loads_the_plugin_in_a_fresh_process(tmp_path: Path) -> None:
    config = write_config(tmp_path, CONFIG + DENYLIST)
    # run from an empty directory: the plugin can only come from the installed entry point
    result = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", *explain_args(config, "someone@gmail.com"), "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    steps = json.loads(result.stdout)["conversation"]
    rcpt = next(step for step in steps if step["command"].startswith("RCPT TO:"))
    assert (rcpt["reply"], rcpt["source"]) == (REFUSAL, NAME)
    assert "gmail.com" in rcpt["reason"]


def test_check_reports_the_plugins_own_settings_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, CONFIG + '[plugins.domain_denylist]\ndomains = ["gmail..com"]\nconnectors = ["Anonymous Relais"]\n')
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{config}: [plugins.domain_denylist]: domains[0]: 'gmail..com' is not a domain name" in err
    assert f"{config}: [plugins.domain_denylist]: connectors[0]: no connector is named 'Anonymous Relais'" in err


def test_the_entry_point_name_is_what_plugins_disabled_takes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, CONFIG + '[plugins]\ndisabled = ["domain_denylist"]\n')
    assert main(explain_args(config, "someone@gmail.com")) == 0  # a name that is not loaded would stop start-up
    assert "S: 250 2.1.5 Recipient OK" in capsys.readouterr().out


def test_live_relay_enforces_the_installed_plugin(live_relay: Any, smarthost: Any, smtp_client: Any) -> None:
    import relayauth_domain_denylist

    relay = live_relay(CONFIG + DENYLIST)  # no plugin passed: the entry point loads it
    assert relay.receiver.policy.plugin_manager.get_plugin(NAME) is relayauth_domain_denylist
    printer = smtp_client("127.0.0.10", relay.port)
    printer.ehlo("printer.contoso.com")
    refused = printer.sendmail("scanner@contoso.com", ["someone@gmail.com", "kate@fabrikam.com"], MESSAGE)
    printer.quit()
    assert refused == {"someone@gmail.com": (550, REFUSAL[4:].encode())}
    assert smarthost.wait_for(1)[0].rcpt_tos == ("kate@fabrikam.com",)
    # scoped to "Anonymous Relay": the application server on "App Relay" may still mail gmail.com
    app = smtp_client("127.0.0.12", relay.port)
    app.ehlo("app.contoso.com")
    app.mail("scanner@contoso.com")
    assert app.rcpt("someone@gmail.com") == (250, b"2.1.5 Recipient OK")
    app.quit()
