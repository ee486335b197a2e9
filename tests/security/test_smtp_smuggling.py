"""SMTP smuggling: end-of-data look-alikes built from bare CR, bare LF and dots.

Only ``CRLF . CRLF`` ends a message. Every other end-of-data variant, followed by the pipelined
commands of a second, "smuggled" message (``MAIL FROM``, ``RCPT TO`` to an external domain,
``DATA``, its content) and then the real ``CRLF . CRLF``, must:

- not end the message early: the client gets exactly one reply to the whole DATA section, and no
  reply to the smuggled commands, which were never executed (they stay inside the body);
- reach the smarthost as exactly ONE message, whose line ends are all CRLF (a bare CR or LF is
  turned into CRLF by default, so no downstream MTA can find a different boundary).

Per connector the choice is ``bare_linefeed_rejection_enabled``: off (the default) normalises, on
refuses the whole message with ``554 5.6.0 Invalid message content, contains bare linefeeds`` and
nothing is relayed. Both are tested on every connector kind: Anonymous Relay and Externally Secured
Relay (from the allowed host, to an external recipient) and Default Frontend (from any host, to a
local recipient, which the smarthost receives just the same).
"""

from __future__ import annotations

import socket
import time

import pytest

from .conftest import ALLOWED, DENIED, RawSMTP, bare_line_ends, delivered

# End-of-data look-alikes: what comes between the real message's last line and the smuggled
# commands. Each contains a bare CR or a bare LF (or both), so no CRLF.CRLF is ever formed.
VARIANTS = {
    "LF.LF": b"\n.\n",
    "CR.CR": b"\r.\r",
    "CRLF.LF": b"\r\n.\n",
    "LF.CRLF": b"\n.\r\n",
    "CR.CRLF": b"\r.\r\n",
    "CRLF.CR": b"\r\n.\r",
    "LF.CR": b"\n.\r",
    "CR.LF": b"\r.\n",
    "CRLF.CRCRLF": b"\r\n.\r\r\n",
    "LFCR.CRLF": b"\n\r.\r\n",
    "CRLF-LF.CRLF": b"\r\n\n.\r\n",
    "LF..LF": b"\n..\n",
    "CRLF.LFCRLF": b"\r\n.\n\r\n",
}

SMUGGLED = (
    b"MAIL FROM:<smuggler@contoso.com>\r\n"
    b"RCPT TO:<smuggled@external.example>\r\n"
    b"DATA\r\n"
    b"From: smuggler@contoso.com\r\n"
    b"Subject: smuggled\r\n"
    b"\r\n"
    b"smuggled body"
)

# (connector kind, client address, port attribute, envelope recipient)
CONNECTORS = {
    "anonymous-relay": (ALLOWED, "port", "kate@fabrikam.com"),
    "externally-secured": (ALLOWED, "port2", "kate@fabrikam.com"),
    "default-frontend": (DENIED, "port", "kate@contoso.com"),
}

REJECT_BARE = {"bare_linefeed_rejection_enabled": True}
BARE_REFUSAL = "554 5.6.0 Invalid message content, contains bare linefeeds"


def smuggling_payload(variant: bytes, tag: str) -> bytes:
    head = f"From: printer@contoso.com\r\nSubject: real {tag}\r\n\r\nfirst line".encode()
    return head + variant + SMUGGLED + b"\r\n.\r\n"


def open_transaction(client: RawSMTP, recipient: str) -> None:
    assert client.ehlo("printer.contoso.com").code == 250
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command(f"RCPT TO:<{recipient}>").code == 250
    assert client.command("DATA").first.startswith("354 ")


def send_smuggling_attempt(client: RawSMTP, variant: bytes, tag: str, recipient: str, segmented: bool = False) -> list[str]:
    """The whole attempt, pipelined with a QUIT behind the real end: every reply until close."""
    open_transaction(client, recipient)
    payload = smuggling_payload(variant, tag) + b"QUIT\r\n"
    if segmented:
        # The bytes around the look-alike in their own TCP segments, so no reader can rely on
        # seeing the whole marker in one read.
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cut = payload.index(variant)
        client.send(payload[: cut - 1])
        for index in range(cut - 1, cut + len(variant) + 2):
            client.send(payload[index : index + 1])
            time.sleep(0.005)
        client.send(payload[cut + len(variant) + 2 :])
    else:
        client.send(payload)
    return [reply.first for reply in client.replies_until_closed(5)]


def assert_one_clean_message(message, tag: str, recipient: str) -> None:
    assert message.mail_from == "printer@contoso.com"
    assert message.rcpt_tos == (recipient,)
    assert bare_line_ends(message.content) == [], f"bare CR/LF reached the smarthost: {message.content!r}"
    assert message.content.endswith(b"\r\n")
    assert f"Subject: real {tag}\r\n".encode() in message.content
    # The smuggled commands travelled as body text, in order, after the real first line.
    body = message.content.split(b"\r\n\r\n", 1)[1]
    first = body.index(b"first line")
    smuggled = body.index(b"MAIL FROM:<smuggler@contoso.com>\r\nRCPT TO:<smuggled@external.example>\r\nDATA\r\n")
    assert first < smuggled < body.index(b"smuggled body")


# -- normalised (the default) ------------------------------------------------------------------------


@pytest.mark.parametrize("variant_name", list(VARIANTS))
def test_look_alike_end_of_data_is_normalised_into_one_message(secure_relay, smarthost, raw_client, variant_name) -> None:
    relay = secure_relay()
    variant = VARIANTS[variant_name]
    expected = []
    for kind, (source, port, recipient) in CONNECTORS.items():
        client = raw_client(getattr(relay, port), source)
        replies = send_smuggling_attempt(client, variant, kind, recipient)
        # One reply to the DATA section, then QUIT's: the smuggled MAIL/RCPT/DATA got none.
        assert len(replies) == 2, (kind, replies)
        assert replies[0].startswith("250 2.6.0 <") and replies[0].endswith("> Queued mail for delivery"), (kind, replies)
        assert replies[1] == "221 2.0.0 Service closing transmission channel", (kind, replies)
        expected.append((kind, recipient))
    received = delivered(relay, smarthost)
    assert len(received) == len(CONNECTORS), [message.content for message in received]
    by_tag = {message.content.split(b"Subject: real ", 1)[1].split(b"\r\n", 1)[0].decode(): message for message in received}
    for kind, recipient in expected:
        assert_one_clean_message(by_tag[kind], kind, recipient)
    assert not any("smuggled@external.example" in message.rcpt_tos for message in received)
    assert not any(message.mail_from == "smuggler@contoso.com" for message in received)


def test_look_alikes_split_across_tcp_segments_are_normalised_too(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay()
    for name, variant in VARIANTS.items():
        client = raw_client(relay.port, ALLOWED)
        replies = send_smuggling_attempt(client, variant, name, "kate@fabrikam.com", segmented=True)
        assert len(replies) == 2 and replies[0].startswith("250 2.6.0 "), (name, replies)
    received = delivered(relay, smarthost)
    assert len(received) == len(VARIANTS)
    for message in received:
        tag = message.content.split(b"Subject: real ", 1)[1].split(b"\r\n", 1)[0].decode()
        assert_one_clean_message(message, tag, "kate@fabrikam.com")


def test_every_bare_line_end_in_a_message_becomes_crlf(secure_relay, smarthost, raw_client) -> None:
    """Normalisation keeps the text: each bare CR and each bare LF becomes exactly one CRLF."""
    relay = secure_relay()
    client = raw_client(relay.port, ALLOWED)
    open_transaction(client, "kate@fabrikam.com")
    client.send(b"Subject: mixed\nX-Test: one\r\rbody a\nbody b\rbody c\r\n\n\rbody d\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    (message,) = delivered(relay, smarthost)
    assert message.content == b"Subject: mixed\r\nX-Test: one\r\n\r\nbody a\r\nbody b\r\nbody c\r\n\r\n\r\nbody d\r\n"


# -- refused (bare_linefeed_rejection_enabled) ---------------------------------------------------


def rejecting(kind: str) -> dict[str, dict[str, bool]]:
    return {{"anonymous-relay": "relay", "externally-secured": "secured", "default-frontend": "frontend"}[kind]: REJECT_BARE}


@pytest.mark.parametrize("kind", list(CONNECTORS))
def test_connector_refusing_bare_line_ends_refuses_every_look_alike(secure_relay, smarthost, raw_client, kind) -> None:
    relay = secure_relay(**rejecting(kind))
    source, port, recipient = CONNECTORS[kind]
    for name, variant in VARIANTS.items():
        client = raw_client(getattr(relay, port), source)
        replies = send_smuggling_attempt(client, variant, name, recipient)
        # The refusal comes after the real end of data; the smuggled commands got no reply.
        assert replies == [BARE_REFUSAL, "221 2.0.0 Service closing transmission channel"], (name, replies)
    assert delivered(relay, smarthost) == []
    assert len(relay.queue) == 0


@pytest.mark.parametrize("kind", list(CONNECTORS))
def test_refusal_leaves_the_session_usable_and_the_next_message_intact(secure_relay, smarthost, raw_client, kind) -> None:
    relay = secure_relay(**rejecting(kind))
    source, port, recipient = CONNECTORS[kind]
    client = raw_client(getattr(relay, port), source)
    open_transaction(client, recipient)
    client.send(smuggling_payload(b"\n.\n", "refused"))
    assert client.reply().first == BARE_REFUSAL
    # The transaction was reset: a new one on the same connection goes through untouched.
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command(f"RCPT TO:<{recipient}>").code == 250
    assert client.command("DATA").code == 354
    client.send(b"Subject: clean\r\n\r\nonly CRLF here\r\n.\r\n")
    assert client.reply().code == 250
    assert client.command("QUIT").code == 221
    received = delivered(relay, smarthost)
    assert [message.content for message in received] == [b"Subject: clean\r\n\r\nonly CRLF here\r\n"]


@pytest.mark.parametrize("kind", list(CONNECTORS))
def test_connector_refusing_bare_line_ends_still_takes_clean_messages(secure_relay, smarthost, raw_client, kind) -> None:
    """The refusal is not over-broad: CRLF-only content with dots is accepted."""
    relay = secure_relay(**rejecting(kind))
    source, port, recipient = CONNECTORS[kind]
    client = raw_client(getattr(relay, port), source)
    open_transaction(client, recipient)
    client.send(b"Subject: dots\r\n\r\n..\r\n...leading\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    (message,) = delivered(relay, smarthost)
    assert message.content == b"Subject: dots\r\n\r\n.\r\n..leading\r\n"


def test_a_look_alike_behind_a_line_longer_than_the_read_buffer_is_still_refused(secure_relay, smarthost, raw_client) -> None:
    """The listener reads DATA in pieces once a line exceeds its buffer (4096 bytes): a bare LF
    and the smuggled commands hidden past that point are found all the same."""
    relay = secure_relay(relay=REJECT_BARE)
    for filler in (4000, 4094, 4095, 4096, 4097, 9000):
        client = raw_client(relay.port, ALLOWED)
        open_transaction(client, "kate@fabrikam.com")
        client.send(b"Subject: long\r\n\r\n" + b"A" * filler + b"\n.\n" + SMUGGLED + b"\r\n.\r\nQUIT\r\n")
        replies = [reply.first for reply in client.replies_until_closed(5)]
        assert replies == [BARE_REFUSAL, "221 2.0.0 Service closing transmission channel"], (filler, replies)
    assert delivered(relay, smarthost) == []


# -- dot-stuffing --------------------------------------------------------------------------------

DOTTED_LINES = [b".", b"..", b"...", b".hidden", b"..double", b". space", b".\t", b".MAIL FROM:<x@external.example>"]


def stuff(lines: list[bytes]) -> bytes:
    """What an RFC 5321 client sends: a leading dot doubled on every line."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


@pytest.mark.parametrize("kind", list(CONNECTORS))
def test_dot_stuffed_lines_arrive_intact(secure_relay, smarthost, raw_client, kind) -> None:
    relay = secure_relay()
    source, port, recipient = CONNECTORS[kind]
    client = raw_client(getattr(relay, port), source)
    open_transaction(client, recipient)
    original = [b"Subject: dots", b"", b"before", *DOTTED_LINES, b"after"]
    client.send(stuff(original) + b".\r\n")
    assert client.reply().code == 250
    # Nothing after the lone "." line of the body ended the message: QUIT gets the next reply.
    assert client.command("QUIT").code == 221
    (message,) = delivered(relay, smarthost)
    assert message.content == b"".join(line + b"\r\n" for line in original)


def test_a_stuffed_lone_dot_line_does_not_end_the_message(secure_relay, smarthost, raw_client) -> None:
    """``..`` CRLF is a body line holding one dot; what follows it is still the same message,
    including text shaped like the next transaction's commands."""
    relay = secure_relay()
    client = raw_client(relay.port, ALLOWED)
    open_transaction(client, "kate@fabrikam.com")
    client.send(b"Subject: one\r\n\r\nfirst\r\n..\r\n" + SMUGGLED + b"\r\n.\r\nQUIT\r\n")
    replies = [reply.first for reply in client.replies_until_closed(5)]
    assert len(replies) == 2 and replies[0].startswith("250 2.6.0 ") and replies[1].startswith("221 "), replies
    (message,) = delivered(relay, smarthost)
    assert message.rcpt_tos == ("kate@fabrikam.com",)
    assert message.content.startswith(b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<smuggler@contoso.com>\r\n")
    assert message.content.endswith(b"smuggled body\r\n")
