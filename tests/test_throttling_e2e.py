"""Throttling over real sockets: a live relay on 127.0.0.1, clients posing as 127.x hosts.

Every limit of a receive connector (reference §7.3, §8) is crossed once, for the exact reply
Exchange gives, and stayed under once, for a session that carries on and delivers. Rates are small
(a few messages per minute) so that crossing one takes a few MAIL FROMs; timeouts and tarpits use
one-second intervals. ``tarpit_interval`` and ``auth_tarpit_interval`` are zero unless a test is
about them, so no reply is held back by accident.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from salmon_relayauth.engine.passwords import hash_password

# -- exact replies (reference §8, §9.2) ------------------------------------------------------------

RATE_EXCEEDED = "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
TOO_MANY_SERVER_CONNECTIONS = (
    "421 4.3.2 The maximum number of concurrent server connections has exceeded a limit, closing transmission channel"
)
TOO_MANY_SOURCE_CONNECTIONS = (
    "421 4.3.2 The maximum number of concurrent connections has exceeded a limit, closing transmission channel"
)
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors on this connection, closing transmission channel"
INACTIVITY_TIMEOUT = "451 4.7.0 Timeout waiting for client input"
LIFETIME_TIMEOUT = "421 4.4.1 Connection timed out"
AUTH_FAILED = "535 5.7.3 Authentication unsuccessful"
AUTH_OK = "235 2.7.0 Authentication successful"
SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"

USER = "alice@contoso.com"
PASSWORD = "S3cret-Pa55w0rd!"
WRONG_PASSWORD = "Wr0ng-Pa55w0rd!"

# -- configuration -----------------------------------------------------------------------------------

TEMPLATE = """
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"

[[connectors]]
name = "Throttled Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/16"]
@CONNECTOR@

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]
@PERMISSIONS@

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
retry_interval = "00:00:01"
fsync = false
@AUTHENTICATION@
"""

# The authenticated user may send as any address, so that a user and an envelope sender can differ.
USER_PERMISSION = f"""
[[connectors.permissions]]
user = "{USER}"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Sender", "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender"]
"""


def relay_config(users_file: Path | None = None, **fields: Any) -> str:
    """The template with connector ``fields`` (Python values written as TOML); with ``users_file``
    the connector offers AUTH LOGIN/PLAIN without TLS and ExchangeUsers may relay."""
    values: dict[str, Any] = {
        "permission_groups": ["AnonymousUsers"],
        "tarpit_interval": "00:00:00",
        "auth_tarpit_interval": "00:00:00",
    }
    if users_file is not None:
        values["permission_groups"] = ["AnonymousUsers", "ExchangeUsers"]
        values["auth_mechanism"] = ["BasicAuth"]
    values.update(fields)
    connector = "\n".join(f"{key} = {json.dumps(value)}" for key, value in values.items())
    authentication = f'\n[authentication]\nusers_file = "{users_file}"\n' if users_file is not None else ""
    return (
        TEMPLATE.replace("@CONNECTOR@", connector)
        .replace("@PERMISSIONS@", USER_PERMISSION if users_file is not None else "")
        .replace("@AUTHENTICATION@", authentication)
    )


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.txt"
    path.write_text(f"{USER}:{hash_password(PASSWORD)}\n")
    return path


# -- a raw SMTP client, to read the exact bytes ----------------------------------------------------


class Raw:
    """A line-at-a-time SMTP client from a chosen 127.x address; ``banner`` is the first reply
    (the 220, or the refusal sent in its place)."""

    def __init__(self, port: int, source: str = "127.0.0.10", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.banner = self.reply()

    def reply(self) -> str:
        """One reply, its lines joined by newlines; fails the test when the server hung up first."""
        lines: list[str] = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise AssertionError(f"connection closed while reading a reply (got {lines!r})")
            line = raw.decode("ascii", "replace").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode("ascii") + b"\r\n")

    def command(self, line: str) -> str:
        self.send(line)
        return self.reply()

    def timed(self, line: str) -> tuple[str, float]:
        """The reply to ``line`` and the seconds it took to come."""
        start = time.perf_counter()
        answer = self.command(line)
        return answer, time.perf_counter() - start

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (with nothing more to say) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            rest = self.file.read()
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert rest == b"", f"unexpected bytes before the close: {rest!r}"
        return True

    def ehlo(self, name: str = "client.contoso.com") -> str:
        answer = self.command(f"EHLO {name}")
        assert answer.startswith("250"), answer
        return answer

    def auth_plain(self, user: str, password: str) -> str:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode("ascii")
        return self.command(f"AUTH PLAIN {token}")

    def send_message(self, sender: str, recipients: list[str], subject: str = "Test") -> str:
        """A whole transaction; returns the end-of-data reply (fails on any refusal before it)."""
        assert self.command(f"MAIL FROM:<{sender}>") == SENDER_OK
        for recipient in recipients:
            assert self.command(f"RCPT TO:<{recipient}>") == RECIPIENT_OK
        assert self.command("DATA").startswith("354")
        self.send(f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n\r\nbody\r\n.")
        return self.reply()

    def quit(self) -> None:
        assert self.command("QUIT").startswith("221")
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def raw() -> Any:
    """A factory for :class:`Raw` clients that are all closed when the test ends."""
    clients: list[Raw] = []

    def connect(port: int, source: str = "127.0.0.10") -> Raw:
        client = Raw(port, source)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def queued(answer: str) -> bool:
    return answer.startswith("250 2.6.0 <") and answer.endswith("Queued mail for delivery")


def mail_then_rset(client: Raw, sender: str) -> str:
    """MAIL FROM (which is what a rate charges), then RSET when it was accepted; the MAIL reply."""
    answer = client.command(f"MAIL FROM:<{sender}>")
    if answer == SENDER_OK:
        assert client.command("RSET") == "250 2.0.0 Resetting"
    return answer


def assert_rate_refused(client: Raw, sender: str) -> None:
    """MAIL FROM gets the rate reply and the server closes the connection."""
    assert client.command(f"MAIL FROM:<{sender}>") == RATE_EXCEEDED
    assert client.closed_by_server(), "the connection stayed open after the rate refusal"


# == message rate ===================================================================================


def test_rate_under_the_limit_every_message_is_delivered(live_relay, smarthost, smtp_client) -> None:
    relay = live_relay(relay_config(message_rate_limit=3))
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("printer.contoso.com")
    for number in range(3):
        refused = client.sendmail("chris@contoso.com", ["kate@fabrikam.com"], f"Subject: {number}\r\n\r\nbody\r\n")
        assert refused == {}
    assert client.noop()[0] == 250  # still connected
    client.quit()
    assert len(smarthost.wait_for(3)) == 3


def test_rate_over_the_limit_refused_at_mail_from_and_closed(live_relay, smarthost, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for number in range(3):
        assert queued(client.send_message("chris@contoso.com", ["kate@fabrikam.com"], f"message {number}"))
    assert_rate_refused(client, "chris@contoso.com")
    assert len(smarthost.wait_for(3)) == 3


def test_rset_does_not_reset_the_rate(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for _ in range(3):
        assert mail_then_rset(client, "chris@contoso.com") == SENDER_OK
    assert client.command("RSET") == "250 2.0.0 Resetting"
    client.ehlo()  # a new EHLO resets the session too, and not the rate
    assert_rate_refused(client, "chris@contoso.com")


def test_reconnecting_does_not_reset_the_rate(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3))
    for _ in range(3):
        client = raw(relay.port, "127.0.0.10")
        client.ehlo()
        assert mail_then_rset(client, "chris@contoso.com") == SENDER_OK
        client.quit()
    for _ in range(2):  # being refused does not reset it either
        client = raw(relay.port, "127.0.0.10")
        assert client.banner.startswith("220 ")
        client.ehlo()
        assert_rate_refused(client, "chris@contoso.com")


def test_rate_source_ip_address_counts_every_sender_of_one_host_together(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3, message_rate_source="IPAddress"))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for sender in ("a@contoso.com", "b@contoso.com", "c@contoso.com"):
        assert mail_then_rset(client, sender) == SENDER_OK
    assert_rate_refused(client, "d@contoso.com")
    other = raw(relay.port, "127.0.0.11")  # another host has its own budget
    other.ehlo()
    assert mail_then_rset(other, "a@contoso.com") == SENDER_OK


def test_rate_source_user_gives_each_anonymous_sender_its_own_budget(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3, message_rate_source="User"))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for _ in range(3):
        assert mail_then_rset(client, "a@contoso.com") == SENDER_OK
    for _ in range(3):  # same host, another sender: a budget of its own
        assert mail_then_rset(client, "b@contoso.com") == SENDER_OK
    other = raw(relay.port, "127.0.0.11")  # the same sender from another host: the same budget
    other.ehlo()
    assert_rate_refused(other, "a@contoso.com")
    assert_rate_refused(client, "a@contoso.com")


def test_rate_source_user_counts_an_authenticated_user_across_senders(live_relay, raw, users_file) -> None:
    relay = live_relay(relay_config(users_file, message_rate_limit=3, message_rate_source="User"))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    assert client.auth_plain(USER, PASSWORD) == AUTH_OK
    for sender in ("alice@contoso.com", "sales@contoso.com", "news@contoso.com"):
        assert mail_then_rset(client, sender) == SENDER_OK
    assert_rate_refused(client, "support@contoso.com")


def test_rate_source_sender_counts_envelope_senders_even_when_authenticated(live_relay, raw, users_file) -> None:
    relay = live_relay(relay_config(users_file, message_rate_limit=3, message_rate_source="Sender"))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    assert client.auth_plain(USER, PASSWORD) == AUTH_OK
    for sender in ("alice@contoso.com", "sales@contoso.com", "news@contoso.com", "support@contoso.com"):
        assert mail_then_rset(client, sender) == SENDER_OK
    for _ in range(2):
        assert mail_then_rset(client, "sales@contoso.com") == SENDER_OK
    assert_rate_refused(client, "sales@contoso.com")  # its fourth message
    anonymous = raw(relay.port, "127.0.0.11")  # another host, the same envelope sender: same budget
    anonymous.ehlo()
    for _ in range(2):
        assert mail_then_rset(anonymous, "news@contoso.com") == SENDER_OK
    assert_rate_refused(anonymous, "news@contoso.com")


def test_rate_source_all_refuses_when_either_the_host_or_the_sender_is_over(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3, message_rate_source="All"))
    # the host's budget runs out although no single sender used three messages
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for sender in ("a@contoso.com", "a@contoso.com", "b@contoso.com"):
        assert mail_then_rset(client, sender) == SENDER_OK
    assert_rate_refused(client, "b@contoso.com")
    # the sender's budget runs out although no single host sent three messages
    for source in ("127.0.0.20", "127.0.0.21", "127.0.0.22"):
        other = raw(relay.port, source)
        other.ehlo()
        assert mail_then_rset(other, "c@contoso.com") == SENDER_OK
        other.quit()
    last = raw(relay.port, "127.0.0.23")
    last.ehlo()
    assert_rate_refused(last, "c@contoso.com")
    fresh = raw(relay.port, "127.0.0.24")  # neither budget of this host and sender is touched
    fresh.ehlo()
    assert mail_then_rset(fresh, "d@contoso.com") == SENDER_OK


def test_rate_source_none_never_counts(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3, message_rate_source="None"))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for _ in range(6):
        assert mail_then_rset(client, "chris@contoso.com") == SENDER_OK
    assert queued(client.send_message("chris@contoso.com", ["kate@fabrikam.com"]))


def test_ipv4_prefix_24_makes_neighbours_share_one_budget(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3, rate_limit_ipv4_prefix=24))
    first = raw(relay.port, "127.0.0.10")
    first.ehlo()
    for _ in range(2):
        assert mail_then_rset(first, "chris@contoso.com") == SENDER_OK
    second = raw(relay.port, "127.0.0.11")
    second.ehlo()
    assert mail_then_rset(second, "chris@contoso.com") == SENDER_OK
    assert_rate_refused(second, "chris@contoso.com")
    assert_rate_refused(first, "chris@contoso.com")
    outside = raw(relay.port, "127.0.1.10")  # another /24
    outside.ehlo()
    assert mail_then_rset(outside, "chris@contoso.com") == SENDER_OK


def test_ipv4_prefix_32_keeps_neighbours_apart(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3, rate_limit_ipv4_prefix=32))
    first = raw(relay.port, "127.0.0.10")
    first.ehlo()
    second = raw(relay.port, "127.0.0.11")
    second.ehlo()
    for _ in range(3):
        assert mail_then_rset(first, "chris@contoso.com") == SENDER_OK
        assert mail_then_rset(second, "chris@contoso.com") == SENDER_OK
    assert_rate_refused(first, "chris@contoso.com")
    assert_rate_refused(second, "chris@contoso.com")


def test_exempt_address_is_never_rate_limited(live_relay, raw) -> None:
    relay = live_relay(relay_config(message_rate_limit=3, throttling_exemptions=["127.0.0.10"]))
    exempt = raw(relay.port, "127.0.0.10")
    exempt.ehlo()
    for _ in range(6):
        assert mail_then_rset(exempt, "chris@contoso.com") == SENDER_OK
    assert queued(exempt.send_message("chris@contoso.com", ["kate@fabrikam.com"]))
    other = raw(relay.port, "127.0.0.11")
    other.ehlo()
    for _ in range(3):
        assert mail_then_rset(other, "chris@contoso.com") == SENDER_OK
    assert_rate_refused(other, "chris@contoso.com")


def test_exempt_user_is_never_rate_limited_and_does_not_use_the_hosts_budget(live_relay, raw, users_file) -> None:
    relay = live_relay(relay_config(users_file, message_rate_limit=3, throttling_exempt_users=[USER]))
    alice = raw(relay.port, "127.0.0.10")
    alice.ehlo()
    assert alice.auth_plain(USER, PASSWORD) == AUTH_OK
    for _ in range(5):
        assert mail_then_rset(alice, USER) == SENDER_OK
    assert queued(alice.send_message(USER, ["kate@fabrikam.com"]))
    anonymous = raw(relay.port, "127.0.0.10")  # the same host, not authenticated: limited
    anonymous.ehlo()
    for _ in range(3):
        assert mail_then_rset(anonymous, "chris@contoso.com") == SENDER_OK
    assert_rate_refused(anonymous, "chris@contoso.com")


def test_shadow_rate_lets_every_message_through_and_logs_the_refusal(live_relay, smarthost, raw, caplog) -> None:
    caplog.set_level(logging.INFO, logger="salmon_relayauth.listener")
    relay = live_relay(relay_config(message_rate_limit=3, throttling_shadow=True))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for number in range(5):
        assert queued(client.send_message("chris@contoso.com", ["kate@fabrikam.com"], f"message {number}"))
    client.quit()
    assert len(smarthost.wait_for(5)) == 5
    shadowed = [
        record.getMessage()
        for record in caplog.records
        if record.name == "salmon_relayauth.listener" and "would have refused" in record.getMessage()
    ]
    assert len(shadowed) == 2, shadowed  # the fourth and the fifth message
    assert all(RATE_EXCEEDED in message and "127.0.0.10" in message for message in shadowed)


# == concurrent connections =========================================================================


def test_total_connections_under_the_limit_are_served(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_inbound_connection=2, max_inbound_connection_percentage_per_source=100))
    first = raw(relay.port, "127.0.0.10")
    second = raw(relay.port, "127.0.0.11")
    for client in (first, second):
        assert client.banner.startswith("220 relay.contoso.com ")
        client.ehlo()
        assert queued(client.send_message("chris@contoso.com", ["kate@fabrikam.com"]))


def test_total_connections_over_the_limit_refused_instead_of_the_banner(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_inbound_connection=2, max_inbound_connection_percentage_per_source=100))
    first = raw(relay.port, "127.0.0.10")
    second = raw(relay.port, "127.0.0.11")
    assert first.banner.startswith("220 ") and second.banner.startswith("220 ")
    third = raw(relay.port, "127.0.0.12")
    assert third.banner == TOO_MANY_SERVER_CONNECTIONS
    assert third.closed_by_server()
    first.ehlo()  # the open sessions are unaffected
    assert queued(first.send_message("chris@contoso.com", ["kate@fabrikam.com"]))


def test_connections_per_source_over_the_limit_refused(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_inbound_connection_per_source=2))
    held = [raw(relay.port, "127.0.0.10") for _ in range(2)]
    assert all(client.banner.startswith("220 ") for client in held)
    third = raw(relay.port, "127.0.0.10")
    assert third.banner == TOO_MANY_SOURCE_CONNECTIONS
    assert third.closed_by_server()
    other = raw(relay.port, "127.0.0.11")  # another source is not affected
    assert other.banner.startswith("220 ")
    other.ehlo()
    assert queued(other.send_message("chris@contoso.com", ["kate@fabrikam.com"]))


def test_connections_per_source_under_the_limit_are_served(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_inbound_connection_per_source=2))
    held = [raw(relay.port, "127.0.0.10") for _ in range(2)]
    for client in held:
        assert client.banner.startswith("220 ")
        client.ehlo()
        assert queued(client.send_message("chris@contoso.com", ["kate@fabrikam.com"]))


def test_percentage_per_source_shrinks_with_the_remaining_room(live_relay, raw) -> None:
    # max 4, 50 % per source: the cap is ceil(50 % of the free connections) (reference §8).
    relay = live_relay(relay_config(max_inbound_connection=4, max_inbound_connection_percentage_per_source=50))
    a1 = raw(relay.port, "127.0.0.10")  # 0 open: cap ceil(4/2) = 2
    a2 = raw(relay.port, "127.0.0.10")  # 1 open: cap ceil(3/2) = 2
    assert a1.banner.startswith("220 ") and a2.banner.startswith("220 ")
    a3 = raw(relay.port, "127.0.0.10")  # 2 open: cap ceil(2/2) = 1, and this source has 2
    assert a3.banner == TOO_MANY_SOURCE_CONNECTIONS
    assert a3.closed_by_server()
    b1 = raw(relay.port, "127.0.0.11")  # 2 open: cap 1, this source has none
    assert b1.banner.startswith("220 ")
    b2 = raw(relay.port, "127.0.0.11")  # 3 open: cap ceil(1/2) = 1, this source has 1
    assert b2.banner == TOO_MANY_SOURCE_CONNECTIONS
    c1 = raw(relay.port, "127.0.0.12")  # 3 open: cap 1, this source has none
    assert c1.banner.startswith("220 ")
    d1 = raw(relay.port, "127.0.0.13")  # 4 open: the connector is full
    assert d1.banner == TOO_MANY_SERVER_CONNECTIONS
    b1.ehlo()
    assert queued(b1.send_message("chris@contoso.com", ["kate@fabrikam.com"]))


def test_per_source_cap_frees_up_when_a_connection_closes(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_inbound_connection_per_source=1))
    first = raw(relay.port, "127.0.0.10")
    assert first.banner.startswith("220 ")
    refused = raw(relay.port, "127.0.0.10")
    assert refused.banner == TOO_MANY_SOURCE_CONNECTIONS
    first.quit()
    deadline = time.monotonic() + 3.0
    while True:  # the server notices the close a moment after the client does
        again = raw(relay.port, "127.0.0.10")
        if again.banner.startswith("220 ") or time.monotonic() > deadline:
            break
        again.close()
        time.sleep(0.02)
    assert again.banner.startswith("220 "), again.banner
    again.ehlo()
    assert queued(again.send_message("chris@contoso.com", ["kate@fabrikam.com"]))


def test_exempt_address_is_never_connection_limited(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_inbound_connection_per_source=1, throttling_exemptions=["127.0.0.10"]))
    held = [raw(relay.port, "127.0.0.10") for _ in range(3)]
    assert all(client.banner.startswith("220 ") for client in held)
    other = raw(relay.port, "127.0.0.11")
    assert other.banner.startswith("220 ")
    assert raw(relay.port, "127.0.0.11").banner == TOO_MANY_SOURCE_CONNECTIONS


def test_shadow_connection_limit_lets_the_connection_in_and_logs_it(live_relay, raw, caplog) -> None:
    caplog.set_level(logging.INFO, logger="salmon_relayauth.listener")
    relay = live_relay(relay_config(max_inbound_connection_per_source=1, throttling_shadow=True))
    first = raw(relay.port, "127.0.0.10")
    second = raw(relay.port, "127.0.0.10")
    assert first.banner.startswith("220 ")
    assert second.banner.startswith("220 "), "throttling_shadow refused a connection"
    second.ehlo()
    assert queued(second.send_message("chris@contoso.com", ["kate@fabrikam.com"]))
    messages = [record.getMessage() for record in caplog.records if record.name == "salmon_relayauth.listener"]
    assert any("would have refused" in message and "4.3.2" in message for message in messages), messages


# == recipients per message =========================================================================


def test_recipients_over_the_limit_get_452_and_the_earlier_ones_are_kept(live_relay, smarthost, raw) -> None:
    relay = live_relay(relay_config(max_recipients_per_message=3))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    assert client.command("MAIL FROM:<chris@contoso.com>") == SENDER_OK
    for number in range(3):
        assert client.command(f"RCPT TO:<r{number}@fabrikam.com>") == RECIPIENT_OK
    assert client.command("RCPT TO:<r3@fabrikam.com>") == TOO_MANY_RECIPIENTS
    assert client.command("RCPT TO:<r4@fabrikam.com>") == TOO_MANY_RECIPIENTS
    assert client.command("DATA").startswith("354")
    client.send("Subject: many\r\n\r\nbody\r\n.")
    assert queued(client.reply())
    # the session goes on, and a new message starts a new count
    assert client.command("MAIL FROM:<chris@contoso.com>") == SENDER_OK
    assert client.command("RCPT TO:<r5@fabrikam.com>") == RECIPIENT_OK
    client.quit()
    received = smarthost.wait_for(1)
    assert received[0].rcpt_tos == ("r0@fabrikam.com", "r1@fabrikam.com", "r2@fabrikam.com")


def test_recipients_up_to_the_limit_are_all_delivered(live_relay, smarthost, smtp_client) -> None:
    relay = live_relay(relay_config(max_recipients_per_message=3))
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("printer.contoso.com")
    recipients = ["r0@fabrikam.com", "r1@fabrikam.com", "r2@fabrikam.com"]
    assert client.sendmail("chris@contoso.com", recipients, b"Subject: three\r\n\r\nbody\r\n") == {}
    client.quit()
    assert smarthost.wait_for(1)[0].rcpt_tos == tuple(recipients)


# == protocol errors ================================================================================


def test_protocol_errors_over_the_limit_close_with_421(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_protocol_errors=2))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    assert client.command("RCPT TO:<kate@fabrikam.com>").startswith("503 ")  # 1: no MAIL yet
    assert client.command("MAIL FROM:<chris@contoso.com> SIZE=big").startswith("501 ")  # 2: bad argument
    assert client.command("DATA").startswith("503 ")  # 3: over max_protocol_errors = 2
    assert client.reply() == TOO_MANY_ERRORS
    assert client.closed_by_server()


def test_protocol_errors_up_to_the_limit_leave_the_session_working(live_relay, raw) -> None:
    relay = live_relay(relay_config(max_protocol_errors=2))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    assert client.command("RCPT TO:<kate@fabrikam.com>").startswith("503 ")
    assert client.command("MAIL FROM:<chris@contoso.com> SIZE=big").startswith("501 ")
    assert client.command("NOOP") == "250 2.0.0 OK"
    assert queued(client.send_message("chris@contoso.com", ["kate@fabrikam.com"]))
    client.quit()


def test_unrecognised_commands_count_against_max_protocol_errors(live_relay, raw) -> None:
    """Unknown commands are protocol errors like any other: with the default limit of 5 the
    session survives five of them, and the sixth is answered, then the connection closed with 421."""
    relay = live_relay(relay_config())  # max_protocol_errors defaults to 5
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    for _ in range(5):
        assert client.command("XYZZY").startswith("500 ")
    assert client.command("NOOP") == "250 2.0.0 OK"
    assert client.command("XYZZY").startswith("500 ")
    assert client.reply() == TOO_MANY_ERRORS
    assert client.closed_by_server()


# == logon failures =================================================================================


def test_logon_failures_at_the_limit_close_with_421(live_relay, raw, users_file) -> None:
    relay = live_relay(relay_config(users_file, max_logon_failures=2))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    assert client.auth_plain(USER, WRONG_PASSWORD) == AUTH_FAILED
    assert client.command("NOOP") == "250 2.0.0 OK"
    assert client.auth_plain(USER, WRONG_PASSWORD) == AUTH_FAILED
    assert client.reply() == TOO_MANY_ERRORS
    assert client.closed_by_server()


def test_logon_failures_under_the_limit_then_a_good_logon_relays(live_relay, smarthost, raw, users_file) -> None:
    relay = live_relay(relay_config(users_file, max_logon_failures=2))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    assert client.auth_plain(USER, WRONG_PASSWORD) == AUTH_FAILED
    assert client.auth_plain(USER, PASSWORD) == AUTH_OK
    assert queued(client.send_message(USER, ["kate@fabrikam.com"]))
    client.quit()
    assert smarthost.wait_for(1)[0].mail_from == USER


# == timeouts =======================================================================================

TIMEOUTS = {"connection_inactivity_timeout": "00:00:01", "connection_timeout": "00:00:03"}


def test_inactivity_after_a_command_gets_451_and_close(live_relay, raw) -> None:
    relay = live_relay(relay_config(**TIMEOUTS))
    client = raw(relay.port, "127.0.0.10")
    start = time.perf_counter()  # the idle clock starts once EHLO has arrived, so after this
    client.ehlo()
    assert client.reply() == INACTIVITY_TIMEOUT  # unsolicited, after a second of silence
    elapsed = time.perf_counter() - start
    assert 1.0 <= elapsed < 2.5, elapsed
    assert client.closed_by_server()


def test_inactivity_right_after_the_banner_gets_451_and_close(live_relay, raw) -> None:
    relay = live_relay(relay_config(**TIMEOUTS))
    start = time.perf_counter()
    client = raw(relay.port, "127.0.0.10")
    assert client.banner.startswith("220 ")
    assert client.reply() == INACTIVITY_TIMEOUT  # a client that never says anything
    elapsed = time.perf_counter() - start
    assert 1.0 <= elapsed < 2.5, elapsed
    assert client.closed_by_server()


def test_an_active_session_outlives_the_inactivity_timeout(live_relay, smarthost, raw) -> None:
    relay = live_relay(relay_config(**TIMEOUTS))
    client = raw(relay.port, "127.0.0.10")
    start = time.perf_counter()
    client.ehlo()
    while time.perf_counter() - start < 1.8:  # well past one second of session, never a second idle
        time.sleep(0.4)
        assert client.command("NOOP") == "250 2.0.0 OK"
    assert queued(client.send_message("chris@contoso.com", ["kate@fabrikam.com"]))
    client.quit()
    assert len(smarthost.wait_for(1)) == 1


def test_connection_lifetime_ends_a_busy_session_with_421(live_relay, raw) -> None:
    relay = live_relay(relay_config(**TIMEOUTS))
    start = time.perf_counter()
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    answer = ""
    while time.perf_counter() - start < 6:
        time.sleep(0.3)
        answer = client.command("NOOP")
        if answer != "250 2.0.0 OK":
            break
    elapsed = time.perf_counter() - start
    assert answer == LIFETIME_TIMEOUT
    assert 3.0 <= elapsed < 4.5, elapsed
    assert client.closed_by_server()


# == tarpit =========================================================================================


# A reply held back by the tarpit takes at least the interval (one second); one that is not held
# back comes well under it, with room for a loaded machine (an AUTH also hashes a password).
NOT_DELAYED = 0.75


def test_tarpit_delays_error_replies_to_an_unauthenticated_session(live_relay, raw) -> None:
    relay = live_relay(relay_config(tarpit_interval="00:00:01"))
    client = raw(relay.port, "127.0.0.10")
    answer, elapsed = client.timed("EHLO client.contoso.com")
    assert answer.startswith("250") and elapsed < NOT_DELAYED, elapsed  # a 2xx is not delayed
    answer, elapsed = client.timed("RCPT TO:<kate@fabrikam.com>")
    assert answer.startswith("503 ")
    assert elapsed >= 1.0, elapsed
    answer, elapsed = client.timed("MAIL FROM:<chris@contoso.com>")
    assert answer == SENDER_OK and elapsed < NOT_DELAYED, elapsed
    answer, elapsed = client.timed("MAIL FROM:<chris@contoso.com>")
    assert answer.startswith("503 ")  # sender already specified
    assert elapsed >= 1.0, elapsed


def test_tarpit_never_delays_an_authenticated_session(live_relay, raw, users_file) -> None:
    relay = live_relay(relay_config(users_file, tarpit_interval="00:00:01"))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    answer, elapsed = client.timed("RCPT TO:<kate@fabrikam.com>")
    assert answer.startswith("503 ") and elapsed >= 1.0, elapsed  # before AUTH: held back
    assert client.auth_plain(USER, PASSWORD) == AUTH_OK
    answer, elapsed = client.timed("RCPT TO:<kate@fabrikam.com>")
    assert answer.startswith("503 ")
    assert elapsed < NOT_DELAYED, elapsed


def test_auth_tarpit_delays_a_failed_logon_only(live_relay, raw, users_file) -> None:
    relay = live_relay(relay_config(users_file, auth_tarpit_interval="00:00:01"))
    client = raw(relay.port, "127.0.0.10")
    client.ehlo()
    start = time.perf_counter()
    assert client.auth_plain(USER, WRONG_PASSWORD) == AUTH_FAILED
    assert time.perf_counter() - start >= 1.0
    answer, elapsed = client.timed("RCPT TO:<kate@fabrikam.com>")  # tarpit_interval is zero
    assert answer.startswith("503 ") and elapsed < NOT_DELAYED, elapsed
    start = time.perf_counter()
    assert client.auth_plain(USER, PASSWORD) == AUTH_OK
    assert time.perf_counter() - start < NOT_DELAYED
