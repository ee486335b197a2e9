"""Protocol abuse: whatever a client sends, the relay answers with a 4xx/5xx, closes where it
should, never shows a Python exception name or traceback, and keeps serving well-behaved clients.

Covered: commands out of order; over-long command lines (and that the tail of one is never run as a
command); NUL, control and 8-bit bytes in commands; thousands of recipients; messages over the size
limit; AUTH on connectors without authentication; STARTTLS with plaintext pipelined behind it; idle,
slow-drip and never-ending connections; floods of NOOPs and of junk; a well-behaved client served
while abusive ones run.

Every line the relay sends in this module is collected, and the last tests of the module scan them
all for Python internals (exception class names, tracebacks) and for the word ``Error`` (the prefix
of aiosmtpd's ``500 Error: (ValueError) ...`` fallback and of its stock replies, none of which is
one of Exchange's replies).
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from salmon_relayauth.testing import connect_from

from .conftest import ALLOWED, DENIED, RawSMTP, ServerClosed, delivered, error_word, python_internals

TOO_MANY_ERRORS = "421 4.7.0 Too many errors on this connection, closing transmission channel"
IDLE_TIMEOUT = "451 4.7.0 Timeout waiting for client input"
LIFETIME_OVER = "421 4.4.1 Connection timed out"
MESSAGE = b"From: printer@contoso.com\r\nTo: kate@fabrikam.com\r\nSubject: status\r\n\r\nall good\r\n"

# Every line the relay sent in this module, for the scans at the end.
SEEN: list[str] = []


@pytest.fixture(autouse=True)
def collect_replies(raw_client) -> Iterator[None]:
    yield
    for client in raw_client.opened:
        SEEN.extend(client.transcript)


# -- commands out of order -------------------------------------------------------------------------

OUT_OF_ORDER = {
    "mail-before-ehlo": ([], "MAIL FROM:<printer@contoso.com>", "503 5.5.2 Send hello first"),
    "rcpt-before-ehlo": ([], "RCPT TO:<kate@contoso.com>", "503 5.5.2 Need mail command"),
    "data-before-ehlo": ([], "DATA", "503 5.5.2 Need mail command"),
    "auth-before-ehlo": ([], "AUTH LOGIN", "503 5.5.2 Send hello first"),
    "rcpt-before-mail": (["EHLO c.example"], "RCPT TO:<kate@contoso.com>", "503 5.5.2 Need mail command"),
    "data-before-mail": (["EHLO c.example"], "DATA", "503 5.5.2 Need mail command"),
    "data-before-rcpt": (["EHLO c.example", "MAIL FROM:<printer@contoso.com>"], "DATA", "503 5.5.2 Need rcpt command"),
    "second-mail": (["EHLO c.example", "MAIL FROM:<printer@contoso.com>"], "MAIL FROM:<other@contoso.com>", "503 5.5.2 Sender already specified"),
    "rcpt-after-rset": (["EHLO c.example", "MAIL FROM:<printer@contoso.com>", "RSET"], "RCPT TO:<kate@contoso.com>", "503 5.5.2 Need mail command"),
    "data-after-refused-rcpt": (
        ["EHLO c.example", "MAIL FROM:<printer@contoso.com>", "RCPT TO:<victim@external.example>"],
        "DATA",
        "503 5.5.2 Need rcpt command",
    ),
}


@pytest.mark.parametrize("name", list(OUT_OF_ORDER))
def test_commands_out_of_order_are_refused_and_the_session_goes_on(secure_relay, smarthost, raw_client, name) -> None:
    relay = secure_relay()
    before, command, expected = OUT_OF_ORDER[name]
    client = raw_client(relay.port, DENIED)
    for line in before:
        assert client.command(line).code < 600
    assert client.command(command).first == expected
    # The refused command left nothing behind: a normal transaction follows on the same connection.
    assert client.ehlo().code == 250
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<kate@contoso.com>").code == 250
    assert client.command("RCPT TO:<victim@external.example>").first == "550 5.7.1 Unable to relay"
    assert client.command("QUIT").code == 221
    assert delivered(relay, smarthost) == []


def test_message_text_sent_without_data_is_never_taken_as_a_message(secure_relay, smarthost, raw_client) -> None:
    """A client that skips DATA: its "message" lines are refused as commands, nothing is queued,
    and a lone "." is just one more unknown command."""
    relay = secure_relay(relay={"max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<kate@fabrikam.com>").code == 250
    client.send(b"Subject: no data\r\n\r\nbody\r\n.\r\n")
    replies = [client.reply() for _ in range(4)]
    assert all(500 <= reply.code < 600 for reply in replies), replies
    assert client.command("QUIT").code == 221
    assert delivered(relay, smarthost) == []


# -- over-long command lines -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [600, 4096, 4097, 20000])
@pytest.mark.parametrize("glue", [b"", b"\r", b" "], ids=["glued", "bare-cr", "space"])
def test_the_tail_of_an_over_long_line_is_never_run(secure_relay, smarthost, raw_client, length, glue) -> None:
    """From the host that may relay, after MAIL: an over-long NOOP whose last bytes read
    ``RCPT TO:<victim@external.example>``. Had that tail run as a command, DATA would be accepted."""
    relay = secure_relay()
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    tail = glue + b"RCPT TO:<victim@external.example>"
    line = b"NOOP " + b"A" * (length - 5 - len(tail)) + tail
    assert len(line) == length
    reply = client.command(line)
    assert 500 <= reply.code < 600, reply
    assert client.in_step(), f"a second reply, the tail of the line ran as a command: {client.replies[-1]}"
    assert client.command("DATA").first == "503 5.5.2 Need rcpt command"
    assert client.command("QUIT").code == 221
    assert delivered(relay, smarthost) == []


@pytest.mark.parametrize("length", [1100, 5000])
def test_a_bare_lf_inside_an_over_long_line_does_not_start_a_command(secure_relay, smarthost, raw_client, length) -> None:
    """Only CRLF ends a command line (RFC 5321 §2.3.8, and the relay's own rule for DATA): the
    bytes after a bare LF belong to the refused over-long line, they are not a new command."""
    relay = secure_relay()
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    tail = b"\nRCPT TO:<victim@external.example>"
    reply = client.command(b"NOOP " + b"A" * (length - 5 - len(tail)) + tail)
    assert 500 <= reply.code < 600, reply
    assert client.in_step(), f"the tail after the bare LF ran as a command: {client.replies[-1]}"
    assert client.command("DATA").first == "503 5.5.2 Need rcpt command"
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


def test_over_long_addresses_are_refused(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay(relay={"max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    assert client.command(b"MAIL FROM:<" + b"a" * 65 + b"@contoso.com>").code >= 500
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    for recipient in (b"a" * 65 + b"@fabrikam.com", b"a@" + b"b." * 130 + b"com", b"a@" + b"b" * 64 + b".com"):
        assert client.command(b"RCPT TO:<" + recipient + b">").code >= 500, recipient
    assert client.command("DATA").code == 503
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


# -- NUL, control and 8-bit bytes ------------------------------------------------------------------

BAD_BYTES = {
    "nul-in-verb": b"MA\x00IL FROM:<printer@contoso.com>",
    "nul-after-verb": b"NOOP\x00",
    "nul-in-sender": b"MAIL FROM:<printer\x00@contoso.com>",
    "nul-in-ehlo-name": b"EHLO printer\x00.contoso.com",
    "control-in-ehlo-name": b"EHLO printer\x1b[2J.contoso.com",
    "bare-cr-in-ehlo-name": b"EHLO printer\rRCPT TO:<victim@external.example>",
    "8bit-verb": b"M\xc1IL FROM:<printer@contoso.com>",
    "8bit-sender": b"MAIL FROM:<caf\xe9@contoso.com>",
    "utf8-sender": b"MAIL FROM:<caf\xc3\xa9@contoso.com>",
    "8bit-ehlo-name": b"EHLO caf\xe9.example",
    "binary-garbage": b"\xff\xfe\xfd\x00\x01\x02",
    "tab-in-verb": b"MAIL\tFROM:<printer@contoso.com>",
}


@pytest.mark.parametrize("name", list(BAD_BYTES))
def test_nul_control_and_8bit_bytes_in_commands_get_an_error(secure_relay, smarthost, raw_client, name) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    if not BAD_BYTES[name].startswith(b"EHLO"):
        client.ehlo()
    reply = client.command(BAD_BYTES[name])
    assert 500 <= reply.code < 600, reply
    assert client.in_step(), client.replies[-1]
    # And the session is still sane afterwards.
    assert client.ehlo().code == 250
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("QUIT").code == 221


def test_nul_and_8bit_recipients_never_relay(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay(frontend={"max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    for recipient in (
        b"<victim@external.example\x00@contoso.com>",
        b"<victim\x00@external.example>",
        b"<victim@contoso.com\x00external.example>",
        b"<victim@external.example\xff>",
        b"<victim@contoso.com\xc0\xae>",
        b"<\x00>",
    ):
        assert 500 <= client.command(b"RCPT TO:" + recipient).code < 600, recipient
    assert client.command("DATA").code == 503
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


def test_replies_never_echo_control_characters(secure_relay, raw_client) -> None:
    """A reply line is printable ASCII: the client's NUL, ESC or bare CR must not come back (a bare
    CR in a reply is a line end to some clients, and lets a client forge a reply line)."""
    relay = secure_relay(frontend={"max_protocol_errors": "Unlimited"})
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    for line in (b"NOOP\x00", b"X\x1b[31mY", b"FOO\r250 2.1.5 Recipient OK", b"\x07\x08\x7f"):
        client.command(line)
    client.command("QUIT")
    unprintable = [line for line in client.transcript if re.search(r"[^\x20-\x7e]", line)]
    assert unprintable == [], f"replies carrying control characters: {unprintable!r}"


# -- thousands of recipients ---------------------------------------------------------------------------


def test_two_thousand_recipients_get_452_past_the_limit_and_the_session_survives(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    client.send(b"".join(b"RCPT TO:<user%d@fabrikam.com>\r\n" % index for index in range(2000)))
    replies = [client.reply().first for _ in range(2000)]
    assert replies[:200] == ["250 2.1.5 Recipient OK"] * 200
    assert replies[200:] == ["452 4.5.3 Too many recipients"] * 1800
    assert client.command("DATA").code == 354
    client.send(MESSAGE + b".\r\n")
    assert client.reply().code == 250
    assert client.command("QUIT").code == 221
    (message,) = delivered(relay, smarthost)
    assert message.rcpt_tos == tuple(f"user{index}@fabrikam.com" for index in range(200))


def test_two_thousand_relay_attempts_from_a_host_that_may_not_relay(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    client.send(b"".join(b"RCPT TO:<user%d@external.example>\r\n" % index for index in range(2000)))
    replies = {client.reply().first for _ in range(2000)}
    assert replies == {"550 5.7.1 Unable to relay"}
    assert client.command("NOOP").code == 250
    assert client.command("DATA").code == 503
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


# -- size ----------------------------------------------------------------------------------------------

SMALL = {"max_message_size": "64KB"}


@pytest.mark.parametrize("kind", ["anonymous-relay", "default-frontend"])
def test_a_message_over_the_size_limit_gets_552_after_the_data(secure_relay, smarthost, raw_client, kind) -> None:
    relay = secure_relay(relay=SMALL, frontend=SMALL)
    source, recipient = (ALLOWED, "kate@fabrikam.com") if kind == "anonymous-relay" else (DENIED, "kate@contoso.com")
    client = raw_client(relay.port, source)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command(f"RCPT TO:<{recipient}>").code == 250
    assert client.command("DATA").code == 354
    body = (b"x" * 76 + b"\r\n") * 1500  # about 117 KB
    client.send(b"Subject: big\r\n\r\n" + body)
    assert client.nothing_more(0.2), "the relay answered before the end of data"
    client.send(b".\r\n")
    assert client.reply().first == "552 5.3.4 Message size exceeds fixed maximum message size"
    # The rest of the big message was consumed, not read as commands; the session goes on.
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command(f"RCPT TO:<{recipient}>").code == 250
    assert client.command("DATA").code == 354
    client.send(b"Subject: small\r\n\r\nfits\r\n.\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    received = delivered(relay, smarthost)
    assert [message.content for message in received] == [b"Subject: small\r\n\r\nfits\r\n"]


def test_a_declared_size_over_the_limit_is_refused_at_mail(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay(relay=SMALL)
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    assert client.command("MAIL FROM:<printer@contoso.com> SIZE=70000").first == "552 5.3.4 Message size exceeds fixed maximum message size"
    for size in ("SIZE=-1", "SIZE=1e9", "SIZE=" + "9" * 40, "SIZE=\u0663".encode().decode("latin-1")):
        assert client.command(f"MAIL FROM:<printer@contoso.com> {size}".encode("latin-1")).code >= 500, size
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


# -- AUTH where there is none ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["default-frontend", "anonymous-relay", "externally-secured"])
def test_auth_on_a_connector_without_basic_auth_is_unrecognized(secure_relay, smarthost, raw_client, kind) -> None:
    relay = secure_relay(frontend={"max_logon_failures": 0}, relay={"max_logon_failures": 0})
    port, source = (relay.port2, ALLOWED) if kind == "externally-secured" else (relay.port, ALLOWED if kind == "anonymous-relay" else DENIED)
    client = raw_client(port, source)
    ehlo = client.ehlo()
    assert not any(line.startswith("AUTH") for line in ehlo.lines)
    for command in ("AUTH LOGIN", "AUTH PLAIN AGFkbWluAHNlY3JldA==", "AUTH CRAM-MD5", "AUTH GSSAPI", "AUTH NTLM TlRMTVNTUAABAAAA"):
        assert client.command(command).first == "504 5.7.4 Unrecognized authentication type", command
        # No challenge was started: the next line is a command again, not an AUTH response.
        assert client.command("NOOP").first == "250 2.0.0 OK"
    client.command("QUIT")


def test_a_failed_auth_grants_nothing(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    client.command("AUTH PLAIN AGFkbWluAHNlY3JldA==")
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<victim@external.example>").first == "550 5.7.1 Unable to relay"
    client.command("QUIT")
    assert delivered(relay, smarthost) == []


# -- STARTTLS with plaintext behind it ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[str, ssl.SSLContext]:
    """A certificate for 127.0.0.1 from a throw-away CA: the [tls] table and a client context."""
    ca = trustme.CA()
    certificate = ca.issue_cert("relay.contoso.com", "127.0.0.1")
    directory: Path = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in certificate.cert_chain_pems))
    (directory / "key.pem").write_bytes(certificate.private_key_pem.bytes())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    table = f'\n[tls]\ncertificate = "{directory / "cert.pem"}"\nkey = "{directory / "key.pem"}"\n'
    return table, context


@pytest.mark.parametrize("kind", ["default-frontend", "anonymous-relay"])
def test_plaintext_pipelined_behind_starttls_is_discarded(secure_relay, smarthost, raw_client, tls_files, kind) -> None:
    """A man in the middle appends commands to the client's STARTTLS: none of them may run, inside
    the TLS session or before it. From the host that may relay, the injected transaction would
    otherwise relay a message."""
    table, context = tls_files
    relay = secure_relay(extra=table)
    source = ALLOWED if kind == "anonymous-relay" else DENIED
    client = raw_client(relay.port, source)
    assert any(line == "STARTTLS" for line in client.ehlo().lines)
    client.send(
        b"STARTTLS\r\nRSET\r\nMAIL FROM:<printer@contoso.com>\r\nRCPT TO:<kate@contoso.com>\r\n"
        b"RCPT TO:<victim@external.example>\r\nDATA\r\nSubject: injected\r\n\r\ninjected\r\n.\r\n"
    )
    assert client.reply().first.startswith("220 ")
    assert client.pending == b"", "more than the 220 came back in clear text"
    client.sock = context.wrap_socket(client.sock, server_hostname="127.0.0.1")
    ehlo = client.ehlo("client.contoso.com")
    assert ehlo.lines[0] == f"relay.contoso.com Hello [{source}]"
    assert client.command("RCPT TO:<kate@contoso.com>").first == "503 5.5.2 Need mail command"
    assert client.command("QUIT").code == 221
    assert delivered(relay, smarthost) == []


def test_plaintext_instead_of_a_tls_handshake_is_never_run(secure_relay, smarthost, raw_client, tls_files) -> None:
    table, _ = tls_files
    relay = secure_relay(extra=table)
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    assert client.command("STARTTLS").code == 220
    client.send(b"MAIL FROM:<printer@contoso.com>\r\nRCPT TO:<victim@external.example>\r\nDATA\r\n")
    try:
        replies = client.replies_until_closed(5)
    except ServerClosed:
        replies = []
    assert not any(reply.code in (250, 354) for reply in replies), replies
    assert delivered(relay, smarthost) == []


def test_starttls_on_a_connector_without_tls_is_refused(secure_relay, raw_client, tls_files) -> None:
    """The externally secured connector offers no TLS (ExternalAuthoritative only): STARTTLS is
    refused and what follows it is plain SMTP, judged as such."""
    table, _ = tls_files
    relay = secure_relay(extra=table)
    client = raw_client(relay.port2, ALLOWED)
    assert "STARTTLS" not in client.ehlo().lines
    reply = client.command("STARTTLS")
    assert 400 <= reply.code < 600, reply
    assert client.command("NOOP").code == 250
    client.command("QUIT")


# -- idle and slow clients -------------------------------------------------------------------------

FAST_TIMEOUTS = {"connection_inactivity_timeout": "00:00:01", "connection_timeout": "00:00:10"}
CUT_OFF_WITHIN = 3.0  # seconds: the 1 s inactivity timeout, with room for a loaded machine


def timed_relay(secure_relay, **more):
    settings = {**FAST_TIMEOUTS, **more}
    return secure_relay(frontend=settings, relay=settings, secured=settings)


@pytest.mark.parametrize("when", ["before-any-command", "after-ehlo"])
def test_an_idle_client_is_cut_off_after_the_inactivity_timeout(secure_relay, raw_client, when) -> None:
    relay = timed_relay(secure_relay)
    client = raw_client(relay.port, DENIED)
    if when == "after-ehlo":
        client.ehlo()
    started = time.monotonic()
    replies = client.replies_until_closed(CUT_OFF_WITHIN)
    assert [reply.first for reply in replies] == [IDLE_TIMEOUT]
    assert 0.8 <= time.monotonic() - started < CUT_OFF_WITHIN


@pytest.mark.parametrize("when", ["before-any-command", "after-ehlo"])
def test_a_client_dripping_bytes_slower_than_the_timeout_is_cut_off(secure_relay, raw_client, when) -> None:
    relay = timed_relay(secure_relay)
    client = raw_client(relay.port, DENIED)
    if when == "after-ehlo":
        client.ehlo()
    started = time.monotonic()
    command = b"MAIL FROM:<printer@contoso.com>\r\n"
    sent = client.drip(command[:2], 1.2)
    # The gap between two bytes exceeds the inactivity timeout: the relay has hung up by now.
    assert client.is_closed(max(0.1, CUT_OFF_WITHIN - (time.monotonic() - started))), (
        f"still connected {time.monotonic() - started:.1f} s after the last command ({sent} bytes dripped)"
    )
    assert client.transcript[-1:] == [IDLE_TIMEOUT]


def test_a_never_ending_command_line_does_not_count_as_activity(secure_relay, raw_client) -> None:
    """Bytes every 0.2 s, but never a CRLF: no command completes, so the client is idle."""
    relay = timed_relay(secure_relay)
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    started = time.monotonic()
    client.drip(b"NOOP " + b"A" * 40, 0.2)  # stops as soon as the relay hangs up
    assert client.is_closed(1.0)
    assert time.monotonic() - started < CUT_OFF_WITHIN + 0.5
    assert client.transcript[-1:] == [IDLE_TIMEOUT]


def test_a_client_dripping_message_data_is_cut_off(secure_relay, smarthost, raw_client) -> None:
    relay = timed_relay(secure_relay)
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    client.command("MAIL FROM:<printer@contoso.com>")
    client.command("RCPT TO:<kate@fabrikam.com>")
    assert client.command("DATA").code == 354
    started = time.monotonic()
    # One byte, then a pause longer than the inactivity timeout: the relay hangs up meanwhile.
    client.drip(b"Subject: slow\r\n", 1.2)
    assert client.is_closed(1.0)
    assert time.monotonic() - started < CUT_OFF_WITHIN + 0.5
    assert client.transcript[-1:] == [IDLE_TIMEOUT]
    assert delivered(relay, smarthost) == []


def test_a_client_kept_alive_with_noops_is_cut_off_at_the_connection_timeout(secure_relay, raw_client) -> None:
    """NOOP every 0.4 s keeps the inactivity timer at bay; connection_timeout bounds the session."""
    settings = {"connection_inactivity_timeout": "00:00:01", "connection_timeout": "00:00:02"}
    relay = secure_relay(frontend=settings)
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    started = time.monotonic()
    replies = []
    try:
        while time.monotonic() - started < 4:
            client.send(b"NOOP\r\n")
            replies.append(client.reply().first)
            time.sleep(0.4)
    except (ServerClosed, OSError):
        pass
    assert replies[-1] == LIFETIME_OVER, replies
    assert 1.5 < time.monotonic() - started < 3.5


# -- floods --------------------------------------------------------------------------------------------


def test_a_flood_of_noops_is_answered_and_the_session_still_works(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay()
    client = raw_client(relay.port, ALLOWED)
    client.ehlo()
    client.send(b"NOOP\r\n" * 500)
    assert [client.reply().first for _ in range(500)] == ["250 2.0.0 OK"] * 500
    assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    assert client.command("RCPT TO:<kate@fabrikam.com>").code == 250
    assert client.command("DATA").code == 354
    client.send(MESSAGE + b".\r\n")
    assert client.reply().code == 250
    client.command("QUIT")
    assert len(delivered(relay, smarthost)) == 1


JUNK = {
    "unknown-verbs": b"XYZZY plugh\r\n",
    "empty-lines": b"\r\n",
    "binary": b"\xde\xad\xbe\xef\r\n",
    "over-long": b"NOOP " + b"A" * 2000 + b"\r\n",
    "bad-sequence": b"RCPT TO:<kate@contoso.com>\r\n",
    "bad-mail-syntax": b"MAIL FROM:<<printer@@contoso..com\r\n",
    "bad-rcpt-syntax": b"RCPT TO:<kate@@contoso.com>\r\n",
    "bad-parameters": b"MAIL FROM:<printer@contoso.com> FOO=BAR\r\n",
}


@pytest.mark.parametrize("name", list(JUNK))
def test_a_flood_of_junk_crosses_max_protocol_errors_and_is_closed_with_421(secure_relay, smarthost, raw_client, name) -> None:
    """max_protocol_errors is 5 (Exchange's default): the sixth protocol error draws ``421 4.7.0``
    and the connection is closed. Exactly six junk lines are pipelined, so the relay has read all
    of them when it hangs up (more would be unread, and the kernel would answer them with a reset
    that can destroy the replies before this client reads them)."""
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    if name == "bad-rcpt-syntax":
        assert client.command("MAIL FROM:<printer@contoso.com>").code == 250
    client.send(JUNK[name] * 6)
    replies = [reply.first for reply in client.replies_until_closed(1.0)]
    assert replies and replies[-1] == TOO_MANY_ERRORS, replies
    errors = replies[:-1]
    assert len(errors) == 6 and all(reply[0] == "5" for reply in errors), replies
    assert delivered(relay, smarthost) == []


def test_the_rest_of_a_junk_flood_is_never_answered(secure_relay, smarthost, raw_client) -> None:
    """A long flood of mixed junk: whatever the client still gets to read ends with the 421, and
    nothing after it (no reply to the flood's MAIL/RCPT/DATA, which follow the junk)."""
    relay = secure_relay()
    client = raw_client(relay.port, DENIED)
    client.ehlo()
    flood = b"".join(JUNK.values()) * 10 + b"MAIL FROM:<printer@contoso.com>\r\nRCPT TO:<kate@contoso.com>\r\nDATA\r\n"
    try:
        client.send(flood)
    except OSError:
        pass  # the relay hung up while the flood was still being written
    replies = [reply.first for reply in client.replies_until_closed(2.0)]
    assert TOO_MANY_ERRORS not in replies[:-1], replies
    assert not any(reply.startswith(("250", "354")) for reply in replies), replies
    assert delivered(relay, smarthost) == []


# -- a well-behaved client while abusive ones run --------------------------------------------------


def _abuse(port: int, stop: threading.Event, failures: list[str]) -> None:
    """Abusive clients in a loop until ``stop``: junk floods, NOOP floods, recipient floods, a
    slow drip and an idle connection, each from the host that may not relay."""
    holders = []
    try:
        for source in ("127.0.0.21", "127.0.0.22"):
            idle = RawSMTP(port, source)
            idle.read_banner()
            holders.append(idle)
        while not stop.is_set():
            junk = RawSMTP(port, "127.0.0.23")
            junk.read_banner()
            try:
                junk.send(b"\xff\xfe garbage\r\n" * 200)
                junk.replies_until_closed(3)
            except (OSError, AssertionError):
                pass
            SEEN.extend(junk.transcript)
            junk.close()
            flood = RawSMTP(port, "127.0.0.24")
            flood.read_banner()
            flood.ehlo()
            flood.send(b"NOOP\r\n" * 300 + b"MAIL FROM:<x@contoso.com>\r\n" + b"RCPT TO:<v@external.example>\r\n" * 300)
            for _ in range(601):
                flood.reply()
            SEEN.extend(flood.transcript)
            flood.close()
            holders[0].send(b"N")  # a byte now and then, never a whole command
    except Exception as error:  # reported by the test, never swallowed
        failures.append(repr(error))
    finally:
        for holder in holders:
            SEEN.extend(holder.transcript)
            holder.close()


def test_a_well_behaved_client_is_served_while_abusive_clients_run(secure_relay, smarthost, raw_client) -> None:
    relay = secure_relay()
    stop = threading.Event()
    failures: list[str] = []
    abuser = threading.Thread(target=_abuse, args=(relay.port, stop, failures), daemon=True)
    abuser.start()
    try:
        time.sleep(0.2)  # let the abuse start
        for index in range(3):
            started = time.monotonic()
            client = connect_from(ALLOWED, relay.port)
            try:
                client.ehlo("printer.contoso.com")
                assert client.sendmail("printer@contoso.com", [f"kate{index}@fabrikam.com"], MESSAGE) == {}
                client.quit()
            finally:
                client.close()
            assert time.monotonic() - started < 5.0, "the well-behaved client waited too long"
    finally:
        stop.set()
        abuser.join(10)
    assert not abuser.is_alive()
    assert failures == []
    received = delivered(relay, smarthost)
    assert sorted(message.rcpt_tos for message in received) == [(f"kate{index}@fabrikam.com",) for index in range(3)]


# -- the scans (keep these last: they read every reply of the module) -------------------------------

PROVOCATIONS = [
    b"EHLO scan.example",
    b"MAIL FROM:<printer@contoso.com> SIZE=99999999999999999999999999999",
    b"MAIL FROM:<printer@contoso.com> BODY=",
    b"MAIL FROM:<printer@contoso.com> =",
    b"MAIL FROM:",
    b"MAIL FROM:<",
    b"MAIL FROM:<printer@contoso.com>",
    b"RCPT TO:<\"\\",
    b"RCPT TO:<@>",
    b"RCPT TO:<@:a@b>",
    b"RCPT TO:<a@[IPv6:::::]>",
    b"RCPT TO:<a@[999.999.999.999]>",
    b"RCPT TO:<kate@contoso.com> NOTIFY=NEVER",
    b"RCPT",
    b"VRFY",
    b"EXPN root",
    b"HELP me",
    b"AUTH PLAIN ====",
    b"AUTH",
    b"STARTTLS extra",
    b"DATA extra",
    b"BDAT 100 LAST",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
]


def _provoke(port: int, source: str) -> list[str]:
    client = RawSMTP(port, source)
    try:
        client.read_banner()
        for line in PROVOCATIONS:
            try:
                client.command(line)
            except (ServerClosed, OSError):
                break
    finally:
        client.close()
    return client.transcript


@pytest.fixture
def every_reply(secure_relay) -> list[str]:
    """Every line of the module so far, and the replies to a list of odd commands on each
    connector kind (so the scan has something to read even when run alone)."""
    relay = secure_relay(frontend={"max_protocol_errors": "Unlimited"}, relay={"max_protocol_errors": "Unlimited"}, secured={"max_protocol_errors": "Unlimited"})
    lines = list(SEEN)
    for port, source in ((relay.port, DENIED), (relay.port, ALLOWED), (relay.port2, ALLOWED)):
        lines.extend(_provoke(port, source))
    return lines


def test_zz_no_reply_names_a_python_exception_or_shows_a_traceback(every_reply) -> None:
    assert len(every_reply) > 50
    leaked = python_internals(every_reply)
    assert leaked == [], f"replies leaking Python internals: {sorted(set(leaked))!r}"


def test_zz_no_reply_uses_the_word_error(every_reply) -> None:
    """The relay speaks Exchange's replies (``500 5.3.3 Unrecognized command``, ``500 5.5.2
    Command too long``, ...); ``Error`` only appears in aiosmtpd's own texts, whose fallback for an
    unhandled exception is ``500 Error: (ExceptionClass) message``."""
    assert len(every_reply) > 50
    worded = error_word(every_reply)
    assert worded == [], f"{len(worded)} replies with 'Error', e.g. {sorted(set(worded))[:8]!r}"
