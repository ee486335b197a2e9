"""``salmon-relayauth sink --maildir DIR``: a local smarthost storing every message it receives."""

from __future__ import annotations

import argparse
import signal
import threading
from typing import Any

__all__ = ["register", "run"]


def register(verbs: Any) -> None:
    parser = verbs.add_parser("sink", help="run a local smarthost that stores mail in a Maildir", description=__doc__)
    parser.add_argument("--maildir", required=True, metavar="DIR", help="where to store messages")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2526)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..sink import MaildirSink

    sink = MaildirSink(args.maildir, args.host, args.port)
    sink.start()
    print(f"salmon-relayauth sink: storing mail for {args.host}:{args.port} in {args.maildir}", flush=True)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()
    sink.stop()
    return 0
