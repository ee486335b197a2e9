"""The relay over real sockets: a listener on 127.0.0.1, clients posing as other 127.x hosts."""

from __future__ import annotations

import smtplib
import socket

import pytest

RELAY_CONFIG = """
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

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
retry_interval = "00:00:01"
"""

MESSAGE = b"From: chris@contoso.com\r\nTo: kate@fabrikam.com\r\nSubject: Test\r\n\r\nThis is a test message\r\n"


def test_allowed_host_relays_with_envelope_intact(live_relay, smarthost, smtp_client) -> None:
    relay = live_relay(RELAY_CONFIG)
    client = smtp_client("127.0.0.10", relay.port)
    code, _ = client.ehlo("printer.contoso.com")
    assert code == 250
    refused = client.sendmail("chris@contoso.com", ["kate@fabrikam.com", "hidden@fabrikam.com"], MESSAGE)
    assert refused == {}
    client.quit()
    received = smarthost.wait_for(1)
    assert received[0].mail_from == "chris@contoso.com"
    assert received[0].rcpt_tos == ("kate@fabrikam.com", "hidden@fabrikam.com")  # the Bcc recipient too
    assert b"This is a test message" in received[0].content
    assert b"Subject: Test" in received[0].content


def test_other_host_gets_unable_to_relay_and_nothing_is_queued(live_relay, smarthost, smtp_client) -> None:
    relay = live_relay(RELAY_CONFIG)
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("outsider.example")
    assert client.mail("chris@contoso.com") == (250, b"2.1.0 Sender OK")
    assert client.rcpt("kate@fabrikam.com") == (550, b"5.7.1 Unable to relay")
    assert client.rcpt("someone@contoso.com") == (250, b"2.1.5 Recipient OK")
    client.rset()
    client.quit()
    assert len(relay.queue) == 0
    assert smarthost.messages == []


def _conversation(port: int, source: str, lines: list[bytes]) -> list[str]:
    """Send raw lines one at a time (as telnet would) and collect each reply."""
    with socket.create_connection(("127.0.0.1", port), source_address=(source, 0), timeout=10) as sock:
        reader = sock.makefile("rb")

        def read_reply() -> str:
            parts = []
            while True:
                line = reader.readline().decode()
                parts.append(line.rstrip("\r\n"))
                if line[3:4] != "-":
                    return "\n".join(parts)

        replies = [read_reply()]
        for line in lines:
            sock.sendall(line + b"\r\n")
            if line in (b"Subject: Test", b"", b"This is a test message"):
                continue
            replies.append(read_reply())
        return replies


def test_source_document_telnet_steps_get_its_replies(live_relay, smarthost) -> None:
    relay = live_relay(RELAY_CONFIG)
    replies = _conversation(
        relay.port,
        "127.0.0.10",
        [
            b"EHLO",
            b"MAIL FROM:chris@contoso.com",
            b"RCPT TO:kate@fabrikam.com",
            b"DATA",
            b"Subject: Test",
            b"",
            b"This is a test message",
            b".",
            b"QUIT",
        ],
    )
    assert replies[0].startswith("220 relay.contoso.com ")
    assert replies[1].splitlines()[0] == "250-relay.contoso.com Hello [127.0.0.10]"
    assert replies[2] == "250 2.1.0 Sender OK"
    assert replies[3] == "250 2.1.5 Recipient OK"
    assert replies[4] == "354 Start mail input; end with <CRLF>.<CRLF>"
    assert replies[5].startswith("250 2.6.0 <") and replies[5].endswith("> Queued mail for delivery")
    assert replies[6] == "221 2.0.0 Service closing transmission channel"
    received = smarthost.wait_for(1)
    assert received[0].rcpt_tos == ("kate@fabrikam.com",)


def test_telnet_steps_from_a_refused_host(live_relay) -> None:
    relay = live_relay(RELAY_CONFIG)
    replies = _conversation(relay.port, "127.0.0.20", [b"EHLO", b"MAIL FROM:chris@contoso.com", b"RCPT TO:kate@fabrikam.com", b"QUIT"])
    assert replies[3] == "550 5.7.1 Unable to relay"


def test_ehlo_advertises_the_connector_settings(live_relay, smtp_client) -> None:
    relay = live_relay(RELAY_CONFIG.replace('permission_groups = ["AnonymousUsers"]\n\n[[connectors.permissions]]',
                                            'permission_groups = ["AnonymousUsers"]\nmax_message_size = "10MB"\n\n[[connectors.permissions]]'))
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("printer")
    assert client.esmtp_features["size"] == str(10 << 20)
    assert "pipelining" in client.esmtp_features
    assert "enhancedstatuscodes" in client.esmtp_features
    assert "starttls" not in client.esmtp_features  # no certificate configured
    assert "auth" not in client.esmtp_features


def test_no_connector_refuses_with_421(live_relay) -> None:
    relay = live_relay(RELAY_CONFIG.replace('remote_ip_ranges = ["127.0.0.0/8"]', 'remote_ip_ranges = ["127.0.0.0/24"]'))
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        smtplib.SMTP("127.0.0.1", relay.port, source_address=("127.0.1.5", 0), timeout=10)
    assert caught.value.smtp_code == 421
    assert b"4.3.2" in caught.value.smtp_error


def test_a_client_sending_a_large_message_steadily_is_not_idle(live_relay, smarthost) -> None:
    import time

    relay = live_relay(
        RELAY_CONFIG.replace(
            'remote_ip_ranges = ["127.0.0.10", "127.0.0.11"]',
            'remote_ip_ranges = ["127.0.0.10", "127.0.0.11"]\nconnection_inactivity_timeout = "00:00:01"\nconnection_timeout = "00:00:30"',
        )
    )
    with socket.create_connection(("127.0.0.1", relay.port), source_address=("127.0.0.10", 0), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220")
        for command in (b"HELO printer", b"MAIL FROM:<chris@contoso.com>", b"RCPT TO:<kate@fabrikam.com>", b"DATA"):
            sock.sendall(command + b"\r\n")
            reply = reader.readline()
        assert reply.startswith(b"354")
        for line in range(6):  # 2.4 s of sending, more than twice the inactivity timeout
            sock.sendall(b"line %d of a long report\r\n" % line)
            time.sleep(0.4)
        sock.sendall(b".\r\n")
        assert reader.readline().startswith(b"250 2.6.0")
    assert len(smarthost.wait_for(1)) == 1
