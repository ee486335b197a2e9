"""Salmon routing behind the live listener: handlers' SMTPError and crashes become the reply at end
of DATA, handlers see the relay context, the relay handler queues one message for all recipients,
and ``relay_guard`` refuses what the policy did not allow.

Test-only handler modules live in ``tests/handlers/`` and are loaded by name, as an application's
``settings.handlers`` would be. Where nothing may be queued, the relay runs without a
``[smarthost]``: no delivery worker empties the queue, so ``len(relay.queue)`` is exact.
"""

from __future__ import annotations

import importlib
import logging
import re
import socket
import sys
import time
from pathlib import Path

import pytest
from salmon.mail import MailRequest
from salmon.routing import Router
from salmon.server import SMTPError

from salmon_relayauth import RelayContext, Right, parse_path, relay_guard

ROOT = Path(__file__).resolve().parent.parent
RELAY = "salmon_relayauth.handlers.relay"
RAISING = "tests.handlers.raising"
INSPECTING = "tests.handlers.inspecting"

ROUTING_CONFIG = """
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
tarpit_interval = "00:00:00"

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[queue]
retry_interval = "00:00:01"
"""

WITH_SMARTHOST = ROUTING_CONFIG + """
[smarthost]
host = "127.0.0.1"
port = {smarthost_port}
"""


def message(subject: str) -> bytes:
    return f"From: chris@contoso.com\r\nTo: kate@fabrikam.com\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


@pytest.fixture(autouse=True)
def handler_modules_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tests.handlers.*`` resolve from the project root however pytest was started."""
    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))


def transaction(client, recipients: list[str], subject: str) -> tuple[int, bytes]:
    """MAIL, every RCPT (each must be accepted), DATA; the end-of-data reply."""
    assert client.mail("chris@contoso.com") == (250, b"2.1.0 Sender OK")
    for recipient in recipients:
        assert client.rcpt(recipient) == (250, b"2.1.5 Recipient OK")
    return client.data(message(subject))


def queued_id(reply: bytes) -> str:
    match = re.fullmatch(rb"2\.6\.0 <([^@>]+)@relay\.contoso\.com> Queued mail for delivery", reply)
    assert match, reply
    return match.group(1).decode()


def wait_until_empty(queue, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(queue):
        assert time.monotonic() < deadline, f"{len(queue)} message(s) still queued"
        time.sleep(0.02)


# -- a handler's SMTPError ------------------------------------------------------------------------


def test_handler_smtp_error_is_the_reply_and_nothing_is_queued(live_relay, smtp_client) -> None:
    relay = live_relay(ROUTING_CONFIG, handlers=[RAISING, RELAY])
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("app.contoso.com")
    # The first recipient is relayed by the relay handler before the second one is refused:
    # the refusal covers the whole message.
    assert transaction(client, ["kate@fabrikam.com", "refused@fabrikam.com"], "refused") == (550, b"5.7.1 Not today")
    assert len(relay.queue) == 0
    # The session goes on, and a message the handlers accept is queued (the check above can fail).
    code, text = transaction(client, ["kate@fabrikam.com"], "accepted")
    assert code == 250
    assert queued_id(text) in relay.queue
    assert len(relay.queue) == 1


def test_handler_temporary_smtp_error_is_passed_on(live_relay, smtp_client) -> None:
    relay = live_relay(ROUTING_CONFIG, handlers=[RAISING, RELAY])
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("app.contoso.com")
    assert transaction(client, ["greylisted@fabrikam.com"], "later") == (451, b"4.7.1 Greylisted, try again later")
    assert len(relay.queue) == 0


def test_handler_smtp_error_text_cannot_add_reply_lines(live_relay) -> None:
    relay = live_relay(ROUTING_CONFIG, handlers=[RAISING, RELAY])
    with socket.create_connection(("127.0.0.1", relay.port), source_address=("127.0.0.10", 0), timeout=10) as sock:
        sock.sendall(
            b"EHLO app\r\nMAIL FROM:<chris@contoso.com>\r\nRCPT TO:<forged@fabrikam.com>\r\nDATA\r\n"
            + message("forged")
            + b".\r\nQUIT\r\n"
        )
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    lines = data.decode().split("\r\n")
    end_of_data = lines.index("354 Start mail input; end with <CRLF>.<CRLF>") + 1
    assert lines[end_of_data].startswith("550 5.7.1 Not today")
    assert lines[end_of_data + 1] == "221 2.0.0 Service closing transmission channel"
    assert len(relay.queue) == 0


# -- a handler's crash ----------------------------------------------------------------------------


def test_handler_crash_gets_451_without_internals_and_nothing_is_queued(
    live_relay, smtp_client, monkeypatch, caplog
) -> None:
    # Salmon's default would log the crash and carry on as if the handler had succeeded.
    monkeypatch.setattr(Router, "LOG_EXCEPTIONS", True)
    relay = live_relay(ROUTING_CONFIG, handlers=[RAISING, RELAY])
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("app.contoso.com")
    code, text = transaction(client, ["kate@fabrikam.com", "crash@fabrikam.com"], "crash")
    assert code == 451
    assert text.startswith(b"4.3.0 ")
    raising = sys.modules[RAISING]
    for internal in ("HandlerMeltdown", "RuntimeError", "Error", "Traceback", raising.CRASH_DETAIL, "hunter2", "raising"):
        assert internal.encode() not in text
    assert len(relay.queue) == 0
    # The operator's log has the details the client did not get.
    assert any(record.exc_info and record.exc_info[0] is raising.HandlerMeltdown for record in caplog.records)
    code, text = transaction(client, ["kate@fabrikam.com"], "after the crash")
    assert code == 250
    assert len(relay.queue) == 1


def test_router_log_exceptions_is_off_while_the_relay_runs(live_relay, monkeypatch) -> None:
    monkeypatch.setattr(Router, "LOG_EXCEPTIONS", True)
    live_relay(ROUTING_CONFIG)
    assert Router.LOG_EXCEPTIONS is False


@pytest.mark.parametrize("recipient, code", [("refused@fabrikam.com", 550), ("crash@fabrikam.com", 451)])
def test_a_refused_message_never_reaches_the_smarthost(live_relay, smtp_client, smarthost, recipient, code) -> None:
    relay = live_relay(WITH_SMARTHOST, handlers=[RAISING, RELAY])
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("app.contoso.com")
    assert transaction(client, ["kate@fabrikam.com", recipient], "refused")[0] == code
    assert transaction(client, ["kate@fabrikam.com"], "accepted")[0] == 250
    client.quit()
    smarthost.wait_for(1)
    wait_until_empty(relay.queue)
    assert [b"Subject: accepted" in received.content for received in smarthost.messages] == [True]


# -- what a handler sees --------------------------------------------------------------------------


def test_handler_sees_the_relay_context(live_relay, smtp_client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="salmon_relayauth")
    relay = live_relay(ROUTING_CONFIG, handlers=[INSPECTING, RELAY])
    seen = importlib.import_module(INSPECTING).SEEN

    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("app.contoso.com")
    code, text = transaction(client, ["kate@fabrikam.com", "hidden@fabrikam.com"], "relay host")
    assert code == 250
    queue_id = queued_id(text)

    assert [snapshot["to"] for snapshot in seen] == ["kate@fabrikam.com", "hidden@fabrikam.com"]
    for snapshot in seen:
        assert snapshot["connector"] == "Anonymous Relay"
        assert snapshot["client_address"] == "127.0.0.10"
        assert snapshot["sender"] == "chris@contoso.com"
        assert snapshot["recipients"] == ("kate@fabrikam.com", "hidden@fabrikam.com")
        assert snapshot["queue_id"] == queue_id
        assert Right.SMTP_ACCEPT_ANY_RECIPIENT.value in snapshot["rights"]
        assert Right.SMTP_SUBMIT.value in snapshot["rights"]
        assert snapshot["principals"] == {"NT AUTHORITY\\ANONYMOUS LOGON"}
        assert isinstance(snapshot["context"], RelayContext)
    session_id = seen[0]["session_id"]
    assert re.fullmatch(r"[0-9A-F]{16}", session_id)
    assert seen[1]["session_id"] == session_id
    # It is this session's id: the one the listener logged and the queue recorded.
    assert f"session {session_id} 127.0.0.10: queued {queue_id}" in caplog.text
    assert relay.queue.envelope(queue_id).session_id == session_id

    # Another host, on another connector, in another session: the context says so.
    other = smtp_client("127.0.0.20", relay.port)
    other.ehlo("desktop.contoso.com")
    assert transaction(other, ["someone@contoso.com"], "frontend")[0] == 250
    frontend = seen[-1]
    assert frontend["connector"] == "Default Frontend"
    assert frontend["client_address"] == "127.0.0.20"
    assert frontend["session_id"] != session_id
    assert Right.SMTP_ACCEPT_ANY_RECIPIENT.value not in frontend["rights"]
    assert Right.SMTP_SUBMIT.value in frontend["rights"]


# -- the relay handler ----------------------------------------------------------------------------


def test_relay_handler_sends_one_smarthost_transaction_for_all_recipients(live_relay, smtp_client, smarthost) -> None:
    relay = live_relay(WITH_SMARTHOST)  # the relay handler alone
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("app.contoso.com")
    recipients = ["kate@fabrikam.com", "bob@tailspintoys.com", "hidden@fabrikam.com", "someone@contoso.com"]
    code, _ = transaction(client, recipients, "fan out")
    assert code == 250
    client.quit()
    smarthost.wait_for(1)
    wait_until_empty(relay.queue)
    assert len(smarthost.messages) == 1
    received = smarthost.messages[0]
    assert received.mail_from == "chris@contoso.com"
    assert received.rcpt_tos == tuple(recipients)
    assert b"body of fan out" in received.content


# -- relay_guard ----------------------------------------------------------------------------------


def guarded_handler(calls: list[str]):
    @relay_guard
    def handler(message, *args, **kwargs) -> None:
        calls.append(str(message.To))

    return handler


def test_relay_guard_refuses_a_message_without_relay_context() -> None:
    calls: list[str] = []
    handler = guarded_handler(calls)
    request = MailRequest(("127.0.0.10", 40000), "chris@contoso.com", "kate@fabrikam.com", message("no context"))
    with pytest.raises(SMTPError) as refused:
        handler(request)
    assert (refused.value.code, refused.value.message) == (550, "5.7.1 Unable to relay")
    request.relay = object()  # something else called "relay" is no relay context either
    with pytest.raises(SMTPError):
        handler(request)
    assert calls == []


def test_relay_guard_refuses_a_recipient_that_was_not_an_envelope_recipient(live_relay, smtp_client) -> None:
    relay = live_relay(ROUTING_CONFIG, handlers=[INSPECTING])
    seen = importlib.import_module(INSPECTING).SEEN
    client = smtp_client("127.0.0.10", relay.port)
    client.ehlo("app.contoso.com")
    assert transaction(client, ["kate@fabrikam.com"], "capture")[0] == 250
    context = seen[0]["context"]  # a real context of a session that may relay
    calls: list[str] = []
    handler = guarded_handler(calls)

    def request(recipient: str) -> MailRequest:
        mail = MailRequest(("127.0.0.10", 40000), "chris@contoso.com", recipient, message("guarded"))
        mail.relay = context
        return mail

    handler(request("kate@fabrikam.com"))  # the envelope recipient passes
    handler(request("KATE@fabrikam.com"))
    assert [call.lower() for call in calls] == ["kate@fabrikam.com", "kate@fabrikam.com"]
    for stranger in ("mallory@fabrikam.com", "kate@fabrikam.com.evil.example", "kate@contoso.com"):
        with pytest.raises(SMTPError) as refused:
            handler(request(stranger))
        assert (refused.value.code, refused.value.message) == (550, "5.7.1 Unable to relay")
    assert len(calls) == 2


def test_relay_guard_asks_the_policy_again(live_relay, smtp_client) -> None:
    """A context whose session lacks the relay right is refused even for its own recipient."""
    relay = live_relay(ROUTING_CONFIG, handlers=[INSPECTING])
    seen = importlib.import_module(INSPECTING).SEEN
    client = smtp_client("127.0.0.20", relay.port)
    client.ehlo("desktop.contoso.com")
    assert transaction(client, ["someone@contoso.com"], "capture")[0] == 250
    frontend = seen[0]["context"]
    forged = RelayContext(
        frontend.policy, frontend.session, frontend.sender, (parse_path("<kate@fabrikam.com>", allow_null=False),), frontend.queue_id
    )
    calls: list[str] = []
    handler = guarded_handler(calls)
    mail = MailRequest(("127.0.0.20", 40000), "chris@contoso.com", "kate@fabrikam.com", message("forged"))
    mail.relay = forged
    with pytest.raises(SMTPError) as refused:
        handler(mail)
    assert (refused.value.code, refused.value.message) == (550, "5.7.1 Unable to relay")
    local = MailRequest(("127.0.0.20", 40000), "chris@contoso.com", "someone@contoso.com", message("local"))
    local.relay = frontend
    handler(local)
    assert calls == ["someone@contoso.com"]


def test_lazy_request_reads_like_salmons_own() -> None:
    """The relay's MailRequest parses the content only when asked, and then shows what Salmon's does."""
    from salmon_relayauth.routing import LazyMailRequest

    content = b"From: App <App@Contoso.com>\r\nSubject: nightly\r\n\r\nbody text\r\n"
    peer = ("127.0.0.10", 4000)
    lazy = LazyMailRequest(peer, "App@Contoso.com", "Kate@Fabrikam.com", content)
    salmon = MailRequest(peer, "App@Contoso.com", "Kate@Fabrikam.com", content)
    assert lazy._parsed is None  # nothing parsed yet
    assert (lazy.From, lazy.To) == (salmon.From, salmon.To) == ("app@contoso.com", "kate@fabrikam.com")
    assert lazy["subject"] == salmon["subject"] == "nightly"
    assert lazy["to"] == salmon["to"] == "kate@fabrikam.com"  # filled in from the envelope, as Salmon does
    assert lazy.body() == salmon.body()
    assert str(lazy) == str(salmon)
