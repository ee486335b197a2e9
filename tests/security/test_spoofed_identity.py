"""Spoofed identity: relay permission depends only on the real (or trusted-proxied) client address
and on the connector's rights, never on what the client says about itself.

- IPv6: a connector bound to ``[::1]`` judges a client from ``::1`` by its IPv6 address (IPv6 ranges
  match it, an IPv4 loopback range does not). IPv4-mapped peers (``::ffff:127.0.0.10``) cannot occur
  on the live listener: it opens IPv6 sockets IPv6-only (``IPV6_V6ONLY``), so an IPv4 client never
  reaches an IPv6 binding, not even ``[::]``; that is shown on the wire, and the policy the listener
  calls is shown to judge such an address as the IPv4 address it carries, should one ever arrive.
- PROXY headers (v1 text, v2 binary) from a peer that is not a trusted proxy, or on a relay that
  trusts none, are refused and the connection is closed; a trusted proxy cannot re-identify a
  session with a second header, and lends none of its own rights to the client it names.
- XCLIENT and XFORWARD (Postfix's ways to rename the client) are refused and change nothing.
- HELO/EHLO names claiming to be the relay, a trusted host or an allowed address literal change
  nothing: the greeting names the real address and relaying is still refused.
"""

from __future__ import annotations

import socket
import struct

import pytest

from salmon_relayauth import ConnectionInfo, RelaySession
from salmon_relayauth.testing import free_port

from .conftest import ALLOWED, DENIED, RawSMTP, delivered

UNABLE_TO_RELAY = "550 5.7.1 Unable to relay"
PROXY_REFUSED = "554 5.7.1 PROXY not accepted from this address"
PROXY = "127.0.0.50"
UNTRUSTED = "127.0.0.60"
TRUSTED_PROXIES = '\n[proxy_protocol]\ntrusted_proxies = ["127.0.0.50"]\ntimeout = 1\n'

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(source: str, port: int) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 40000 {port}\r\n".encode("ascii")


def proxy_v2(source: str, port: int) -> bytes:
    """Signature, version 2 + PROXY command, TCP over IPv4, length, addresses and ports (HAProxy spec)."""
    body = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", 40000, port)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


def assert_cannot_relay(client: RawSMTP, address: str) -> None:
    """The session runs as ``address`` and may not relay (it may still send to contoso.com)."""
    ehlo = client.ehlo("printer.contoso.com")
    assert ehlo.first == f"250 relay.contoso.com Hello [{address}]"
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<victim@external.example>").first == UNABLE_TO_RELAY
    assert client.command("RCPT TO:<kate@contoso.com>").code == 250
    assert client.command("QUIT").code == 221


# -- IPv6 ----------------------------------------------------------------------------------------------

IPV6_CONNECTORS = r"""
[[connectors]]
name = "IPv6 Frontend"
bindings = ["[::1]:@V6PORT@"]
remote_ip_ranges = ["::/0"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors]]
name = "IPv6 Relay"
bindings = ["[::1]:@V6PORT@"]
remote_ip_ranges = @RELAY_RANGES@
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"
acknowledge_open_relay = true  # single hosts; only ::127.0.0.1 counts as public space

[[connectors.permissions]]
user = "NT AUTHORITY\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]
"""


def ipv6_relay(secure_relay, relay_ranges: str):
    v6_port = free_port("::1")
    extra = IPV6_CONNECTORS.replace("@V6PORT@", str(v6_port)).replace("@RELAY_RANGES@", relay_ranges)
    return secure_relay(extra=extra), v6_port


@pytest.fixture
def ipv6_loopback() -> None:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")


def test_an_ipv6_client_in_an_ipv6_relay_range_may_relay(ipv6_loopback, secure_relay, smarthost, raw_client) -> None:
    relay, v6_port = ipv6_relay(secure_relay, '["::1"]')
    client = raw_client(v6_port, "::1", "::1")
    assert client.ehlo("printer.contoso.com").first == "250 relay.contoso.com Hello [::1]"
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<kate@fabrikam.com>").code == 250
    assert client.command("DATA").code == 354
    client.send(b"Subject: v6\r\n\r\nover IPv6\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    assert [message.rcpt_tos for message in delivered(relay, smarthost)] == [("kate@fabrikam.com",)]


@pytest.mark.parametrize(
    "relay_ranges",
    [
        '["fd00::10"]',
        '["127.0.0.1"]',  # the IPv4 loopback: ::1 is not 127.0.0.1
        '["::ffff:127.0.0.1"]',  # an IPv4-mapped range means 127.0.0.1, not ::1
        '["::127.0.0.1"]',  # the deprecated IPv4-compatible form is just another IPv6 address
    ],
    ids=["other-ipv6", "ipv4-loopback", "ipv4-mapped-loopback", "ipv4-compatible"],
)
def test_an_ipv6_client_outside_the_relay_ranges_may_not_relay(ipv6_loopback, secure_relay, smarthost, raw_client, relay_ranges) -> None:
    relay, v6_port = ipv6_relay(secure_relay, relay_ranges)
    client = raw_client(v6_port, "::1", "::1")
    assert_cannot_relay(client, "::1")
    assert delivered(relay, smarthost) == []


def test_ipv4_clients_never_reach_an_ipv6_binding_as_mapped_peers(ipv6_loopback, secure_relay) -> None:
    """The relay's ``[::]`` binding is IPv6-only: an IPv4 client cannot connect to it, neither to
    127.0.0.1 nor through the IPv4-mapped address, so no peer ever shows up as ``::ffff:a.b.c.d``."""
    wildcard_port = free_port("::1")
    extra = (
        IPV6_CONNECTORS.replace('"[::1]:@V6PORT@"', f'"[::]:{wildcard_port}"').replace("@RELAY_RANGES@", '["::1"]')
    )
    secure_relay(extra=extra)
    with socket.create_connection(("::1", wildcard_port), timeout=5) as sock:  # the binding is live
        assert sock.recv(3) == b"220"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", wildcard_port), timeout=5, source_address=(ALLOWED, 0)).close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("::ffff:127.0.0.1", wildcard_port), timeout=5).close()


@pytest.mark.parametrize(
    "mapped, connector, relays",
    [
        (f"::ffff:{ALLOWED}", "Anonymous Relay", True),
        (f"::ffff:{DENIED}", "Default Frontend", False),
        ("::ffff:192.168.5.10", "Anonymous Relay", True),
        ("::ffff:192.168.5.12", "Default Frontend", False),
    ],
)
def test_the_policy_judges_an_ipv4_mapped_client_as_ipv4(secure_relay, mapped, connector, relays) -> None:
    """Mapped peers cannot reach the live listener (test above); the policy object the listener
    consults is shown to treat one as the IPv4 address it carries, should it ever get one."""
    relay = secure_relay()
    policy = relay.live.receiver.policy
    session = RelaySession(policy, ConnectionInfo("127.0.0.1", relay.port, mapped, 40000))
    assert session.open().code == 220
    assert session.session.connector.name == connector
    session.helo("printer.contoso.com")
    assert session.mail("<printer@contoso.com>").code == 250
    assert (session.rcpt("<victim@external.example>").code == 250) is relays


# -- PROXY headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
@pytest.mark.parametrize("trusting", [False, True], ids=["relay-trusts-no-proxy", "untrusted-peer"])
def test_a_proxy_header_from_an_untrusted_peer_is_refused_and_closes(secure_relay, smarthost, raw_client, header, trusting) -> None:
    """A peer that is not a trusted proxy claims, in a PROXY header, to be the host that may relay;
    the whole attack is pipelined behind it. Nothing of it may be answered but the refusal."""
    relay = secure_relay(extra=TRUSTED_PROXIES if trusting else "")
    source = UNTRUSTED if trusting else DENIED
    client = raw_client(relay.port, source)
    assert client.banner is not None and client.banner.code == 220
    client.send(
        header(ALLOWED, relay.port)
        + b"EHLO printer.contoso.com\r\nMAIL FROM:<printer@contoso.com>\r\nRCPT TO:<victim@external.example>\r\n"
        + b"DATA\r\nSubject: spoofed\r\n\r\nvia a forged PROXY header\r\n.\r\n"
    )
    replies = [reply.first for reply in client.replies_until_closed(5)]
    assert not any(reply.startswith(("250", "354")) for reply in replies), replies
    if header is proxy_v1:
        assert replies == [PROXY_REFUSED]
    assert delivered(relay, smarthost) == []


def test_a_proxy_line_in_the_middle_of_a_session_is_refused_and_closes(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    client.send(proxy_v1(ALLOWED, relay.port) + b"RCPT TO:<victim@external.example>\r\n")
    assert [reply.first for reply in client.replies_until_closed(5)] == [PROXY_REFUSED]
    assert delivered(relay, smarthost) == []


def test_a_trusted_proxy_cannot_re_identify_a_session(secure_relay, smarthost, raw_client) -> None:
    """The first header names 127.0.0.20; a second one, naming the allowed host, ends the session."""
    relay = secure_relay(extra=TRUSTED_PROXIES)
    client = raw_client(relay.port, PROXY, banner=False)
    client.send(proxy_v1(DENIED, relay.port))
    assert client.read_banner().code == 220
    assert client.ehlo().first == f"250 relay.contoso.com Hello [{DENIED}]"
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    client.send(proxy_v1(ALLOWED, relay.port) + b"RCPT TO:<victim@external.example>\r\n")
    assert [reply.first for reply in client.replies_until_closed(5)] == [PROXY_REFUSED]
    assert delivered(relay, smarthost) == []


def test_a_trusted_proxy_lends_none_of_its_own_rights(secure_relay, smarthost, raw_client) -> None:
    """The host that may relay is also a trusted proxy; the client it names in the header may not
    relay, and the session is judged as that client."""
    relay = secure_relay(extra=TRUSTED_PROXIES.replace('["127.0.0.50"]', f'["{ALLOWED}"]'))
    client = raw_client(relay.port, ALLOWED, banner=False)
    client.send(proxy_v1(DENIED, relay.port))
    assert client.read_banner().code == 220
    assert_cannot_relay(client, DENIED)
    assert delivered(relay, smarthost) == []


def test_a_trusted_proxy_that_sends_no_header_is_never_served(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay(extra=TRUSTED_PROXIES.replace('["127.0.0.50"]', f'["{ALLOWED}"]'))
    client = raw_client(relay.port, ALLOWED, banner=False)
    client.send(b"EHLO printer.contoso.com\r\nMAIL FROM:<printer@contoso.com>\r\nRCPT TO:<victim@external.example>\r\n")
    replies = [reply.first for reply in client.replies_until_closed(5)]
    assert not any(reply.startswith(("220", "250")) for reply in replies), replies
    assert delivered(relay, smarthost) == []


# -- XCLIENT / XFORWARD ----------------------------------------------------------------------------

IMPERSONATIONS = [
    f"XCLIENT ADDR={ALLOWED}",
    f"XCLIENT ADDR={ALLOWED} NAME=printer.contoso.com PORT=25 PROTO=ESMTP HELO=printer.contoso.com",
    "XCLIENT ADDR=IPV6:::1",
    "XCLIENT ADDR=192.168.5.10 LOGIN=administrator",
    f"XFORWARD ADDR={ALLOWED}",
    "XFORWARD NAME=printer.contoso.com ADDR=192.168.5.10 PROTO=ESMTP SOURCE=LOCAL",
    "XFORWARD IDENT=trusted",
]


@pytest.mark.parametrize("when", ["before-ehlo", "after-ehlo"])
def test_xclient_and_xforward_are_refused_and_change_nothing(secure_relay, smarthost, raw_client, when) -> None:
    relay = secure_relay(frontend={"max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port, DENIED)
    if when == "after-ehlo":
        client.ehlo()
    for command in IMPERSONATIONS:
        reply = client.command(command)
        assert 500 <= reply.code < 600, (command, reply)
        # Postfix answers a successful XCLIENT with a fresh 220 banner: no second reply may come.
        assert client.in_step(), (command, client.replies[-1])
    assert_cannot_relay(client, DENIED)
    assert delivered(relay, smarthost) == []


def test_ehlo_does_not_advertise_client_renaming(secure_relay, raw_client) -> None:
    relay = secure_relay()
    for port, source in ((relay.port, DENIED), (relay.port, ALLOWED), (relay.port2, ALLOWED)):
        lines = raw_client(port, source).ehlo().lines
        assert not any(line.split(" ")[0] in ("XCLIENT", "XFORWARD", "XEXCH50", "X-ANONYMOUSTLS") for line in lines), lines


# -- HELO names ---------------------------------------------------------------------------------------

CLAIMED_NAMES = [
    "EHLO relay.contoso.com",
    f"EHLO [{ALLOWED}]",
    "HELO printer.contoso.com",
    "EHLO [192.168.5.10]",
    "HELO [127.0.0.1]",
    "EHLO localhost",
    "EHLO [IPv6:::1]",
    "EHLO contoso.com",
    "EHLO exchange.contoso.com",
]


@pytest.mark.parametrize("greeting", CLAIMED_NAMES)
def test_a_helo_name_claiming_a_trusted_identity_changes_nothing(secure_relay, smarthost, raw_client, greeting) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    reply = client.command(greeting)
    assert reply.first == f"250 relay.contoso.com Hello [{DENIED}]"
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<victim@external.example>").first == UNABLE_TO_RELAY
    # Greeting again with another claim mid-session does not help either.
    assert client.command(f"EHLO [{ALLOWED}]").code == 250
    assert client.command("MAIL FROM:<postmaster@contoso.com>").code == 250
    assert client.command("RCPT TO:<victim@external.example>").first == UNABLE_TO_RELAY
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


@pytest.mark.parametrize("greeting", ["EHLO relay.contoso.com", f"EHLO [{DENIED}]", "HELO unknown.example"])
def test_a_helo_name_never_costs_an_allowed_host_its_right(secure_relay, smarthost, raw_client, greeting) -> None:
    """The converse: the allowed host's right comes from its address, whatever name it gives."""
    relay = secure_relay()
    client = raw_client(relay.port, ALLOWED)
    assert client.command(greeting).first == f"250 relay.contoso.com Hello [{ALLOWED}]"
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<kate@fabrikam.com>").code == 250
    assert client.command("DATA").code == 354
    client.send(b"Subject: named\r\n\r\nany name\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    assert len(delivered(relay, smarthost)) == 1


def test_the_externally_secured_port_ignores_claimed_names(secure_relay, smarthost, raw_client) -> None:
    """A host not listed on the externally secured connector gets no session there, whatever it says."""
    relay = secure_relay()
    client = raw_client(relay.port2, DENIED)
    assert client.banner is not None
    assert client.banner.first == "421 4.3.2 Service not available, closing transmission channel"
    try:
        client.send(b"EHLO exchange.contoso.com\r\nXCLIENT ADDR=127.0.0.10\r\n" + proxy_v1(ALLOWED, relay.port2))
    except OSError:
        pass
    assert client.replies_until_closed(5) == []
    assert delivered(relay, smarthost) == []
