"""STARTTLS and AUTH on a live listener: what EHLO offers before and after TLS, what AUTH grants,
what a failed or unoffered AUTH leaves, ``require_tls``, STARTTLS command injection, and logs
that never hold a password.

The relay runs on 127.0.0.1 with a certificate issued by a throw-away ``trustme`` CA; the client
trusts that CA only. Certificate, key and users file live next to the configuration and are named
by relative paths, as an operator would write them.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from salmon_relayauth.engine.passwords import hash_password
from salmon_relayauth.testing import LiveRelay, RecordingSmarthost, start_relay

# An authenticated user may send as its own address only (ExchangeUsers holds no send-as right),
# so the user name is the mailbox address, as a UPN would be.
USER = "alice@contoso.com"
PASSWORD = "S3cret-Pa55w0rd!"
WRONG_PASSWORD = "Wr0ng-Pa55w0rd!"

TLS_AUTH_CONFIG = """
[server]
fqdn = "relay.contoso.com"

[[accepted_domains]]
domain = "contoso.com"

[[connectors]]
name = "Client Submission"
bindings = ["127.0.0.1:{{port}}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = {groups}
auth_mechanism = {mechanisms}
require_tls = {require_tls}
tarpit_interval = "00:00:00"
auth_tarpit_interval = "00:00:00"

[tls]
certificate = "relay-cert.pem"
key = "relay-key.pem"

[authentication]
users_file = "users.txt"

[smarthost]
host = "127.0.0.1"
port = {{smarthost_port}}

[queue]
retry_interval = "00:00:01"
"""

# AnonymousUsers lets an unauthenticated session submit to contoso.com, so a session that failed
# AUTH can be seen to be refused at RCPT (550 5.7.1 Unable to relay) rather than at MAIL;
# ExchangeUsers gives an authenticated user ms-Exch-SMTP-Accept-Any-Recipient.
GROUPS = '["AnonymousUsers", "ExchangeUsers"]'
BASIC_OVER_TLS = '["Tls", "BasicAuth", "BasicAuthRequireTLS"]'


def config(mechanisms: str = BASIC_OVER_TLS, require_tls: bool = False, groups: str = GROUPS) -> str:
    return TLS_AUTH_CONFIG.format(groups=groups, mechanisms=mechanisms, require_tls=str(require_tls).lower())


MESSAGE = b"From: alice@contoso.com\r\nTo: kate@fabrikam.com\r\nSubject: Authenticated relay\r\n\r\nHello over TLS\r\n"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """A client context that trusts the test CA and nothing else, and checks the host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


@pytest.fixture(scope="module")
def relay_files(ca: trustme.CA) -> dict[str, bytes]:
    """The relay's certificate chain, key and users file (made once: key and scrypt are slow)."""
    certificate = ca.issue_cert("relay.contoso.com", "127.0.0.1")
    return {
        "relay-cert.pem": b"".join(blob.bytes() for blob in certificate.cert_chain_pems),
        "relay-key.pem": certificate.private_key_pem.bytes(),
        "users.txt": f"# test users\n{USER}:{hash_password(PASSWORD)}\n".encode(),
    }


@pytest.fixture
def tls_relay(
    tmp_path: Path, smarthost: RecordingSmarthost, relay_files: dict[str, bytes]
) -> Iterator[Callable[[str], LiveRelay]]:
    """Start a relay whose directory holds the configuration, certificate, key and users file."""
    started: list[LiveRelay] = []

    def start(config_text: str) -> LiveRelay:
        directory = tmp_path / f"relay{len(started)}"
        directory.mkdir()
        for name, content in relay_files.items():
            (directory / name).write_bytes(content)
        relay = start_relay(config_text, directory, smarthost_port=smarthost.port)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def plain_blob(user: str, password: str) -> str:
    return b64(f"\0{user}\0{password}")


def start_tls(client: smtplib.SMTP, context: ssl.SSLContext) -> None:
    code, text = client.starttls(context=context)
    assert code == 220, text
    assert isinstance(client.sock, ssl.SSLSocket)
    code, _ = client.ehlo("workstation.contoso.com")
    assert code == 250


def assert_anonymous(client: smtplib.SMTP) -> None:
    """The session may submit to the accepted domain but not relay outside it."""
    assert client.mail("alice@contoso.com") == (250, b"2.1.0 Sender OK")
    assert client.rcpt("kate@fabrikam.com") == (550, b"5.7.1 Unable to relay")
    assert client.rcpt("someone@contoso.com") == (250, b"2.1.5 Recipient OK")
    assert client.rset()[0] == 250


def assert_relays(client: smtplib.SMTP, smarthost: RecordingSmarthost, count: int = 1) -> None:
    """The session relays to an external domain and the message reaches the smarthost."""
    assert client.sendmail("alice@contoso.com", ["kate@fabrikam.com"], MESSAGE) == {}
    received = smarthost.wait_for(count)
    assert received[-1].rcpt_tos == ("kate@fabrikam.com",)
    assert b"Hello over TLS" in received[-1].content


# -- EHLO before and after STARTTLS ---------------------------------------------------------------


def test_ehlo_before_starttls_offers_starttls_but_not_auth(tls_relay, smtp_client) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    code, _ = client.ehlo("workstation.contoso.com")
    assert code == 250
    assert "starttls" in client.esmtp_features
    assert "auth" not in client.esmtp_features
    # Not offered means not accepted either: good credentials in clear text are not even checked.
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, PASSWORD)}") == (504, b"5.7.4 Unrecognized authentication type")
    assert_anonymous(client)


def test_ehlo_after_starttls_offers_auth_but_not_starttls(tls_relay, smtp_client, client_tls) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert client.sock.getpeercert()["subjectAltName"]  # the CA-verified relay certificate
    assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
    assert "starttls" not in client.esmtp_features


# -- AUTH -----------------------------------------------------------------------------------------


def test_auth_plain_with_good_credentials_may_relay(tls_relay, smtp_client, client_tls, smarthost) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert_anonymous(client)  # the same session before AUTH: no relay
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, PASSWORD)}") == (235, b"2.7.0 Authentication successful")
    assert_relays(client, smarthost)
    client.quit()


def test_auth_plain_without_initial_response(tls_relay, smtp_client, client_tls, smarthost) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    code, _ = client.docmd("AUTH", "PLAIN")
    assert code == 334
    assert client.docmd(plain_blob(USER, PASSWORD)) == (235, b"2.7.0 Authentication successful")
    assert_relays(client, smarthost)


def test_auth_login_with_good_credentials_may_relay(tls_relay, smtp_client, client_tls, smarthost) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert client.docmd("AUTH", "LOGIN") == (334, b"VXNlcm5hbWU6")  # "Username:"
    assert client.docmd(b64(USER)) == (334, b"UGFzc3dvcmQ6")  # "Password:"
    assert client.docmd(b64(PASSWORD)) == (235, b"2.7.0 Authentication successful")
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, PASSWORD)}") == (503, b"5.5.2 Auth command already specified")
    assert_relays(client, smarthost)
    client.quit()


def test_auth_cancelled_by_the_client_leaves_the_session_anonymous(tls_relay, smtp_client, client_tls) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert client.docmd("AUTH", f"LOGIN {b64(USER)}") == (334, b"UGFzc3dvcmQ6")
    assert client.docmd("*") == (501, b"5.5.4 Authentication cancelled")
    assert_anonymous(client)


def test_smtplib_login_authenticates(tls_relay, smtp_client, client_tls, smarthost) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert client.login(USER, PASSWORD) == (235, b"2.7.0 Authentication successful")
    assert_relays(client, smarthost)


@pytest.mark.parametrize("user, password", [(USER, WRONG_PASSWORD), ("mallory", PASSWORD), (USER, "")])
def test_bad_credentials_are_refused_and_the_session_stays_anonymous(
    tls_relay, smtp_client, client_tls, smarthost, user, password
) -> None:
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert client.docmd("AUTH", f"PLAIN {plain_blob(user, password)}") == (535, b"5.7.3 Authentication unsuccessful")
    assert client.docmd("AUTH", f"LOGIN {b64(user)}") == (334, b"UGFzc3dvcmQ6")
    assert client.docmd(b64(password)) == (535, b"5.7.3 Authentication unsuccessful")
    assert_anonymous(client)
    client.quit()
    assert len(relay.queue) == 0
    assert smarthost.messages == []


def test_exchange_users_only_connector_serves_nobody_before_auth(tls_relay, smtp_client, client_tls, smarthost) -> None:
    """With ExchangeUsers alone (the Client Frontend shape) an anonymous or failed session may not
    even submit: MAIL gets 530 5.7.1; after a good AUTH the same session relays."""
    relay = tls_relay(config(groups='["ExchangeUsers"]'))
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, WRONG_PASSWORD)}") == (535, b"5.7.3 Authentication unsuccessful")
    assert client.mail("alice@contoso.com") == (530, b"5.7.1 Client was not authenticated")
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, PASSWORD)}") == (235, b"2.7.0 Authentication successful")
    assert_relays(client, smarthost)


def test_auth_on_a_connector_without_basic_auth_is_unrecognized(tls_relay, smtp_client, client_tls) -> None:
    relay = tls_relay(config(mechanisms='["Tls"]'))
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert "auth" not in client.esmtp_features
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, PASSWORD)}") == (504, b"5.7.4 Unrecognized authentication type")
    # No challenge either: the next line is a command again, not a credential.
    assert client.docmd("AUTH", "LOGIN") == (504, b"5.7.4 Unrecognized authentication type")
    assert client.noop() == (250, b"2.0.0 OK")
    assert_anonymous(client)


def test_starttls_discards_an_identity_obtained_before_tls(tls_relay, smtp_client, client_tls) -> None:
    """RFC 3207 §4.2: after the handshake the server MUST discard any knowledge obtained from the
    client that did not come from the TLS negotiation itself; an AUTH identity is such knowledge."""
    relay = tls_relay(config(mechanisms='["Tls", "BasicAuth"]'))
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, PASSWORD)}") == (235, b"2.7.0 Authentication successful")
    start_tls(client, client_tls)
    assert_anonymous(client)


def test_a_second_starttls_is_refused(tls_relay, smtp_client, client_tls) -> None:
    """TLS is already up: a second STARTTLS gets 503 5.5.2 (reference §9.2) and the session goes on;
    it must not answer 220 and wait for a handshake inside TLS."""
    relay = tls_relay(config())
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    code, text = client.docmd("STARTTLS")
    assert (code, text[:6]) == (503, b"5.5.2 ")
    assert client.noop() == (250, b"2.0.0 OK")


# -- require_tls ----------------------------------------------------------------------------------


def test_require_tls_refuses_mail_until_starttls(tls_relay, smtp_client, client_tls, smarthost) -> None:
    relay = tls_relay(config(require_tls=True))
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    assert client.mail("alice@contoso.com") == (530, b"5.7.0 Must issue a STARTTLS command first")
    start_tls(client, client_tls)
    assert client.mail("alice@contoso.com") == (250, b"2.1.0 Sender OK")
    assert client.rcpt("someone@contoso.com") == (250, b"2.1.5 Recipient OK")
    code, text = client.data(MESSAGE)
    assert code == 250 and text.endswith(b"Queued mail for delivery")
    assert smarthost.wait_for(1)[0].rcpt_tos == ("someone@contoso.com",)


# -- STARTTLS command injection -------------------------------------------------------------------


class Wire:
    """Raw SMTP over a socket, reading exactly one reply at a time (nothing read ahead is hidden)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.pending = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> str:
        while b"\r\n" not in self.pending:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(f"connection closed; unterminated data {self.pending!r}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def reply(self) -> list[str]:
        lines = [self.line()]
        while lines[-1][3:4] == "-":
            lines.append(self.line())
        return lines

    def rest(self) -> bytes:
        """Everything the server still sends until it closes the connection."""
        data, self.pending = self.pending, b""
        while True:
            try:
                chunk = self.sock.recv(4096)
            except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                return data
            if not chunk:
                return data
            data += chunk


def test_plaintext_pipelined_behind_starttls_is_not_executed(tls_relay, client_tls) -> None:
    relay = tls_relay(config())
    with socket.create_connection(("127.0.0.1", relay.port), source_address=("127.0.0.20", 0), timeout=10) as raw:
        wire = Wire(raw)
        assert wire.reply()[0].startswith("220 ")
        wire.send(b"EHLO attacker.example\r\n")
        assert any(line[4:] == "STARTTLS" for line in wire.reply())
        # A man in the middle appends a command to the client's STARTTLS, in the same packet.
        wire.send(b"STARTTLS\r\nMAIL FROM:<x@y>\r\n")
        assert wire.reply()[0].startswith("220 ")
        assert wire.pending == b""  # nothing else came back in clear text
        wire.sock = client_tls.wrap_socket(raw, server_hostname="127.0.0.1")
        # The first reply inside TLS answers our EHLO, not the injected MAIL (which would have got
        # "503 5.5.2 Send hello first", or "250 2.1.0 Sender OK" had it run after our EHLO).
        wire.send(b"EHLO client.contoso.com\r\n")
        ehlo = wire.reply()
        assert ehlo[0] == "250-relay.contoso.com Hello [127.0.0.20]"
        # No transaction is open: our own MAIL is accepted, which a second MAIL would not be.
        wire.send(b"MAIL FROM:<alice@contoso.com>\r\n")
        assert wire.reply() == ["250 2.1.0 Sender OK"]
        wire.send(b"QUIT\r\n")
        assert wire.reply() == ["221 2.0.0 Service closing transmission channel"]
        assert wire.rest() == b""  # and no late reply to the injected command


# -- logging --------------------------------------------------------------------------------------


def test_credentials_never_appear_in_the_log(tls_relay, smtp_client, client_tls, smarthost, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    relay = tls_relay(config())
    secrets = {
        PASSWORD,
        WRONG_PASSWORD,
        b64(PASSWORD),
        b64(WRONG_PASSWORD),
        plain_blob(USER, PASSWORD),
        plain_blob(USER, WRONG_PASSWORD),
        b64(USER),
    }

    # Every way credentials travel: PLAIN with and without an initial response, LOGIN with and
    # without one; each wrong once, then right (two failures per session stay under the
    # connector's max_logon_failures).
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("workstation.contoso.com")
    start_tls(client, client_tls)
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, WRONG_PASSWORD)}")[0] == 535
    assert client.docmd("AUTH", "PLAIN")[0] == 334
    assert client.docmd(plain_blob(USER, WRONG_PASSWORD))[0] == 535
    assert client.docmd("AUTH", f"PLAIN {plain_blob(USER, PASSWORD)}")[0] == 235
    assert_relays(client, smarthost)
    client.quit()

    other = smtp_client("127.0.0.21", relay.port)
    other.ehlo("workstation.contoso.com")
    start_tls(other, client_tls)
    assert other.docmd("AUTH", f"LOGIN {b64(USER)}")[0] == 334
    assert other.docmd(b64(WRONG_PASSWORD))[0] == 535
    assert other.docmd("AUTH", "LOGIN")[0] == 334
    assert other.docmd(b64(USER))[0] == 334
    assert other.docmd(b64(PASSWORD))[0] == 235
    other.quit()
    relay.stop()

    assert caplog.records, "the relay logged nothing at DEBUG: the check below would prove nothing"
    logged = caplog.text + "\n".join(
        f"{record.getMessage()} {record.args!r} {record.exc_text or ''}" for record in caplog.records
    )
    assert "AUTH" in logged  # the AUTH command lines themselves were logged (sanitized)
    leaked = sorted(secret for secret in secrets if secret in logged)
    assert leaked == []
