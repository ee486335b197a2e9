"""Open-relay probes: the address forms public relay testers send, against every connector kind.

A client that may not relay (``127.0.0.20``: on Default Frontend only) sends every external
recipient form relay testers use (plain, quoted, percent hack, bang path, source route, IP literal,
trailing dot, mixed case, ...) behind every sender form (local sender spoofing, null sender,
external sender, the relay's own IP literal). Each probe must draw a 5xx at RCPT or earlier, and
nothing may reach the recording smarthost.

Connector kinds of the sample configuration:

- Default Frontend (first port): the prober lands here and is judged with AnonymousUsers' rights;
- Anonymous Relay (first port): takes only its listed hosts, so the prober can never land on it;
- Externally Secured Relay (second port): alone on its port, as in the sample; the prober is on no
  connector there and is greeted ``421 4.3.2`` and disconnected before it can send a command (the
  README's documented, deliberately temporary, "no connector" reply). The same port shared with a
  catch-all frontend (Exchange's usual layout) is probed too, to get past the banner.

The "local-looking" forms, which a downstream smarthost could read as an external destination,
are also checked from a host that *may* relay: quoted local parts hiding an ``@``, ``%`` or ``!``
are refused even then, and a source route is never passed on to the smarthost.
"""

from __future__ import annotations

import pytest

from .conftest import ALLOWED, DENIED, RawSMTP, Reply, delivered

SENDERS = {
    "local-sender-spoof": "<postmaster@contoso.com>",
    "local-subdomain-spoof": "<it@mail.contoso.com>",
    "null-sender": "<>",
    "external-sender": "<spammer@external.example>",
    "victim-as-sender": "<victim@external.example>",
    "relay-ip-literal-sender": "<postmaster@[127.0.0.1]>",
}

# The argument of RCPT TO: exactly as sent (some forms carry no brackets on purpose).
EXTERNAL_RECIPIENTS = {
    "plain": "<victim@external.example>",
    "unbracketed": "victim@external.example",
    "space-before-path": " <victim@external.example>",
    "quoted-local-part": '<"victim"@external.example>',
    "quoted-whole-address": '<"victim@external.example">',
    "quoted-at-local-domain": '<"victim@external.example"@contoso.com>',
    "quoted-escaped-at-local-domain": '<"victim\\@external.example"@contoso.com>',
    "quoted-percent-local-domain": '<"victim%external.example"@contoso.com>',
    "quoted-bang-local-domain": '<"external.example!victim"@contoso.com>',
    "backslash-at-local-domain": "<victim\\@external.example@contoso.com>",
    "percent-hack": "<victim%external.example@contoso.com>",
    "percent-hack-mixed-case": "<victim%EXTERNAL.Example@CONTOSO.com>",
    "percent-hack-two-hops": "<victim%external.example%contoso.com@contoso.com>",
    "percent-hack-trailing-dot": "<victim%external.example.@contoso.com>",
    "percent-hack-ip-literal": "<victim%external.example@[127.0.0.1]>",
    "percent-in-domain": "<victim@external.example%contoso.com>",
    "bang-path": "<external.example!victim@contoso.com>",
    "bang-path-two-hops": "<contoso.com!external.example!victim@contoso.com>",
    "bang-path-without-domain": "<external.example!victim>",
    "bang-and-percent": "<external.example!victim%contoso.com@contoso.com>",
    "source-route": "<@contoso.com:victim@external.example>",
    "source-route-two-hops": "<@relay.contoso.com,@contoso.com:victim@external.example>",
    "source-route-unbracketed": "@contoso.com:victim@external.example",
    "ip-literal": "<victim@[192.0.2.1]>",
    "ip-literal-of-the-relay": "<victim@[127.0.0.1]>",
    "ip-literal-of-an-allowed-host": "<victim@[127.0.0.10]>",
    "ipv6-literal": "<victim@[IPv6:2001:db8::1]>",
    "ipv6-literal-loopback": "<victim@[IPv6:::1]>",
    "numeric-domain": "<victim@192.0.2.1>",
    "hex-domain": "<victim@0x7f000001>",
    "trailing-dot": "<victim@external.example.>",
    "two-trailing-dots": "<victim@external.example..>",
    "mixed-case": "<Victim@ExTeRnAl.ExAmPlE>",
    "upper-case-trailing-dot": "<VICTIM@EXTERNAL.EXAMPLE.>",
    "accepted-domain-as-prefix": "<victim@contoso.com.external.example>",
    "accepted-domain-glued-suffix": "<victim@notcontoso.com>",
    "double-at-local-last": "<victim@external.example@contoso.com>",
    "double-at-local-first": "<victim@contoso.com@external.example>",
    "localhost": "<victim@localhost>",
    "single-label": "<victim@external>",
    "nul-byte": "<victim@contoso.com\x00.external.example>",
    "non-ascii": "<victim@contoso.com\u00e9xternal.example>",
}


def start_transaction(client: RawSMTP, sender: str) -> Reply:
    """RSET, then MAIL FROM with ``sender``."""
    assert client.command("RSET").code == 250
    return client.command(f"MAIL FROM:{sender}".encode("latin-1"))


def probe(client: RawSMTP, sender: str, recipient: str) -> tuple[Reply, Reply | None]:
    """One probe: MAIL (which may already refuse), RCPT, and DATA when RCPT was accepted (so that
    an accepted probe would really be relayed and show up at the smarthost)."""
    mail = start_transaction(client, sender)
    if mail.code >= 400:
        return mail, None
    rcpt = client.command(f"RCPT TO:{recipient}".encode("latin-1"))
    if rcpt.code < 300:
        if client.command("DATA").code == 354:
            client.send(b"Subject: relay probe\r\n\r\nThis relay is open\r\n.\r\n")
            client.reply()
    return mail, rcpt


def run_probes(client: RawSMTP, senders: dict[str, str]) -> list[str]:
    """Every recipient form behind every given sender; the probes that did not get a 5xx."""
    assert client.ehlo("relaytest.example").code == 250
    wrong = []
    for sender_name, sender in senders.items():
        for recipient_name, recipient in EXTERNAL_RECIPIENTS.items():
            mail, rcpt = probe(client, sender, recipient)
            refusal = rcpt if rcpt is not None else mail
            if not 500 <= refusal.code < 600:
                wrong.append(f"{sender_name} / {recipient_name}: MAIL {mail.first} / RCPT {refusal.first}")
    return wrong


# -- Default Frontend ------------------------------------------------------------------------------


@pytest.mark.parametrize("sender_name", list(SENDERS))
def test_default_frontend_refuses_every_probe_with_5xx(secure_relay, smarthost, raw_client, sender_name) -> None:
    relay = secure_relay(frontend={"max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port, DENIED)
    assert client.banner is not None and client.banner.code == 220
    wrong = run_probes(client, {sender_name: SENDERS[sender_name]})
    assert wrong == [], "probes that did not get a 5xx:\n" + "\n".join(wrong)
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


def test_relay_refusals_say_unable_to_relay_from_the_default_frontend(secure_relay, smarthost, raw_client) -> None:
    """A well-formed external recipient gets Exchange's exact refusal, whatever the sender."""
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo("relaytest.example")
    for sender in SENDERS.values():
        assert start_transaction(client, sender).code == 250, sender
        for name in ("plain", "percent-hack", "bang-path", "source-route", "ip-literal", "trailing-dot", "mixed-case"):
            reply = client.command(f"RCPT TO:{EXTERNAL_RECIPIENTS[name]}")
            assert reply.first == "550 5.7.1 Unable to relay", (sender, name)
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


# -- Externally Secured Relay --------------------------------------------------------------------


def test_externally_secured_port_turns_away_a_host_it_does_not_list(secure_relay, smarthost, raw_client) -> None:
    """Alone on its port (the sample's layout), the connector takes only its listed hosts: anyone
    else is greeted 421 4.3.2 and disconnected, so not one probe command is ever answered."""
    relay = secure_relay()
    for sender in SENDERS.values():
        client = raw_client(relay.port2, DENIED)
        assert client.banner is not None
        assert client.banner.first == "421 4.3.2 Service not available, closing transmission channel"
        try:
            client.send(
                f"EHLO relaytest.example\r\nMAIL FROM:{sender}\r\n".encode()
                + b"RCPT TO:<victim@external.example>\r\nDATA\r\n"
            )
        except OSError:
            pass  # already closed: even better
        assert client.replies_until_closed(5) == []
    assert delivered(relay, smarthost) == []


@pytest.mark.parametrize("sender_name", ["local-sender-spoof", "null-sender", "external-sender"])
def test_externally_secured_port_shared_with_a_frontend_refuses_every_probe(
    secure_relay, smarthost, raw_client, sender_name
) -> None:
    """Exchange's usual layout: the catch-all frontend also listens on the externally secured
    port. The prober lands on the frontend there, never on the externally secured connector."""
    relay = secure_relay(frontend={"bindings": ["127.0.0.1:{port}", "127.0.0.1:@PORT2@"], "max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port2, DENIED)
    assert client.banner is not None and client.banner.code == 220
    wrong = run_probes(client, {sender_name: SENDERS[sender_name]})
    assert wrong == [], "probes that did not get a 5xx:\n" + "\n".join(wrong)
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


def test_the_shared_secured_port_still_serves_its_listed_host(secure_relay, smarthost, raw_client) -> None:
    """Control for the test above: on the same layout the listed host is externally secured and
    relays, so the prober's refusals come from its address, not from a broken port."""
    relay = secure_relay(frontend={"bindings": ["127.0.0.1:{port}", "127.0.0.1:@PORT2@"]})
    client = raw_client(relay.port2, ALLOWED)
    client.ehlo("exchange.contoso.com")
    assert client.command("MAIL FROM:<postmaster@contoso.com>").code == 250
    assert client.command("RCPT TO:<victim@external.example>").first == "250 2.1.5 Recipient OK"
    assert client.command("DATA").code == 354
    client.send(b"Subject: control\r\n\r\nfrom the listed host\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    received = delivered(relay, smarthost)
    assert [message.rcpt_tos for message in received] == [("victim@external.example",)]


# -- probes mixed into a legitimate transaction ---------------------------------------------------


def test_a_probe_beside_a_local_recipient_never_reaches_the_smarthost(secure_relay, smarthost, raw_client) -> None:
    """The message is accepted for its local recipient only: no refused probe rides along."""
    relay = secure_relay(frontend={"max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port, DENIED)
    client.ehlo("relaytest.example")
    assert client.command("MAIL FROM:<postmaster@contoso.com>").code == 250
    assert client.command("RCPT TO:<kate@contoso.com>").code == 250
    for name, recipient in EXTERNAL_RECIPIENTS.items():
        assert client.command(f"RCPT TO:{recipient}".encode("latin-1")).code >= 500, name
    assert client.command("DATA").code == 354
    client.send(b"Subject: mixed\r\n\r\nonly kate may get this\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    received = delivered(relay, smarthost)
    assert [message.rcpt_tos for message in received] == [("kate@contoso.com",)]
    assert b"external.example" not in received[0].content


# -- local-looking addresses a smarthost could route outside --------------------------------------

LOCAL_LOOKING = {
    "percent-hack": "<victim%external.example@contoso.com>",
    "bang-path": "<external.example!victim@contoso.com>",
    "quoted-at": '<"victim@external.example"@contoso.com>',
    "quoted-percent": '<"victim%external.example"@contoso.com>',
    "quoted-bang": '<"external.example!victim"@contoso.com>',
    "percent-hack-subdomain": "<victim%external.example@mail.contoso.com>",
}


@pytest.mark.parametrize("name", list(LOCAL_LOOKING))
def test_local_looking_forms_are_refused_without_the_relay_right(secure_relay, smarthost, raw_client, name) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo("relaytest.example")
    assert client.command("MAIL FROM:<postmaster@contoso.com>").code == 250
    reply = client.command(f"RCPT TO:{LOCAL_LOOKING[name]}")
    assert 500 <= reply.code < 600, reply
    assert client.command("DATA").code == 503
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


@pytest.mark.parametrize("name", ["quoted-at", "quoted-percent", "quoted-bang"])
@pytest.mark.parametrize("where", ["anonymous-relay", "externally-secured"])
def test_quoted_hidden_destinations_are_refused_even_with_the_relay_right(
    secure_relay, smarthost, raw_client, name, where
) -> None:
    """A quoted local part hiding ``@``, ``%`` or ``!`` names a destination the relay cannot state
    with certainty: refused outright, on every connector, whatever the client's rights."""
    relay = secure_relay()
    client = raw_client(relay.port if where == "anonymous-relay" else relay.port2, ALLOWED)
    client.ehlo("printer.contoso.com")
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    reply = client.command(f"RCPT TO:{LOCAL_LOOKING[name]}")
    assert reply.first == "501 5.1.3 Invalid address"
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


@pytest.mark.parametrize("where", ["anonymous-relay", "externally-secured"])
def test_a_source_route_is_never_passed_on_to_the_smarthost(secure_relay, smarthost, raw_client, where) -> None:
    """An allowed host's ``<@contoso.com:victim@external.example>``: the route is dropped and
    only the final address is forwarded (a smarthost honouring the route would see a local hop)."""
    relay = secure_relay()
    client = raw_client(relay.port if where == "anonymous-relay" else relay.port2, ALLOWED)
    client.ehlo("printer.contoso.com")
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<@contoso.com:victim@external.example>").code == 250
    assert client.command("RCPT TO:<@relay.contoso.com,@contoso.com:kate@fabrikam.com>").code == 250
    assert client.command("DATA").code == 354
    client.send(b"Subject: routed\r\n\r\nsource routed\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    received = delivered(relay, smarthost)
    assert len(received) == 1
    assert received[0].rcpt_tos == ("victim@external.example", "kate@fabrikam.com")
    assert all(":" not in rcpt and not rcpt.startswith("@") for rcpt in received[0].rcpt_tos)


def test_a_source_route_through_an_external_host_to_a_local_mailbox_is_dropped(secure_relay, smarthost, raw_client) -> None:
    """The prober may send to contoso.com, so ``<@external.example:victim@contoso.com>`` is
    accepted for its final, local address; the route through external.example must not reach the
    smarthost, or a route-honouring smarthost would relay for the prober."""
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo("relaytest.example")
    assert client.command("MAIL FROM:<postmaster@contoso.com>").code == 250
    assert client.command("RCPT TO:<@external.example:victim@contoso.com>").first == "250 2.1.5 Recipient OK"
    assert client.command("DATA").code == 354
    client.send(b"Subject: routed\r\n\r\nroute via external.example\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    received = delivered(relay, smarthost)
    assert [message.rcpt_tos for message in received] == [("victim@contoso.com",)]


def test_the_envelope_handed_to_the_smarthost_carries_no_source_route(secure_relay, smarthost, raw_client) -> None:
    """The recording smarthost (aiosmtpd) itself strips a source route when it parses RCPT, so
    the check above cannot see one. Here the smarthost defers every recipient, which keeps the
    message in the relay's queue, and the queued envelope (exactly what delivery sends as
    ``RCPT TO:<...>``) is read instead."""
    for address in ("victim@external.example", "kate@fabrikam.com", "victim@contoso.com"):
        smarthost.replies[address] = ["451 4.3.0 Try again later"]
    relay = secure_relay()
    sessions = [
        (ALLOWED, ["<@contoso.com:victim@external.example>", "<@relay.contoso.com,@contoso.com:kate@fabrikam.com>"]),
        (DENIED, ["<@external.example:victim@contoso.com>"]),
    ]
    for source, recipients in sessions:
        client = raw_client(relay.port, source)
        client.ehlo("printer.contoso.com")
        assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
        for recipient in recipients:
            assert client.command(f"RCPT TO:{recipient}").code == 250, recipient
        assert client.command("DATA").code == 354
        client.send(b"Subject: routed\r\n\r\nheld in the queue\r\n.\r\n")
        assert client.reply().code == 250
        client.command("QUIT")
    queued = sorted(envelope.recipients for envelope in relay.queue.list())
    assert queued == [("victim@contoso.com",), ("victim@external.example", "kate@fabrikam.com")]


@pytest.mark.parametrize(
    "recipient, forwarded",
    [
        ("<victim%external.example@contoso.com>", "victim%external.example@contoso.com"),
        ("<external.example!victim@contoso.com>", "external.example!victim@contoso.com"),
    ],
    ids=["percent-hack", "bang-path"],
)
def test_hidden_hops_reach_the_smarthost_only_from_a_host_that_may_relay(
    secure_relay, smarthost, raw_client, recipient, forwarded
) -> None:
    """The contrast: the same local-looking forms are relayed for a host holding the relay right
    (it may send anywhere), and refused for the prober in the same run."""
    relay = secure_relay()
    prober = raw_client(relay.port, DENIED)
    prober.ehlo("relaytest.example")
    assert prober.command("MAIL FROM:<postmaster@contoso.com>").code == 250
    assert prober.command(f"RCPT TO:{recipient}").first == "550 5.7.1 Unable to relay"
    prober.command("QUIT")

    printer = raw_client(relay.port, ALLOWED)
    printer.ehlo("printer.contoso.com")
    assert printer.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert printer.command(f"RCPT TO:{recipient}").code == 250
    assert printer.command("DATA").code == 354
    printer.send(b"Subject: hop\r\n\r\nallowed\r\n.\r\n")
    assert printer.reply().code == 250
    printer.command("QUIT")
    received = delivered(relay, smarthost)
    assert [message.rcpt_tos for message in received] == [(forwarded,)]
    assert received[0].peer == "127.0.0.1"
