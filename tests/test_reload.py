"""Hot reload: a valid configuration takes effect for new sessions, open sessions and the queue are
untouched, an invalid one changes nothing."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
import time

from salmon_relayauth.testing import RecordingSmarthost, free_port

CONFIG = """
[server]
fqdn = "relay.contoso.com"

[[connectors]]
name = "Default Frontend"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["RELAY_HOST"]
permission_groups = ["AnonymousUsers"]

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}
"""

MESSAGE = b"Subject: reload\r\n\r\nbody\r\n"


def client(port: int, source: str) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=10)


def test_reload_applies_to_new_sessions_and_keeps_open_ones(live_relay, smarthost) -> None:
    relay = live_relay(CONFIG.replace("RELAY_HOST", "127.0.0.10"))
    open_session = client(relay.port, "127.0.0.10")
    open_session.ehlo("printer")
    assert open_session.mail("chris@contoso.com")[0] == 250
    text = relay.config_path.read_text()
    relay.config_path.write_text(text.replace('remote_ip_ranges = ["127.0.0.10"]', 'remote_ip_ranges = ["127.0.0.11"]'))
    assert relay.receiver.reload() == []
    # the open session keeps the rules it started with
    assert open_session.rcpt("kate@fabrikam.com")[0] == 250
    assert open_session.data(MESSAGE)[0] == 250
    open_session.quit()
    # new sessions get the new rule
    old_host = client(relay.port, "127.0.0.10")
    old_host.ehlo("printer")
    old_host.mail("chris@contoso.com")
    assert old_host.rcpt("kate@fabrikam.com")[0] == 550
    old_host.quit()
    new_host = client(relay.port, "127.0.0.11")
    new_host.sendmail("chris@contoso.com", ["kate@fabrikam.com"], MESSAGE)
    new_host.quit()
    assert len(smarthost.wait_for(2)) == 2


def test_invalid_configuration_changes_nothing(live_relay, smarthost) -> None:
    relay = live_relay(CONFIG.replace("RELAY_HOST", "127.0.0.10"))
    good = relay.config_path.read_text()
    relay.config_path.write_text(good.replace('remote_ip_ranges = ["127.0.0.10"]', 'remote_ip_ranges = ["127.0.0.300"]'))
    problems = relay.receiver.reload()
    assert any("remote_ip_ranges[0]" in str(problem) and "127.0.0.300" in str(problem) for problem in problems)
    session = client(relay.port, "127.0.0.10")
    session.sendmail("chris@contoso.com", ["kate@fabrikam.com"], MESSAGE)
    session.quit()
    assert len(smarthost.wait_for(1)) == 1
    # an open relay is refused on reload too
    relay.config_path.write_text(good.replace('remote_ip_ranges = ["127.0.0.10"]', 'remote_ip_ranges = ["0.0.0.0/1"]'))
    assert any("open relay" in str(problem) for problem in relay.receiver.reload())


def test_reload_opens_and_closes_bindings(live_relay) -> None:
    relay = live_relay(CONFIG.replace("RELAY_HOST", "127.0.0.10"))
    new_port = free_port()
    relay.config_path.write_text(relay.config_path.read_text().replace(f"127.0.0.1:{relay.port}", f"127.0.0.1:{new_port}"))
    assert relay.receiver.reload() == []
    banner = client(new_port, "127.0.0.10")
    banner.quit()
    try:
        client(relay.port, "127.0.0.10")
    except OSError:
        pass
    else:
        raise AssertionError("the old binding still accepts connections")


def test_sighup_reloads_a_serving_process(tmp_path) -> None:
    smarthost = RecordingSmarthost().start()
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text(
        CONFIG.replace("RELAY_HOST", "127.0.0.10").replace("{port}", str(port)).replace("{smarthost_port}", str(smarthost.port))
    )
    pid_file = tmp_path / "relay.pid"
    process = subprocess.Popen(
        [sys.executable, "-m", "salmon_relayauth", "serve", str(config), "--pid-file", str(pid_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "relaying on" in line:
                break
        config.write_text(config.read_text().replace('remote_ip_ranges = ["127.0.0.10"]', 'remote_ip_ranges = ["127.0.0.12"]'))
        result = subprocess.run(
            [sys.executable, "-m", "salmon_relayauth", "reload", "--pid-file", str(pid_file), "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        line = ""
        while time.monotonic() < deadline and "reloaded" not in line:
            line = process.stdout.readline()
        assert "configuration reloaded" in line
        session = client(port, "127.0.0.12")
        session.sendmail("chris@contoso.com", ["kate@fabrikam.com"], MESSAGE)
        session.quit()
        assert len(smarthost.wait_for(1)) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        smarthost.stop()
    assert not pid_file.exists()
