"""Delivery of queued messages to the smarthost, on a thread of its own (never the SMTP event loop).

One SMTP transaction per queued message carries all of its remaining recipients. Each recipient's
outcome is the smarthost's reply: 2xx delivered, 5xx failed for good, anything else (4xx, a dropped or
refused connection, a timeout) tried again later after ``retry_interval``, doubled at every attempt up to
``max_retry_interval``. Recipients that failed for good, and those still pending once
``message_expiration`` has passed, are reported to the sender in one notification per attempt (none for
the null sender or for a notification).

A message queued by this process is handed to the worker (:meth:`DeliveryWorker.submit`) and sent at
once, without reading the queue directory; the directory is scanned for retries when the earliest one
is due, at every ``poll_interval``, and on :meth:`DeliveryWorker.wake`. One connection serves every
message while they keep coming (closed after :attr:`DeliveryWorker.KEEP_OPEN` idle seconds); commands
are pipelined when the smarthost offers PIPELINING (RFC 2920), those of a message already waiting
going out with the end of the previous message's content (one round trip per message instead of
two: a backlog drains about twice as fast over a network), and RSET is only sent after a
transaction that did not end with the content's reply.
"""

from __future__ import annotations

import logging
import math
import re
import smtplib
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..model.connector import QueueSettings, SmarthostSettings
from .dsn import EXPIRED_STATUS, FailedRecipient, build_dsn, notification_envelope, status_from_reply
from .store import MessageQueue, QueuedEnvelope

__all__ = ["DeliveryStats", "DeliveryWorker", "retry_delay"]

log = logging.getLogger("salmon_relayauth.delivery")

Reply = tuple[int, str]
"""A recipient's outcome: the reply code and text, or ``(0, description)`` when there was no reply."""

_Upcoming = Callable[[], tuple[QueuedEnvelope, bytes] | None]
"""The next message to deliver, if one is ready (see :meth:`DeliveryWorker._attempt`)."""

_BARE_LF = re.compile(rb"(?<!\r)\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_LF, _CRLF = b"\n", b"\r\n"
_CONNECTION_ERRORS = (OSError, smtplib.SMTPException)


@dataclass(slots=True)
class DeliveryStats:
    """What one run did: messages attempted, recipients by outcome, notifications queued, connections."""

    messages: int = 0
    delivered: int = 0
    deferred: int = 0
    failed: int = 0
    finished: int = 0
    notifications: int = 0
    connections: int = 0


def retry_delay(attempts: int, settings: QueueSettings) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: the interval, doubled each time, capped."""
    first = settings.retry_interval.total_seconds()
    ceiling = settings.max_retry_interval.total_seconds()
    return min(first * 2.0 ** min(max(attempts - 1, 0), 64), ceiling)


class _Dropped(Exception):
    """The connection failed during a transaction; ``results`` holds the replies obtained before."""

    def __init__(self, results: dict[str, Reply], reason: str, before_data: bool) -> None:
        super().__init__(reason)
        self.results, self.reason, self.before_data = results, reason, before_data


class _Smarthost:
    """One connection to the smarthost, opened on first use, reset (RSET) only when a transaction was
    left open, kept across runs of the background worker."""

    def __init__(self, worker: DeliveryWorker, stats: DeliveryStats) -> None:
        self._worker, self.stats = worker, stats
        self.smtp: smtplib.SMTP | None = None
        self.transactions = 0
        self.dirty = False  # a MAIL was accepted and the transaction did not end
        self.presented: str | None = None  # the message whose MAIL, RCPT and DATA went with the last content
        self.down: str | None = None

    def ready(self) -> tuple[smtplib.SMTP, bool]:
        """A connection in a clean state and whether it served an earlier message."""
        if self.smtp is not None and self.transactions:
            try:
                if not self.dirty or self.smtp.rset()[0] == 250:
                    self.dirty = False
                    self.transactions += 1
                    return self.smtp, True
            except _CONNECTION_ERRORS:
                pass
            self.discard()
        if self.smtp is None:
            self.smtp = self._worker._connect()
            self.stats.connections += 1
            self.transactions = 0
        self.transactions += 1
        return self.smtp, False

    def discard(self) -> None:
        self.presented = None
        if self.smtp is not None:
            self.smtp.close()
            self.smtp, self.transactions, self.dirty = None, 0, False

    def close(self) -> None:
        if self.presented is not None:  # the smarthost waits for content: a QUIT would be taken for it
            self.discard()
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except _CONNECTION_ERRORS:
                pass
            self.discard()


class DeliveryWorker:
    """Delivers due messages of ``queue`` to ``smarthost``; :meth:`start` runs it on a background thread.

    :param clock: the time source for due times, backoff and expiry (tests pass their own).
    :param timeout: seconds for each network operation with the smarthost.
    :param poll_interval: the longest sleep between runs (the ``queue`` command may change the queue).
    :param tls_context: for SSL/STARTTLS; by default the system's trusted CAs and host name checking.
    """

    def __init__(
        self,
        queue: MessageQueue,
        smarthost: SmarthostSettings,
        settings: QueueSettings,
        fqdn: str,
        clock: Callable[[], float] = time.time,
        *,
        timeout: float = 60.0,
        poll_interval: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        on_run: Callable[[DeliveryStats], None] | None = None,
    ) -> None:
        self.queue, self.smarthost, self.settings, self.fqdn = queue, smarthost, settings, fqdn
        self._clock, self._timeout, self._poll = clock, timeout, poll_interval
        self._tls_context = tls_context
        self._on_run = on_run  # told the outcome of every background run (metrics)
        self._wake = threading.Event()
        # Messages queued by this process, not yet delivered, with their envelope and content while
        # few are waiting (read from the queue again past that).
        self._handed: deque[tuple[str, tuple[QueuedEnvelope, bytes] | None]] = deque()
        self._scan_requested = False
        self._stopping = threading.Event()
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- the background thread -----------------------------------------------------------------

    # Seconds the background worker keeps an idle smarthost connection for the next message.
    KEEP_OPEN = 2.0

    def start(self) -> None:
        """Start delivering on a daemon thread (a no-op if already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="relayauth-delivery", daemon=True)
        self._thread.start()

    # Handed messages kept in memory at most; beyond, only their ids (a slow smarthost must not fill memory).
    MAX_HANDED_IN_MEMORY = 1000

    def submit(self, queue_id: str, envelope: QueuedEnvelope | None = None, content: bytes | None = None) -> None:
        """A message was just queued: deliver it now, without waiting for a scan of the queue (and
        without reading it back, when its envelope and content come along)."""
        loaded = (envelope, content) if envelope is not None and content is not None else None
        self._handed.append((queue_id, loaded if len(self._handed) < self.MAX_HANDED_IN_MEMORY else None))
        self._wake.set()

    def wake(self) -> None:
        """The queue changed in a way only a scan shows (a retry asked for): scan it now."""
        self._scan_requested = True
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        """Stop after the message in hand; what is not delivered stays queued."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("delivery thread still busy after %.0f s; it stops after the current message", timeout)
            else:
                self._thread = None

    def _loop(self) -> None:
        smarthost = _Smarthost(self, DeliveryStats())
        next_scan = 0.0
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    now = self._clock()
                    if self._scan_requested or now >= next_scan:
                        self._scan_requested = False
                        self._handed.clear()  # before the scan, which finds them all
                        scanned, next_due = self._scan(now)
                        due: list[tuple[str, tuple[QueuedEnvelope, bytes] | None]] = [(q, None) for q in scanned]
                        next_scan = min(next_due, now + self._poll)
                    else:
                        due = [self._handed.popleft() for _ in range(len(self._handed))]
                    smarthost.stats = stats = DeliveryStats()
                    smarthost.down = None
                    retry_at = self._deliver(due, smarthost, stats)
                    next_scan = min(next_scan, retry_at)
                    if self._on_run is not None and stats.messages:
                        self._on_run(stats)
                except Exception:
                    log.exception("delivery run failed; trying again at the next poll")
                    smarthost.discard()
                    next_scan = self._clock() + self._poll
                if self._handed or self._scan_requested:
                    continue
                if smarthost.smtp is not None:
                    if self._wake.wait(min(max(0.0, next_scan - self._clock()), self.KEEP_OPEN)):
                        continue
                    smarthost.close()
                self._wake.wait(max(0.0, next_scan - self._clock()))
        finally:
            smarthost.close()

    def _scan(self, now: float) -> tuple[list[str], float]:
        """The queue ids due now and when the next one not yet due will be."""
        due, later = [], math.inf
        for envelope in self.queue.list():
            if envelope.next_attempt <= now:
                due.append(envelope.queue_id)
            else:
                later = min(later, envelope.next_attempt)
        return due, later

    # -- one run ------------------------------------------------------------------------------

    def run_once(self) -> DeliveryStats:
        """Deliver every message due now, and the notifications this produces; returns what happened."""
        stats = DeliveryStats()
        smarthost = _Smarthost(self, stats)
        try:
            self._deliver([(envelope.queue_id, None) for envelope in self.queue.due(self._clock())], smarthost, stats)
        finally:
            smarthost.close()
        return stats

    def _deliver(
        self, items: Sequence[tuple[str, tuple[QueuedEnvelope, bytes] | None]], smarthost: _Smarthost, stats: DeliveryStats
    ) -> float:
        """Deliver these messages (ids, with envelope and content when already in hand) and the
        notifications they produce; returns the earliest retry time."""
        retry_at = math.inf
        with self._run_lock:
            work = deque(items)

            def upcoming() -> tuple[QueuedEnvelope, bytes] | None:
                """The next message, loaded, for its commands to go out with this one's end of data
                (one handed over while this run went on, when the run has no more)."""
                if self._stopping.is_set():
                    return None
                if not work:
                    try:
                        work.append(self._handed.popleft())
                    except IndexError:
                        return None
                queue_id, loaded = work[0]
                if loaded is None:
                    try:
                        loaded = self.queue.load(queue_id)
                    except KeyError:
                        return None
                    work[0] = (queue_id, loaded)
                return loaded

            while work and not self._stopping.is_set():
                queue_id, loaded = work.popleft()
                if loaded is not None and queue_id in self.queue:
                    envelope, content = loaded  # still queued (the queue command may have removed it)
                else:
                    try:
                        envelope, content = self.queue.load(queue_id)
                    except KeyError as error:
                        log.info("%s: no longer deliverable (%s)", queue_id, error)
                        continue  # if it was sent ahead, the next attempt or close() drops its connection
                stats.messages += 1
                results = self._attempt(smarthost, envelope, content, upcoming)
                notification, next_attempt = self._settle(envelope, content, results, stats)
                retry_at = min(retry_at, next_attempt)
                if notification is not None:
                    work.append((notification, None))
        log.debug("delivery run: %s", stats)
        return retry_at

    def _attempt(
        self, smarthost: _Smarthost, envelope: QueuedEnvelope, content: bytes, upcoming: _Upcoming | None = None
    ) -> dict[str, Reply]:
        """One transaction for all remaining recipients; retried once on a fresh connection if a reused
        one turns out dead before the content was sent. ``upcoming`` gives the next message, whose
        commands may go out with this one's end of data."""
        recipients = envelope.recipients
        if smarthost.down is not None:
            return {rcpt: (0, smarthost.down) for rcpt in recipients}
        if smarthost.presented not in (None, envelope.queue_id):  # another message's transaction is open
            smarthost.discard()
        for last_try in (False, True):
            try:
                smtp, reused = smarthost.ready()
            except _CONNECTION_ERRORS as error:
                smarthost.down = f"smarthost {self.smarthost.host}:{self.smarthost.port}: {_describe(error)}"
                log.warning("%s", smarthost.down)
                return {rcpt: (0, smarthost.down) for rcpt in recipients}
            presented, smarthost.presented = smarthost.presented == envelope.queue_id, None
            try:
                results, smarthost.dirty, smarthost.presented = _transaction(
                    smtp, envelope.sender, recipients, content, presented, upcoming
                )
            except _Dropped as dropped:
                smarthost.discard()
                if reused and dropped.before_data and not last_try:
                    continue
                return {rcpt: dropped.results.get(rcpt, (0, dropped.reason)) for rcpt in recipients}
            if any(code == 421 for code, _ in results.values()):
                smarthost.discard()
            return results
        raise AssertionError("unreachable")  # pragma: no cover

    def _settle(
        self, envelope: QueuedEnvelope, content: bytes, results: dict[str, Reply], stats: DeliveryStats
    ) -> tuple[str | None, float]:
        """Record the outcome: update or remove the message, queue a notification; returns its id and
        when the message is to be tried again (infinity when it left the queue)."""
        now = self._clock()
        qid = envelope.queue_id
        failures: list[FailedRecipient] = []
        deferred: list[str] = []
        for rcpt in envelope.recipients:
            code, text = results[rcpt]
            reply = f"{code} {text}" if code else ""
            if 200 <= code < 300:
                stats.delivered += 1
                log.info("%s: delivered <%s> -> <%s>: %s", qid, envelope.sender, rcpt, reply)
            elif 500 <= code < 600:
                stats.failed += 1
                failures.append(FailedRecipient(rcpt, status_from_reply(code, text), reply))
                log.warning("%s: failed <%s> -> <%s>: %s", qid, envelope.sender, rcpt, reply)
            else:
                deferred.append(rcpt)
        expires = envelope.received_at + self.settings.message_expiration.total_seconds()
        last_error = next((_reply_text(results[rcpt]) for rcpt in deferred), "")
        if deferred and now >= expires:
            for rcpt in deferred:
                code, text = results[rcpt]
                reply, detail = (f"{code} {text}", "") if code else ("", text)
                failures.append(FailedRecipient(rcpt, EXPIRED_STATUS, reply, detail))
                log.warning("%s: expired <%s> -> <%s>: %s", qid, envelope.sender, rcpt, reply or detail)
            stats.failed += len(deferred)
            deferred = []
        notification = self._notify(envelope, content, failures, now, stats) if failures else None
        next_attempt = math.inf
        try:
            if deferred:
                attempts = envelope.attempts + 1
                next_attempt = min(now + retry_delay(attempts, self.settings), max(expires, now))
                for rcpt in deferred:
                    log.info("%s: deferred <%s> -> <%s> (attempt %d): %s", qid, envelope.sender, rcpt, attempts,
                             _reply_text(results[rcpt]))
                stats.deferred += len(deferred)
                self.queue.update(replace(envelope, recipients=tuple(deferred), attempts=attempts,
                                          next_attempt=next_attempt, last_error=last_error))
            else:
                self.queue.remove(qid, state=envelope.attempts > 0 or envelope.next_attempt > 0)
                stats.finished += 1
        except KeyError:
            log.info("%s: removed from the queue during delivery", qid)
        return notification, next_attempt

    def _notify(
        self, envelope: QueuedEnvelope, content: bytes, failures: Sequence[FailedRecipient], now: float,
        stats: DeliveryStats,
    ) -> str | None:
        """Queue one notification about ``failures`` to the sender, unless none is due."""
        if not envelope.sender:
            log.info("%s: no notification, the sender is null", envelope.queue_id)
            return None
        if envelope.is_notification:
            log.warning("%s: undeliverable notification to <%s> dropped", envelope.queue_id, envelope.recipients[0])
            return None
        queue_id = self.queue.new_id()
        body = build_dsn(envelope, content, failures, fqdn=self.fqdn, now=now, remote_mta=self.smarthost.host)
        self.queue.enqueue(notification_envelope(envelope, queue_id, now), body)
        stats.notifications += 1
        log.info("%s: notification %s queued to <%s> for %d recipient(s)", envelope.queue_id, queue_id,
                 envelope.sender, len(failures))
        return queue_id

    def _connect(self) -> smtplib.SMTP:
        """A connection to the smarthost, greeted, secured and logged in as configured."""
        host = self.smarthost
        smtp: smtplib.SMTP
        if host.ssl:
            smtp = smtplib.SMTP_SSL(host.host, host.port, local_hostname=self.fqdn, timeout=self._timeout,
                                    context=self._context())
        else:
            smtp = smtplib.SMTP(host.host, host.port, local_hostname=self.fqdn, timeout=self._timeout)
        try:
            smtp.ehlo_or_helo_if_needed()
            if host.starttls and not host.ssl:
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if host.username:
                smtp.login(host.username, host.password or "")
            if smtp.sock is not None and not isinstance(smtp.sock, ssl.SSLSocket):
                _time_out_in_the_kernel(smtp.sock, self._timeout)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context()
        return self._tls_context


def _time_out_in_the_kernel(sock: socket.socket, timeout: float) -> None:
    """Make a plain connection blocking, with the kernel enforcing ``timeout`` on every send and
    receive. A Python socket timeout costs a ``poll`` before every call, each of which lets the
    event loop's thread and this one trade the interpreter lock. An expired receive reads as the
    connection closing, an expired send as an ``OSError``: the attempt fails and is retried."""
    seconds = max(timeout, 0.001)
    value = struct.pack("@ll", int(seconds), int((seconds % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
    sock.settimeout(None)


def _transaction(
    smtp: smtplib.SMTP,
    sender: str,
    recipients: Sequence[str],
    content: bytes,
    presented: bool = False,
    upcoming: _Upcoming | None = None,
) -> tuple[dict[str, Reply], bool, str | None]:
    """MAIL, one RCPT per recipient, DATA; the reply that decides each recipient's outcome, whether a
    transaction was left open (MAIL accepted, no content sent: RSET before the next), and the queue
    id of the next message if its commands went out with this one's end of data (RFC 2920 lets a
    group start with the content). ``presented``: this message's commands went out that way already."""
    commands, smtp.command_encoding = _envelope_commands(smtp, sender, recipients, content)
    results: dict[str, Reply] = {}
    before_data = True
    try:
        if smtp.has_extn("pipelining"):
            # RFC 2920: the envelope and DATA in one write, then their replies in order.
            if not presented:
                smtp.send(_pipelined(commands, smtp.command_encoding))
            replies = [_reply(smtp) for _ in commands]
            data_reply = _reply(smtp)
        else:
            replies = [_reply(smtp, commands[0])]
            if 200 <= replies[0][0] < 300:
                replies += [_reply(smtp, command) for command in commands[1:]]
            data_reply = None
        mail = replies[0]
        mail_accepted = 200 <= mail[0] < 300
        accepted = []
        for rcpt, reply in zip(recipients, replies[1:]):
            if 200 <= reply[0] < 300 and mail_accepted:
                accepted.append(rcpt)
            else:
                results[rcpt] = reply if mail_accepted else mail
        if data_reply is None and accepted:
            data_reply = _reply(smtp, "DATA")
        if data_reply is not None and data_reply[0] == 354:
            # With nothing accepted (a server answering 354 all the same) an empty message ends
            # DATA; the server discards it (RFC 2920 3.1).
            before_data = False
            stuffed = _LEADING_DOT.sub(b"..", _BARE_LF.sub(b"\r\n", content)) if accepted else b""
            if stuffed and not stuffed.endswith(b"\r\n"):
                stuffed += b"\r\n"
            following = upcoming() if upcoming is not None and smtp.has_extn("pipelining") else None
            next_commands = b""
            if following is not None:
                next_envelope, next_content = following
                next_commands = _pipelined(
                    *_envelope_commands(smtp, next_envelope.sender, next_envelope.recipients, next_content)
                )
            smtp.send(stuffed + b".\r\n" + next_commands)
            final = _reply(smtp)
            results.update((rcpt, final) for rcpt in accepted)
            return results, False, following[0].queue_id if following is not None else None
        if not mail_accepted:
            return {rcpt: mail for rcpt in recipients}, False, None
        if accepted and data_reply is not None:  # DATA refused: every accepted recipient's answer
            results.update((rcpt, data_reply) for rcpt in accepted)
        return results, True, None
    except _CONNECTION_ERRORS as error:
        raise _Dropped(results, _describe(error), before_data) from error


def _envelope_commands(
    smtp: smtplib.SMTP, sender: str, recipients: Sequence[str], content: bytes
) -> tuple[list[str], str]:
    """MAIL (with the parameters the smarthost takes) and one RCPT per recipient, and their encoding.
    SIZE is that of the content as sent, every bare LF made CRLF, counted without converting it."""
    options = ""
    if smtp.has_extn("size"):
        options += f" SIZE={len(content) + content.count(_LF) - content.count(_CRLF)}"
    if not content.isascii() and smtp.has_extn("8bitmime"):
        options += " BODY=8BITMIME"
    unicode = not all(address.isascii() for address in (sender, *recipients))
    if unicode and smtp.has_extn("smtputf8"):
        options += " SMTPUTF8"
    commands = [f"MAIL FROM:<{sender}>{options}"] + [f"RCPT TO:<{rcpt}>" for rcpt in recipients]
    return commands, "utf-8" if unicode else "ascii"


def _pipelined(commands: list[str], encoding: str) -> bytes:
    """The commands and DATA, as one write."""
    return "".join(f"{command}\r\n" for command in [*commands, "DATA"]).encode(encoding)


def _reply(smtp: smtplib.SMTP, command: str | None = None) -> Reply:
    """Send ``command`` (if given) and read its reply."""
    if command is not None:
        smtp.putcmd(command)
    code, raw = smtp.getreply()
    return code, _text(raw)


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())


def _reply_text(reply: Reply) -> str:
    code, text = reply
    return f"{code} {text}" if code else text


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{error.smtp_code} {_text(error.smtp_error)}"
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
