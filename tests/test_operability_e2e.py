"""Operability over a live relay: protocol log, decision log and the metrics endpoint."""

from __future__ import annotations

import csv
import json
import smtplib
import time
import urllib.request

from salmon_relayauth.testing import free_ports

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
protocol_logging_level = "Verbose"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.10"]
permission_groups = ["AnonymousUsers"]
protocol_logging_level = "Verbose"

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[metrics]
listen = "127.0.0.1:METRICS_PORT"
"""

MESSAGE = b"Subject: Test\r\n\r\nThis is a test message\r\n"


def run_sessions(port: int) -> None:
    relayed = smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.10", 0), timeout=10)
    relayed.sendmail("chris@contoso.com", ["kate@fabrikam.com"], MESSAGE)
    relayed.quit()
    refused = smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.20", 0), timeout=10)
    refused.ehlo("outsider")
    refused.mail("chris@contoso.com")
    assert refused.rcpt("kate@fabrikam.com")[0] == 550
    refused.quit()


def test_protocol_log_of_a_relayed_and_a_refused_session(live_relay, smarthost) -> None:
    port, metrics_port = free_ports(2)
    relay = live_relay(CONFIG.replace("METRICS_PORT", str(metrics_port)), port=port)
    run_sessions(relay.port)
    smarthost.wait_for(1)
    relay.stop()
    directory = relay.config_path.parent / "logs" / "ProtocolLog" / "SmtpReceive"
    files = sorted(directory.glob("RECV*-*.LOG"))
    assert len(files) == 1
    lines = files[0].read_text().splitlines()
    assert lines[0] == "#Software: salmon-relayauth"
    assert lines[2] == "#Log-Type: SMTP Receive Protocol Log"
    assert lines[3].startswith("#Date: ") and lines[3].endswith("Z")
    assert lines[4] == "#Fields: date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context"
    rows = list(csv.reader(lines[5:]))
    sessions: dict[str, list[list[str]]] = {}
    for row in rows:
        assert len(row) == 9
        sessions.setdefault(row[2], []).append(row)
    assert len(sessions) == 2
    relayed, refused = sorted(sessions.values(), key=lambda rows: rows[0][0])
    for session in (relayed, refused):
        assert [int(row[3]) for row in session] == list(range(len(session)))
        assert session[0][6] == "+" and session[-1][6] == "-"
        assert len(session[0][2]) == 16
    assert relayed[0][1] == "relay.contoso.com\\Anonymous Relay"
    assert relayed[0][5].startswith("127.0.0.10:")
    assert relayed[1][6:] == ["*", "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender AcceptRoutingHeaders", "Set Session Permissions"]
    events = [(row[6], row[7]) for row in relayed]
    assert ("<", "RCPT TO:<kate@fabrikam.com>") in events
    assert (">", "250 2.1.5 Recipient OK") in events
    assert any(event == ">" and data.endswith("Queued mail for delivery") for event, data in events)
    assert b"This is a test message" not in files[0].read_bytes()  # message content is never logged
    assert refused[0][1] == "relay.contoso.com\\Default Frontend"
    assert (">", "550 5.7.1 Unable to relay") in [(row[6], row[7]) for row in refused]


def test_decision_log_explains_each_decision(live_relay, smarthost) -> None:
    port, metrics_port = free_ports(2)
    relay = live_relay(CONFIG.replace("METRICS_PORT", str(metrics_port)), port=port)
    run_sessions(relay.port)
    smarthost.wait_for(1)
    relay.stop()
    entries = [json.loads(line) for line in (relay.config_path.parent / "logs" / "decisions.jsonl").read_text().splitlines()]
    refusal = next(entry for entry in entries if entry["code"] == 550)
    assert refusal["command"] == "RCPT TO:<kate@fabrikam.com>"
    assert refusal["connector"] == "Default Frontend"
    assert refusal["client"].startswith("127.0.0.20:")
    assert refusal["principals"] == ["NT AUTHORITY\\ANONYMOUS LOGON"]
    assert refusal["source"] == "relayauth.relay"
    assert "lacks ms-Exch-SMTP-Accept-Any-Recipient" in refusal["reason"]
    accepted = next(entry for entry in entries if entry["command"] == "RCPT TO:<kate@fabrikam.com>" and entry["code"] == 250)
    assert accepted["connector"] == "Anonymous Relay"
    assert "allowed by ms-Exch-SMTP-Accept-Any-Recipient" in accepted["reason"]
    assert all(entry["session_id"] and entry["time"] for entry in entries)


def test_metrics_endpoint_counts_sessions_and_decisions(live_relay, smarthost) -> None:
    port, metrics_port = free_ports(2)
    relay = live_relay(CONFIG.replace("METRICS_PORT", str(metrics_port)), port=port)
    run_sessions(relay.port)
    smarthost.wait_for(1)
    text = ""
    for _ in range(50):  # noqa: B007  # the delivery outcome is counted after the worker's run
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        if 'relayauth_deliveries_total{outcome="delivered"} 1' in text:
            break
        time.sleep(0.1)
    assert 'relayauth_sessions_total{connector="Anonymous Relay"} 1' in text
    assert 'relayauth_sessions_total{connector="Default Frontend"} 1' in text
    assert 'relayauth_decisions_total{connector="Default Frontend",command="RCPT",outcome="refused"} 1' in text
    assert 'relayauth_decisions_total{connector="Anonymous Relay",command="RCPT",outcome="accepted"} 1' in text
    assert 'relayauth_deliveries_total{outcome="delivered"} 1' in text
    assert "relayauth_queue_messages 0" in text


def test_auth_credentials_never_reach_any_log_file(live_relay, tmp_path) -> None:
    import base64

    from salmon_relayauth.engine.passwords import hash_password

    users = tmp_path / "users.txt"
    users.write_text(f"alice@contoso.com:{hash_password('S3cret-Passw0rd')}\n")
    port, metrics_port = free_ports(2)
    config = CONFIG.replace("METRICS_PORT", str(metrics_port)).replace(
        '[smarthost]',
        f'[authentication]\nusers_file = "{users}"\n\n[smarthost]',
    ).replace(
        'remote_ip_ranges = ["127.0.0.0/8"]\npermission_groups = ["AnonymousUsers"]',
        'remote_ip_ranges = ["127.0.0.0/8"]\npermission_groups = ["AnonymousUsers", "ExchangeUsers"]\n'
        'auth_mechanism = ["BasicAuth"]\nauth_tarpit_interval = "00:00:00"',
    )
    relay = live_relay(config, port=port)
    client = smtplib.SMTP("127.0.0.1", relay.port, source_address=("127.0.0.20", 0), timeout=10)
    client.ehlo("app")
    try:
        client.login("alice@contoso.com", "wrong-Passw0rd")
    except smtplib.SMTPAuthenticationError:
        pass
    client.login("alice@contoso.com", "S3cret-Passw0rd")
    client.quit()
    relay.stop()
    secrets = [b"S3cret-Passw0rd", b"wrong-Passw0rd"]
    secrets += [base64.b64encode(secret) for secret in secrets]
    secrets += [base64.b64encode(b"\0alice@contoso.com\0" + secret) for secret in (b"S3cret-Passw0rd", b"wrong-Passw0rd")]
    logs = list((relay.config_path.parent / "logs").rglob("*"))
    files = [path for path in logs if path.is_file()]
    assert any(path.suffix == ".LOG" for path in files) and any(path.name == "decisions.jsonl" for path in files)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret not in content, (path, secret)
    assert b"AUTH PLAIN" in b"".join(path.read_bytes() for path in files)  # the command itself is logged


def test_a_busy_metrics_port_leaves_the_relay_serving(live_relay, smarthost, caplog) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        relay = live_relay(CONFIG.replace("METRICS_PORT", str(port)))
        run_sessions(relay.port)  # mail flows all the same
        assert len(smarthost.wait_for(1)) == 1
    assert any(f"metrics server not started on 127.0.0.1:{port}" in record.getMessage() for record in caplog.records)
