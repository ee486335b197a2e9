"""Delivery of queued messages to the smarthost, on a thread of its own (never the SMTP event loop).

One SMTP transaction per queued message carries all of its remaining recipients. Each recipient's
outcome is the smarthost's reply: 2xx delivered, 5xx failed for good, anything else (4xx, a dropped or
refused connection, a timeout) tried again later after ``retry_interval``, doubled at every attempt up to
``max_retry_interval``. Recipients that failed for good, and those still pending once
``message_expiration`` has passed, are reported to the sender in one notification per attempt (none for
the null sender or for a notification). One connection serves every message due in a run.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
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

_BARE_LF = re.compile(rb"(?<!\r)\n")
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
    """One connection to the smarthost, opened on first use and reset (RSET) between messages."""

    def __init__(self, worker: DeliveryWorker, stats: DeliveryStats) -> None:
        self._worker, self._stats = worker, stats
        self.smtp: smtplib.SMTP | None = None
        self.transactions = 0
        self.down: str | None = None

    def ready(self) -> tuple[smtplib.SMTP, bool]:
        """A connection in a clean state and whether it served an earlier message."""
        if self.smtp is not None and self.transactions:
            try:
                if self.smtp.rset()[0] == 250:
                    self.transactions += 1
                    return self.smtp, True
            except _CONNECTION_ERRORS:
                pass
            self.discard()
        if self.smtp is None:
            self.smtp = self._worker._connect()
            self._stats.connections += 1
            self.transactions = 0
        self.transactions += 1
        return self.smtp, False

    def discard(self) -> None:
        if self.smtp is not None:
            self.smtp.close()
            self.smtp, self.transactions = None, 0

    def close(self) -> None:
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
        self._stopping = threading.Event()
        self._run_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- the background thread -----------------------------------------------------------------

    def start(self) -> None:
        """Start delivering on a daemon thread (a no-op if already running)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="relayauth-delivery", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A message was queued: run soon instead of at the next poll."""
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
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                stats = self.run_once()
                if self._on_run is not None:
                    self._on_run(stats)
            except Exception:
                log.exception("delivery run failed; trying again at the next poll")
            self._wake.wait(self._sleep_time())

    def _sleep_time(self) -> float:
        try:
            pending = [envelope.next_attempt for envelope in self.queue.list()]
        except OSError:
            return self._poll
        if not pending:
            return self._poll
        return max(0.0, min(min(pending) - self._clock(), self._poll))

    # -- one run ------------------------------------------------------------------------------

    def run_once(self) -> DeliveryStats:
        """Deliver every message due now, and the notifications this produces; returns what happened."""
        with self._run_lock:
            stats = DeliveryStats()
            smarthost = _Smarthost(self, stats)
            work = deque(envelope.queue_id for envelope in self.queue.due(self._clock()))
            try:
                while work and not self._stopping.is_set():
                    queue_id = work.popleft()
                    try:
                        envelope, content = self.queue.load(queue_id)
                    except KeyError as error:
                        log.info("%s: no longer deliverable (%s)", queue_id, error)
                        continue
                    stats.messages += 1
                    results = self._attempt(smarthost, envelope, content)
                    notification = self._settle(envelope, content, results, stats)
                    if notification is not None:
                        work.append(notification)
            finally:
                smarthost.close()
            log.debug("delivery run: %s", stats)
            return stats

    def _attempt(self, smarthost: _Smarthost, envelope: QueuedEnvelope, content: bytes) -> dict[str, Reply]:
        """One transaction for all remaining recipients; retried once on a fresh connection if a reused
        one turns out dead before the content was sent."""
        recipients = envelope.recipients
        if smarthost.down is not None:
            return {rcpt: (0, smarthost.down) for rcpt in recipients}
        for last_try in (False, True):
            try:
                smtp, reused = smarthost.ready()
            except _CONNECTION_ERRORS as error:
                smarthost.down = f"smarthost {self.smarthost.host}:{self.smarthost.port}: {_describe(error)}"
                log.warning("%s", smarthost.down)
                return {rcpt: (0, smarthost.down) for rcpt in recipients}
            try:
                results = _transaction(smtp, envelope.sender, recipients, content)
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
    ) -> str | None:
        """Record the outcome: update or remove the message, queue a notification; returns its id."""
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
                self.queue.remove(qid)
                stats.finished += 1
        except KeyError:
            log.info("%s: removed from the queue during delivery", qid)
        return notification

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
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _context(self) -> ssl.SSLContext:
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context()
        return self._tls_context


def _transaction(smtp: smtplib.SMTP, sender: str, recipients: Sequence[str], content: bytes) -> dict[str, Reply]:
    """MAIL, one RCPT per recipient, DATA; the reply that decides each recipient's outcome."""
    data = _BARE_LF.sub(b"\r\n", content)
    options = ""
    if smtp.has_extn("size"):
        options += f" SIZE={len(data)}"
    if not data.isascii() and smtp.has_extn("8bitmime"):
        options += " BODY=8BITMIME"
    unicode = not all(address.isascii() for address in (sender, *recipients))
    if unicode and smtp.has_extn("smtputf8"):
        options += " SMTPUTF8"
    smtp.command_encoding = "utf-8" if unicode else "ascii"
    results: dict[str, Reply] = {}
    before_data = True
    try:
        code, text = _command(smtp, "MAIL", f"FROM:<{sender}>{options}")
        if not 200 <= code < 300:
            return {rcpt: (code, text) for rcpt in recipients}
        accepted = []
        for rcpt in recipients:
            reply = _command(smtp, "RCPT", f"TO:<{rcpt}>")
            if 200 <= reply[0] < 300:
                accepted.append(rcpt)
            else:
                results[rcpt] = reply
        if accepted:
            before_data = False
            raw: bytes | str
            try:
                code, raw = smtp.data(data)
            except smtplib.SMTPDataError as error:
                code, raw = error.smtp_code, error.smtp_error
            for rcpt in accepted:
                results[rcpt] = (code, _text(raw))
        return results
    except _CONNECTION_ERRORS as error:
        raise _Dropped(results, _describe(error), before_data) from error


def _command(smtp: smtplib.SMTP, verb: str, argument: str) -> Reply:
    code, raw = smtp.docmd(verb, argument)
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
