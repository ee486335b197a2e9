"""The PROXY protocol (v1 text and v2 binary) on a live listener.

Only ``[proxy_protocol] trusted_proxies`` (here 127.0.0.50) may, and must, send a PROXY header;
the client address it carries is the one the connector selection and the relay decision use. The
v2 header is built byte by byte from the HAProxy specification, not with aiosmtpd's helpers.
"""

from __future__ import annotations

import smtplib
import socket
import struct
import time

import pytest

PROXY = "127.0.0.50"
UNTRUSTED = "127.0.0.60"

PROXY_CONFIG = """
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"

[proxy_protocol]
trusted_proxies = ["127.0.0.50"]
timeout = 0.5

[[connectors]]
name = "Default Frontend"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/24"]
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

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
retry_interval = "00:00:01"
"""

MESSAGE = b"From: chris@contoso.com\r\nTo: kate@fabrikam.com\r\nSubject: Via proxy\r\n\r\nRelayed through a load balancer\r\n"

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(source: str, port: int, source_port: int = 40000) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {source_port} {port}\r\n".encode("ascii")


def proxy_v2(source: str, port: int, source_port: int = 40000, command: int = 0x1) -> bytes:
    """A v2 header: signature, version 2 + command (0x1 PROXY, 0x0 LOCAL), TCP over IPv4 (0x11),
    the length of what follows, then source and destination address and port, network order."""
    if command == 0x0:  # LOCAL: a health check by the proxy itself, no addresses
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", source_port, port)
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + struct.pack("!H", len(addresses)) + addresses


def connect(source: str, port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), source_address=(source, 0), timeout=10)


def smtp_over(sock: socket.socket) -> tuple[smtplib.SMTP, int, bytes]:
    """Drive an already connected socket with smtplib; returns the client and the banner."""
    client = smtplib.SMTP(timeout=10)
    client.sock = sock
    client._host = "127.0.0.1"
    code, text = client.getreply()
    return client, code, text


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (fails on a 10 s timeout)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def assert_relay_allowed(client: smtplib.SMTP, smarthost, client_address: str) -> None:
    code, text = client.ehlo("printer.contoso.com")
    assert code == 250
    assert text.splitlines()[0] == f"relay.contoso.com Hello [{client_address}]".encode()
    assert client.sendmail("chris@contoso.com", ["kate@fabrikam.com"], MESSAGE) == {}
    client.quit()
    received = smarthost.wait_for(1)
    assert received[0].rcpt_tos == ("kate@fabrikam.com",)
    assert b"Relayed through a load balancer" in received[0].content


def assert_relay_refused(client: smtplib.SMTP, client_address: str) -> None:
    code, text = client.ehlo("printer.contoso.com")
    assert code == 250
    assert text.splitlines()[0] == f"relay.contoso.com Hello [{client_address}]".encode()
    assert client.mail("chris@contoso.com") == (250, b"2.1.0 Sender OK")
    assert client.rcpt("kate@fabrikam.com") == (550, b"5.7.1 Unable to relay")
    assert client.rcpt("someone@contoso.com") == (250, b"2.1.5 Recipient OK")
    client.rset()
    client.quit()


# -- a trusted proxy ------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
def test_trusted_proxy_header_names_the_client_that_is_judged(live_relay, smarthost, header) -> None:
    relay = live_relay(PROXY_CONFIG)
    sock = connect(PROXY, relay.port)
    sock.sendall(header("127.0.0.10", relay.port))
    client, code, banner = smtp_over(sock)
    assert code == 220 and banner.startswith(b"relay.contoso.com ")
    assert_relay_allowed(client, smarthost, "127.0.0.10")


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
def test_trusted_proxy_header_for_a_host_without_relay_rights(live_relay, smarthost, header) -> None:
    relay = live_relay(PROXY_CONFIG)
    sock = connect(PROXY, relay.port)
    sock.sendall(header("127.0.0.20", relay.port))
    client, code, _ = smtp_over(sock)
    assert code == 220
    assert_relay_refused(client, "127.0.0.20")
    assert smarthost.messages == []


def test_an_ipv4_mapped_client_in_a_tcp6_header_is_judged_as_ipv4(live_relay, smarthost) -> None:
    relay = live_relay(PROXY_CONFIG)
    sock = connect(PROXY, relay.port)
    sock.sendall(f"PROXY TCP6 ::ffff:127.0.0.10 ::ffff:127.0.0.1 40000 {relay.port}\r\n".encode())
    client, code, _ = smtp_over(sock)
    assert code == 220
    assert_relay_allowed(client, smarthost, "127.0.0.10")


def test_the_proxy_own_address_is_not_used_for_the_decision(live_relay, smarthost) -> None:
    # The proxy itself is in the relay connector's ranges; the client it forwards is not.
    relay = live_relay(PROXY_CONFIG.replace('remote_ip_ranges = ["127.0.0.10"]', 'remote_ip_ranges = ["127.0.0.10", "127.0.0.50"]'))
    sock = connect(PROXY, relay.port)
    sock.sendall(proxy_v1("127.0.0.20", relay.port))
    client, code, _ = smtp_over(sock)
    assert code == 220
    assert_relay_refused(client, "127.0.0.20")
    assert len(relay.queue) == 0
    assert smarthost.messages == []


def test_the_header_and_commands_may_arrive_in_one_packet(live_relay, smarthost) -> None:
    relay = live_relay(PROXY_CONFIG)
    with connect(PROXY, relay.port) as sock:
        sock.sendall(proxy_v2("127.0.0.10", relay.port) + b"EHLO printer\r\nQUIT\r\n")
        replies = read_until_closed(sock).decode().splitlines()
    assert replies[0].startswith("220 relay.contoso.com ")
    assert replies[1] == "250-relay.contoso.com Hello [127.0.0.10]"
    assert replies[-1] == "221 2.0.0 Service closing transmission channel"


@pytest.mark.parametrize(
    "opening",
    [
        b"EHLO printer.contoso.com\r\n",  # SMTP straight away
        b"PROXY TCP4 not-an-address 127.0.0.1 40000 25\r\n",  # a malformed v1 line
        b"PROXY UNKNOWN\r\n",  # v1 without an address
        b"\x00\x01garbage that is not a header\r\n",
        proxy_v2("127.0.0.10", 25, command=0x0),  # v2 LOCAL: a health check, no client address
    ],
    ids=["smtp", "bad-v1", "v1-unknown", "garbage", "v2-local"],
)
def test_trusted_proxy_without_a_valid_header_is_closed_without_a_banner(live_relay, opening) -> None:
    relay = live_relay(PROXY_CONFIG)
    with connect(PROXY, relay.port) as sock:
        sock.sendall(opening)
        assert read_until_closed(sock) == b""
    assert relay.receiver.server.sessions_opened == 0


def test_trusted_proxy_that_sends_nothing_is_closed_silently_after_the_timeout(live_relay) -> None:
    """No header within ``[proxy_protocol] timeout`` (0.5 s here): the connection is closed. No
    client is known yet, so no connector was selected and nothing may be said to the peer."""
    relay = live_relay(PROXY_CONFIG)
    with connect(PROXY, relay.port) as sock:
        started = time.monotonic()
        data = read_until_closed(sock)
        waited = time.monotonic() - started
    assert not data.startswith(b"220")
    assert 0.3 < waited < 5
    assert relay.receiver.server.sessions_opened == 0
    assert data == b""


def test_header_claiming_an_address_no_connector_takes_gets_421(live_relay) -> None:
    relay = live_relay(PROXY_CONFIG)  # Default Frontend serves 127.0.0.0/24 only
    with connect(PROXY, relay.port) as sock:
        sock.sendall(proxy_v1("127.0.1.5", relay.port) + b"EHLO printer\r\n")
        replies = read_until_closed(sock).decode().splitlines()
    assert len(replies) == 1
    assert replies[0].startswith("421 4.3.2 ")
    assert relay.receiver.server.sessions_opened == 0


# -- an untrusted peer ----------------------------------------------------------------------------


def test_untrusted_peer_sending_a_proxy_line_gets_554_and_is_closed(live_relay, smarthost) -> None:
    relay = live_relay(PROXY_CONFIG)
    with connect(UNTRUSTED, relay.port) as sock:
        # What a misconfigured (or hostile) host would send: a header naming the relay host,
        # and the whole relay transaction pipelined behind it.
        sock.sendall(
            proxy_v1("127.0.0.10", relay.port)
            + b"EHLO printer\r\nMAIL FROM:<chris@contoso.com>\r\nRCPT TO:<kate@fabrikam.com>\r\n"
        )
        replies = read_until_closed(sock).decode().splitlines()
    assert replies[0].startswith("220 relay.contoso.com ")  # its own session, under its real address
    assert replies[1].startswith("554 5.7.1 ")
    assert replies[2:] == []  # closed: nothing pipelined behind the PROXY line was executed
    assert smarthost.messages == []


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
def test_untrusted_peer_keeps_the_rights_of_its_real_address(live_relay, smarthost, header) -> None:
    relay = live_relay(PROXY_CONFIG)
    with connect(UNTRUSTED, relay.port) as sock:
        sock.sendall(
            header("127.0.0.10", relay.port)
            + b"EHLO printer\r\nMAIL FROM:<chris@contoso.com>\r\nRCPT TO:<kate@fabrikam.com>\r\nDATA\r\n"
        )
        replies = read_until_closed(sock).decode("ascii", "replace").splitlines()
    # v1 gets 554. The binary v2 header is a run of malformed lines (commands end with CRLF only, so
    # its "QUIT\n" is no command): they count as protocol errors until the relay closes with 421.
    # Either way the connection ends and the claimed address was never adopted.
    assert replies[0].startswith("220 ")
    assert not any("127.0.0.10" in line or line.startswith(("250", "354")) for line in replies)
    assert replies[-1].startswith(("554 5.7.1 ", "421 4.7.0 "))
    sock = connect(UNTRUSTED, relay.port)
    client, code, _ = smtp_over(sock)
    assert code == 220
    assert_relay_refused(client, UNTRUSTED)
    assert len(relay.queue) == 0
    assert smarthost.messages == []
