"""``salmon-relayauth queue list|show|retry|delete QUEUE_DIR``: look after the outbound queue.

``retry`` makes messages due now; a running relay picks them up at its next poll. The command never
recovers the directory (a running relay owns the files it is writing). Exit status: 0 done, 1 a named
message is not queued, 2 bad arguments or no such directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..queue.store import MessageQueue, QueuedEnvelope

__all__ = ["register", "run"]


def register(verbs: Any) -> None:
    """Add the ``queue`` verb and its actions to the ``salmon-relayauth`` sub-command parser."""
    parser: argparse.ArgumentParser = verbs.add_parser(
        "queue", help="list, retry and delete queued messages", description=__doc__
    )
    parser.set_defaults(run=run)
    actions = parser.add_subparsers(dest="queue_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the queued messages, oldest first")
    listing.add_argument("directory", metavar="QUEUE_DIR", type=Path, help="the queue directory")
    listing.add_argument("--json", action="store_true", help="print the envelopes as JSON")

    show = actions.add_parser("show", help="one message's envelope and headers")
    show.add_argument("directory", metavar="QUEUE_DIR", type=Path, help="the queue directory")
    show.add_argument("ids", metavar="ID", nargs="+", help="queue ids")

    retry = actions.add_parser("retry", help="make messages due now")
    retry.add_argument("directory", metavar="QUEUE_DIR", type=Path, help="the queue directory")
    retry.add_argument("ids", metavar="ID", nargs="*", help="queue ids")
    retry.add_argument("--all", action="store_true", help="every queued message")

    delete = actions.add_parser("delete", help="delete messages without delivering them or notifying anyone")
    delete.add_argument("directory", metavar="QUEUE_DIR", type=Path, help="the queue directory")
    delete.add_argument("ids", metavar="ID", nargs="+", help="queue ids")


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"{directory}: no such queue directory", file=sys.stderr)
        return 2
    queue = MessageQueue(directory, recover=False)
    action = args.queue_action
    if action == "list":
        return _list(queue, args.json)
    if action == "show":
        return _show(queue, args.ids)
    if action == "retry":
        if bool(args.ids) == bool(args.all):
            print("queue retry: name queue ids or give --all (not both)", file=sys.stderr)
            return 2
        return _retry(queue, None if args.all else args.ids)
    return _delete(queue, args.ids)


def _list(queue: MessageQueue, as_json: bool) -> int:
    envelopes = queue.list()
    if as_json:
        print(json.dumps([envelope.to_json() for envelope in envelopes], indent=2))
        return 0
    now = time.time()
    header = ("ID", "AGE", "SENDER", "RECIPIENTS", "ATTEMPTS", "NEXT ATTEMPT", "LAST ERROR")
    rows = [header] + [_row(envelope, now) for envelope in envelopes]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print(f"{len(envelopes)} message(s) queued")
    return 0


def _row(envelope: QueuedEnvelope, now: float) -> tuple[str, ...]:
    recipients = ", ".join(envelope.recipients[:2])
    if len(envelope.recipients) > 2:
        recipients += f" (+{len(envelope.recipients) - 2})"
    due = "now" if envelope.next_attempt <= now else f"in {_span(envelope.next_attempt - now)}"
    error = envelope.last_error if len(envelope.last_error) <= 60 else envelope.last_error[:59] + "…"
    sender = f"<{envelope.sender}>" + (" (notification)" if envelope.is_notification else "")
    return (envelope.queue_id, _span(now - envelope.received_at), sender, recipients, str(envelope.attempts),
            due, error)


def _show(queue: MessageQueue, ids: list[str]) -> int:
    status = 0
    for queue_id in ids:
        try:
            envelope, content = queue.load(queue_id)
        except KeyError as error:
            print(f"queue show: {error.args[0]}", file=sys.stderr)
            status = 1
            continue
        for key, value in envelope.to_json().items():
            print(f"{key}: {', '.join(value) if isinstance(value, list | tuple) else value}")
        end = content.find(b"\r\n\r\n")
        headers = content[: end if end >= 0 else len(content)]
        print(f"size: {len(content)}\n\n{headers.decode('utf-8', 'replace')}\n")
    return status


def _retry(queue: MessageQueue, ids: list[str] | None) -> int:
    status, done = 0, 0
    for queue_id in ids if ids is not None else [envelope.queue_id for envelope in queue.list()]:
        try:
            envelope = queue.envelope(queue_id)
            queue.update(replace(envelope, next_attempt=0.0))
        except KeyError as error:
            print(f"queue retry: {error.args[0]}", file=sys.stderr)
            status = 1
            continue
        done += 1
    print(f"{done} message(s) due now")
    return status


def _delete(queue: MessageQueue, ids: list[str]) -> int:
    status, done = 0, 0
    for queue_id in ids:
        try:
            queue.remove(queue_id)
        except KeyError as error:
            print(f"queue delete: {error.args[0]}", file=sys.stderr)
            status = 1
            continue
        done += 1
    print(f"{done} message(s) deleted")
    return status


def _span(seconds: float) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
