"""Delivery to a real SMTP smarthost on 127.0.0.1: transactions, retries, notifications, connections."""

from __future__ import annotations

import email
import email.message
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from salmon_relayauth.model.connector import QueueSettings, SmarthostSettings
from salmon_relayauth.queue import DeliveryWorker, MessageQueue, QueuedEnvelope, retry_delay
from salmon_relayauth.queue.dsn import status_from_reply

FQDN = "relay.contoso.com"
SETTINGS = QueueSettings(
    retry_interval=timedelta(minutes=1),
    max_retry_interval=timedelta(minutes=5),
    message_expiration=timedelta(hours=2),
)
CONTENT = (
    b"From: App <app@contoso.com>\r\nTo: ops@contoso.com\r\nCc: dba@contoso.com\r\n"
    b"Subject: nightly backup failed\r\nMessage-ID: <1@app.contoso.com>\r\n\r\n"
    b"The backup failed.\r\n.leading dot\r\n\r\n8-bit: caf\xc3\xa9\r\n"
)


# -- the smarthost ---------------------------------------------------------------------------------


@dataclass
class Transaction:
    connection: int
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool


@dataclass
class RecordingSmarthost:
    """An aiosmtpd handler that records what it accepts; replies can be scripted.

    ``rcpt_script[address]`` is consumed one reply per RCPT of that address (then 250);
    ``rcpt_always[address]`` answers every RCPT; ``mail_script`` / ``data_script`` likewise for MAIL / DATA.
    """

    transactions: list[Transaction] = field(default_factory=list)
    connections: int = 0
    rcpt_script: dict[str, list[str]] = field(default_factory=dict)
    rcpt_always: dict[str, str] = field(default_factory=dict)
    mail_script: list[str] = field(default_factory=list)
    data_script: list[str] = field(default_factory=list)
    drop_at_mail: int = 0  # close the next N connections when MAIL arrives, without a reply
    logins: list[bytes] = field(default_factory=list)
    pipelining: bool = False  # offer PIPELINING (RFC 2920)
    pipelined: list[bool] = field(default_factory=list)  # per MAIL: whether its RCPTs and DATA came with it
    next_with_content: list[bool] = field(default_factory=list)  # per content: whether a MAIL came right after it
    resets: int = 0

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not getattr(session, "counted", False):
            self.connections += 1
            session.counted, session.number = True, self.connections
        return responses[:-1] + ["250-PIPELINING", responses[-1]] if self.pipelining else responses

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:
        self.resets += 1
        return "250 OK"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        self.pipelined.append(b"DATA\r\n" in bytes(server._reader._buffer))  # already read with MAIL
        if self.drop_at_mail:
            self.drop_at_mail -= 1
            server.transport.abort()
            return "421 4.4.2 gone"  # never reaches the client
        if self.mail_script:
            return self.mail_script.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = self.rcpt_always.get(address) or (self.rcpt_script.get(address) or ["250 OK"]).pop(0)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.next_with_content.append(b"MAIL FROM:" in bytes(server._reader._buffer))  # read with the content
        if self.data_script:
            return self.data_script.pop(0)
        self.transactions.append(
            Transaction(session.number, envelope.mail_from, list(envelope.rcpt_tos), envelope.content, session.ssl is not None)
        )
        return "250 2.0.0 Ok: queued"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(handler: RecordingSmarthost, port: int, **options: Any) -> Controller:
    controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
    controller.start()
    return controller


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def smarthost(request: pytest.FixtureRequest) -> Iterator[tuple[RecordingSmarthost, SmarthostSettings]]:
    """The smarthost, once without PIPELINING (one command, one reply) and once with it."""
    handler, port = RecordingSmarthost(pipelining=request.param), free_port()
    controller = serve(handler, port)
    yield handler, SmarthostSettings(host="127.0.0.1", port=port)
    controller.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def queued(queue: MessageQueue, clock: Clock, **changes: Any) -> QueuedEnvelope:
    item = QueuedEnvelope(
        queue_id=queue.new_id(),
        sender="app@contoso.com",
        recipients=("ops@contoso.com", "dba@contoso.com", "audit@fabrikam.com"),  # the last one is a Bcc
        client_address="192.168.5.10",
        client_port=40123,
        connector="Anonymous Relay",
        session_id="s1",
        principals=(),
        rights=("ms-Exch-SMTP-Submit",),
        received_at=clock.now,
    )
    item = replace(item, **changes)
    queue.enqueue(item, CONTENT)
    return item


def worker_for(queue: MessageQueue, settings: SmarthostSettings, clock: Clock, **options: Any) -> DeliveryWorker:
    return DeliveryWorker(queue, settings, SETTINGS, FQDN, clock=clock, timeout=5, **options)


def report(content: bytes) -> tuple[email.message.Message, list[email.message.Message]]:
    """The notification and its per-recipient delivery-status blocks."""
    message = email.message_from_bytes(content)
    status = message.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    return message, status.get_payload()


# -- transactions -------------------------------------------------------------------------------------


def test_one_transaction_with_whole_envelope(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    item = queued(queue, clock)
    stats = worker_for(queue, settings, clock).run_once()
    assert [(t.mail_from, t.rcpt_tos) for t in server.transactions] == [("app@contoso.com", list(item.recipients))]
    assert server.transactions[0].content == CONTENT
    assert len(queue) == 0
    assert (stats.messages, stats.delivered, stats.finished, stats.connections) == (1, 3, 1, 1)


def test_several_messages_share_one_connection(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    senders = [f"app{n}@contoso.com" for n in range(5)]
    for sender in senders:
        queued(queue, clock, sender=sender)
    stats = worker_for(queue, settings, clock).run_once()
    assert [t.mail_from for t in server.transactions] == senders
    assert server.connections == 1 and stats.connections == 1
    # With PIPELINING, each message's MAIL, RCPT and DATA go in the write that ends the content of
    # the one before (RFC 2920): one round trip per message, not two. The last has none after it.
    assert server.next_with_content == [server.pipelining] * 4 + [False]
    assert len(queue) == 0


def test_dropped_connection_is_reopened_for_the_next_message(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    server.data_script = ["421 4.3.2 Service shutting down"]
    queue = MessageQueue(tmp_path)
    first, second = queued(queue, clock), queued(queue, clock)
    stats = worker_for(queue, settings, clock).run_once()
    assert [t.connection for t in server.transactions] == [2]
    assert queue.list() == [replace(first, attempts=1, next_attempt=clock.now + 60,
                                    last_error="421 4.3.2 Service shutting down")]
    assert (stats.connections, stats.delivered, stats.deferred) == (2, 3, 3)
    assert second.queue_id not in queue


def test_reused_connection_found_dead_is_replaced_without_a_deferral(
    tmp_path: Path, smarthost: Any, clock: Clock
) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    queued(queue, clock, sender="first@contoso.com")
    queued(queue, clock, sender="second@contoso.com")

    original_data = server.handle_DATA

    async def data_then_arm(*args: Any) -> str:
        server.drop_at_mail = 1  # the smarthost goes away while the connection sits idle
        return await original_data(*args)

    server.handle_DATA = data_then_arm
    stats = worker_for(queue, settings, clock).run_once()
    assert [(t.mail_from, t.connection) for t in server.transactions] == [
        ("first@contoso.com", 1), ("second@contoso.com", 2)
    ]
    assert (stats.connections, stats.deferred, len(queue)) == (2, 0, 0)


# -- temporary failures ---------------------------------------------------------------------------------


def test_temporary_failures_back_off_then_deliver(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    server.rcpt_script = {"dba@contoso.com": ["451 4.3.0 Try again later"] * 4}
    queue = MessageQueue(tmp_path)
    item = queued(queue, clock)
    worker = worker_for(queue, settings, clock)
    worker.run_once()
    # the others are delivered at once; only the deferred recipient stays
    assert server.transactions[0].rcpt_tos == ["ops@contoso.com", "audit@fabrikam.com"]
    delays = []
    for attempt in range(1, 5):
        state = queue.load(item.queue_id)[0]
        assert (state.recipients, state.attempts) == (("dba@contoso.com",), attempt)
        assert state.last_error == "451 4.3.0 Try again later"
        delays.append(state.next_attempt - clock.now)
        assert worker.run_once().messages == 0  # not due yet
        clock.now = state.next_attempt
        worker.run_once()
    assert delays == [60, 120, 240, 300]  # doubled each time, capped at max_retry_interval
    assert [t.rcpt_tos for t in server.transactions][1:] == [["dba@contoso.com"]]
    assert len(queue) == 0


def test_smarthost_down_loses_nothing(tmp_path: Path, clock: Clock) -> None:
    port = free_port()
    queue = MessageQueue(tmp_path)
    items = [queued(queue, clock) for _ in range(3)]
    worker = worker_for(queue, SmarthostSettings(host="127.0.0.1", port=port), clock)
    stats = worker.run_once()
    assert (stats.messages, stats.deferred, stats.connections) == (3, 9, 0)
    for item in queue.list():
        assert item.attempts == 1 and "ConnectionRefusedError" in item.last_error and len(item.recipients) == 3

    server = RecordingSmarthost()
    controller = serve(server, port)
    try:
        clock.now += 60
        worker.run_once()
    finally:
        controller.stop()
    assert len(queue) == 0
    assert [t.rcpt_tos for t in server.transactions] == [list(item.recipients) for item in items]


def test_expiry_returns_the_message_with_4_4_7(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    server.rcpt_always = {"ops@contoso.com": "451 4.7.1 Greylisted"}
    queue = MessageQueue(tmp_path)
    item = queued(queue, clock, recipients=("ops@contoso.com",))
    worker = worker_for(queue, settings, clock)
    worker.run_once()
    clock.now = item.received_at + SETTINGS.message_expiration.total_seconds() + 1
    stats = worker.run_once()
    assert (stats.failed, stats.notifications) == (1, 1)
    assert len(queue) == 0
    [notification] = server.transactions
    assert (notification.mail_from, notification.rcpt_tos) == ("<>", ["app@contoso.com"])
    _, [arrival, recipient] = report(notification.content)
    assert recipient["Final-Recipient"] == "rfc822; ops@contoso.com"
    assert (recipient["Action"], recipient["Status"]) == ("failed", "4.4.7")
    assert recipient["Diagnostic-Code"] == "smtp; 451 4.7.1 Greylisted"


# -- permanent failures and notifications ----------------------------------------------------------------


def test_permanent_failure_notifies_the_sender_once(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    server.rcpt_always = {"dba@contoso.com": "550 5.1.1 <dba@contoso.com>: Recipient address rejected"}
    queue = MessageQueue(tmp_path)
    item = queued(queue, clock)
    stats = worker_for(queue, settings, clock).run_once()
    original, notification = server.transactions
    assert original.rcpt_tos == ["ops@contoso.com", "audit@fabrikam.com"] and original.content == CONTENT
    assert (notification.mail_from, notification.rcpt_tos) == ("<>", ["app@contoso.com"])
    assert (stats.delivered, stats.failed, stats.notifications, stats.connections) == (3, 1, 1, 1)
    assert len(queue) == 0

    message, [arrival, recipient] = report(notification.content)
    assert message["From"] == f"Mail Delivery System <MAILER-DAEMON@{FQDN}>"
    assert message["To"] == "<app@contoso.com>" and message["Subject"] == "Undeliverable: nightly backup failed"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    human, _, headers = message.get_payload()
    assert "dba@contoso.com" in human.get_payload() and "Recipient address rejected" in human.get_payload()
    assert arrival["Reporting-MTA"] == f"dns; {FQDN}" and arrival["Arrival-Date"]
    assert recipient["Final-Recipient"] == "rfc822; dba@contoso.com"
    assert (recipient["Action"], recipient["Status"]) == ("failed", "5.1.1")
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <dba@contoso.com>: Recipient address rejected"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"Message-ID: <1@app.contoso.com>" in notification.content and b"The backup failed" not in notification.content


def test_refused_sender_fails_every_recipient_in_one_notification(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    server.mail_script = ["553 5.7.1 Sender not allowed"]
    queue = MessageQueue(tmp_path)
    queued(queue, clock)
    worker_for(queue, settings, clock).run_once()
    [notification] = server.transactions
    _, [_, *recipients] = report(notification.content)
    assert [r["Final-Recipient"] for r in recipients] == [
        "rfc822; ops@contoso.com", "rfc822; dba@contoso.com", "rfc822; audit@fabrikam.com"
    ]
    assert {r["Status"] for r in recipients} == {"5.7.1"}


def test_no_notification_for_the_null_sender_or_a_notification(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    server.rcpt_always = {"ops@contoso.com": "550 5.1.1 unknown"}
    queue = MessageQueue(tmp_path)
    queued(queue, clock, sender="", recipients=("ops@contoso.com",))
    queued(queue, clock, sender="", recipients=("ops@contoso.com",), is_notification=True)
    stats = worker_for(queue, settings, clock).run_once()
    assert (stats.messages, stats.failed, stats.notifications) == (2, 2, 0)
    assert server.transactions == [] and len(queue) == 0


def test_data_refusal_is_per_message(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    server.data_script = ["554 5.6.0 Message content rejected"]
    queue = MessageQueue(tmp_path)
    queued(queue, clock)
    stats = worker_for(queue, settings, clock).run_once()
    assert (stats.failed, stats.notifications) == (3, 1)
    [notification] = server.transactions
    assert {r["Status"] for r in report(notification.content)[1][1:]} == {"5.6.0"}


# -- the background thread, credentials, TLS ------------------------------------------------------------


def test_background_worker_delivers_on_wake(tmp_path: Path, smarthost: Any) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    worker = DeliveryWorker(queue, settings, SETTINGS, FQDN, poll_interval=60, timeout=5)
    worker.start()
    try:
        time.sleep(0.1)
        queued(queue, Clock(), received_at=time.time())
        worker.wake()
        deadline = time.monotonic() + 5
        while len(queue) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        worker.stop(timeout=5)
    assert len(queue) == 0 and len(server.transactions) == 1


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_commands_are_pipelined_only_when_offered(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    queued(queue, clock)
    queued(queue, clock)
    worker_for(queue, settings, clock).run_once()
    assert server.pipelined == [server.pipelining] * 2 and len(server.transactions) == 2


def test_a_message_sent_ahead_then_removed_from_the_queue_is_never_completed(
    tmp_path: Path, smarthost: Any, clock: Clock
) -> None:
    """The queue command removes a message whose commands already went out with the previous
    content: its transaction is abandoned with the connection, never ended with empty content."""
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    first = queued(queue, clock, sender="first@contoso.com")
    second = queued(queue, clock, sender="second@contoso.com")
    queued(queue, clock, sender="third@contoso.com")
    original_data = server.handle_DATA

    async def data_then_remove(handler_server: Any, session: Any, envelope: Any) -> str:
        if envelope.mail_from == first.sender:
            queue.remove(second.queue_id)  # while the relay waits for the first message's reply
        return await original_data(handler_server, session, envelope)

    server.handle_DATA = data_then_remove
    stats = worker_for(queue, settings, clock).run_once()
    assert [t.mail_from for t in server.transactions] == ["first@contoso.com", "third@contoso.com"]
    assert (stats.messages, stats.delivered, stats.deferred, len(queue)) == (2, 6, 0, 0)
    assert stats.connections == (2 if server.pipelining else 1)


def test_rset_only_after_a_transaction_left_open(tmp_path: Path, smarthost: Any, clock: Clock) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    for address in ("ops@contoso.com", "dba@contoso.com", "audit@fabrikam.com"):
        server.rcpt_script[address] = ["550 5.1.1 unknown"]  # the first message: MAIL accepted, no recipient
    queued(queue, clock)
    queued(queue, clock)
    queued(queue, clock)
    stats = worker_for(queue, settings, clock).run_once()
    assert (stats.connections, stats.failed, stats.delivered, stats.notifications) == (1, 3, 6 + 1, 1)
    assert server.resets == 1  # before the second message only; the third and the notification follow finished ones


def test_submitted_messages_go_out_without_a_scan_on_one_kept_connection(tmp_path: Path, smarthost: Any) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    worker = DeliveryWorker(queue, settings, SETTINGS, FQDN, poll_interval=60, timeout=5)
    worker.KEEP_OPEN = 0.5
    worker.start()
    try:
        time.sleep(0.2)  # the first scan, of an empty queue, is over
        unannounced = queued(queue, Clock(), received_at=time.time())
        first = queued(queue, Clock(), received_at=time.time())
        worker.submit(first.queue_id)
        assert wait_until(lambda: first.queue_id not in queue)
        second = queued(queue, Clock(), received_at=time.time())
        worker.submit(second.queue_id)
        assert wait_until(lambda: second.queue_id not in queue)
        assert server.connections == 1  # kept open between the two
        assert unannounced.queue_id in queue  # only a scan finds it
        time.sleep(0.8)  # idle longer than KEEP_OPEN: the connection is closed
        worker.wake()
        assert wait_until(lambda: unannounced.queue_id not in queue)
        assert server.connections == 2
    finally:
        worker.stop(timeout=5)
    assert [t.mail_from for t in server.transactions] == ["app@contoso.com"] * 3


def test_a_message_handed_over_during_a_delivery_goes_out_with_its_end_of_data(tmp_path: Path, smarthost: Any) -> None:
    server, settings = smarthost
    queue = MessageQueue(tmp_path)
    worker = DeliveryWorker(queue, settings, SETTINGS, FQDN, poll_interval=60, timeout=5)
    original_mail = server.handle_MAIL

    async def mail_then_hand_over(
        handler_server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == "first@contoso.com":  # the relay queues another message meanwhile
            second = queued(queue, Clock(), sender="second@contoso.com", received_at=time.time())
            worker.submit(second.queue_id)
        return await original_mail(handler_server, session, envelope, address, options)

    server.handle_MAIL = mail_then_hand_over
    worker.start()
    try:
        time.sleep(0.2)  # the first scan, of an empty queue, is over
        first = queued(queue, Clock(), sender="first@contoso.com", received_at=time.time())
        worker.submit(first.queue_id)
        assert wait_until(lambda: len(queue) == 0 and len(server.transactions) == 2)
    finally:
        worker.stop(timeout=5)
    assert [t.mail_from for t in server.transactions] == ["first@contoso.com", "second@contoso.com"]
    assert server.next_with_content == [server.pipelining, False] and server.connections == 1


def test_background_worker_retries_when_due_without_being_woken(tmp_path: Path, smarthost: Any) -> None:
    server, settings = smarthost
    server.rcpt_script["ops@contoso.com"] = ["451 4.3.0 try later"]
    queue = MessageQueue(tmp_path)
    quick = QueueSettings(retry_interval=timedelta(seconds=0.3), max_retry_interval=timedelta(seconds=1),
                          message_expiration=timedelta(hours=1))
    worker = DeliveryWorker(queue, settings, quick, FQDN, poll_interval=60, timeout=5)
    worker.start()
    try:
        item = queued(queue, Clock(), received_at=time.time())
        worker.submit(item.queue_id)
        assert wait_until(lambda: item.queue_id not in queue, timeout=5)
    finally:
        worker.stop(timeout=5)
    delivered = [rcpt for t in server.transactions for rcpt in t.rcpt_tos]
    assert sorted(delivered) == sorted(item.recipients)  # two of them at once, the third at its retry


def test_stop_leaves_undelivered_mail_queued(tmp_path: Path, clock: Clock) -> None:
    queue = MessageQueue(tmp_path)
    worker = DeliveryWorker(queue, SmarthostSettings(port=free_port()), SETTINGS, FQDN, poll_interval=60, timeout=5)
    worker.start()
    queued(queue, clock, received_at=time.time())
    worker.wake()
    started = time.monotonic()
    worker.stop(timeout=5)
    assert time.monotonic() - started < 5
    [item] = queue.list()
    assert item.attempts <= 1 and len(item.recipients) == 3


def authenticator(recorder: RecordingSmarthost) -> Any:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        recorder.logins.append(auth_data.login)
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"relay", b"s3cret-pw"), handled=False)

    return check


def test_login_and_passwords_never_logged(tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    server, port = RecordingSmarthost(), free_port()
    controller = serve(server, port, authenticator=authenticator(server), auth_require_tls=False)
    caplog.set_level(logging.DEBUG, logger="salmon_relayauth")
    try:
        queue = MessageQueue(tmp_path)
        wrong = SmarthostSettings(host="127.0.0.1", port=port, username="relay", password="wr0ng-pw")
        queued(queue, clock)
        worker_for(queue, wrong, clock).run_once()
        [deferred] = queue.list()
        assert deferred.attempts == 1 and "535 5.7.8" in deferred.last_error
        right = replace(wrong, password="s3cret-pw")
        clock.now += 60
        worker_for(queue, right, clock).run_once()
    finally:
        controller.stop()
    assert len(queue) == 0 and len(server.transactions) == 1
    assert server.logins == [b"relay"] * 3  # PLAIN, then LOGIN with the wrong password; PLAIN with the right one
    assert "delivered" in caplog.text and "pw" not in caplog.text


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A server certificate for 127.0.0.1 and key, and the CA that signed it (trustme)."""
    import trustme

    directory = tmp_path_factory.mktemp("tls")
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    cert, key, ca = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca))
    return cert, key, ca


def test_starttls_is_used_and_never_skipped(tmp_path: Path, clock: Clock, certificate: tuple[Path, Path, Path]) -> None:
    cert, key, ca = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(ca))
    queue = MessageQueue(tmp_path)
    queued(queue, clock)

    plain, plain_port = RecordingSmarthost(), free_port()
    controller = serve(plain, plain_port)
    try:  # a smarthost that does not offer STARTTLS gets nothing
        settings = SmarthostSettings(host="127.0.0.1", port=plain_port, starttls=True)
        worker_for(queue, settings, clock, tls_context=client_context).run_once()
    finally:
        controller.stop()
    assert plain.transactions == [] and "STARTTLS" in queue.list()[0].last_error

    secure, secure_port = RecordingSmarthost(), free_port()
    controller = serve(secure, secure_port, tls_context=server_context, require_starttls=True)
    try:
        clock.now += 60
        settings = SmarthostSettings(host="127.0.0.1", port=secure_port, starttls=True)
        worker_for(queue, settings, clock, tls_context=client_context).run_once()
    finally:
        controller.stop()
    assert [t.tls for t in secure.transactions] == [True] and len(queue) == 0


def test_implicit_tls(tmp_path: Path, clock: Clock, certificate: tuple[Path, Path, Path]) -> None:
    cert, key, ca = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    queue = MessageQueue(tmp_path)
    queued(queue, clock)
    server, port = RecordingSmarthost(), free_port()
    controller = serve(server, port, ssl_context=server_context)
    try:
        settings = SmarthostSettings(host="127.0.0.1", port=port, ssl=True)
        worker_for(queue, settings, clock, tls_context=ssl.create_default_context(cafile=str(ca))).run_once()
    finally:
        controller.stop()
    assert len(server.transactions) == 1 and len(queue) == 0


# -- small pieces ----------------------------------------------------------------------------------------


def test_retry_delay_and_status() -> None:
    assert [retry_delay(n, SETTINGS) for n in range(1, 6)] == [60, 120, 240, 300, 300]
    assert retry_delay(10_000, SETTINGS) == 300
    assert status_from_reply(550, "5.1.1 unknown") == "5.1.1"
    assert status_from_reply(550, "4.1.1 mismatched class") == "5.0.0"
    assert status_from_reply(554, "no enhanced code") == "5.0.0"


# -- a smarthost that stops answering -----------------------------------------------------------------


@pytest.mark.parametrize("stall_after", [b"MAIL", b"DATA"])
def test_a_smarthost_that_stops_answering_times_out_and_the_message_waits(
    tmp_path: Path, clock: Clock, stall_after: bytes
) -> None:
    """The attempt ends after the timeout (the kernel's, on a plain connection) and the message is
    deferred, intact, rather than the delivery thread waiting forever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []

    def serve() -> None:
        connection, _ = listener.accept()
        held.append(connection)
        stream = connection.makefile("rb")
        connection.sendall(b"220 smarthost.contoso.com ESMTP\r\n")
        for line in stream:
            line = line.upper()  # smtplib sends its verbs in lower case
            if line.startswith(stall_after):
                return  # silent from here on, connection left open
            if line.startswith(b"EHLO"):
                connection.sendall(b"250-smarthost.contoso.com\r\n250 8BITMIME\r\n")
            elif line.startswith(b"DATA"):
                connection.sendall(b"354 go ahead\r\n")
            elif line == b".\r\n" or line.startswith((b"MAIL", b"RCPT")):
                connection.sendall(b"250 2.0.0 OK\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    queue = MessageQueue(tmp_path)
    item = queued(queue, clock)
    worker = DeliveryWorker(queue, SmarthostSettings(port=listener.getsockname()[1]), SETTINGS, FQDN,
                            clock=clock, timeout=0.5)
    started = time.monotonic()
    stats = worker.run_once()
    assert time.monotonic() - started < 4
    assert stats.connections == 1 and stats.delivered == 0 and stats.deferred == 3
    [waiting] = queue.list()
    assert waiting.attempts == 1 and waiting.last_error
    assert queue.load(item.queue_id)[1] == CONTENT
    for connection in held:
        connection.close()
    listener.close()
