"""``salmon-relayauth reload``: ask a running relay to re-read its configuration.

For ``salmon-relayauth serve --pid-file FILE`` this sends SIGHUP; for a relay started by
``salmon start`` (whose ``salmon stop`` uses SIGHUP to stop) use ``--signal USR1`` with Salmon's pid
file (``run/smtp.pid``). Give ``--config`` to check the file first: nothing is sent if it has errors.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ..config.loader import read_config

__all__ = ["register", "run"]


def register(verbs: Any) -> None:
    parser = verbs.add_parser("reload", help="make a running relay re-read its configuration", description=__doc__)
    parser.add_argument("--pid-file", required=True, metavar="FILE")
    parser.add_argument("--signal", choices=["HUP", "USR1"], default="HUP")
    parser.add_argument("--config", metavar="CONFIG", help="check this file first")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.config:
        result = read_config(args.config)
        if result.errors:
            for problem in result.errors:
                print(problem, file=sys.stderr)
            print("reload: not sent, the file has errors", file=sys.stderr)
            return 1
    try:
        pid = int(Path(args.pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError) as error:
        print(f"reload: cannot read a process id from {args.pid_file}: {error}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, getattr(signal, f"SIG{args.signal}"))
    except OSError as error:
        print(f"reload: cannot signal process {pid}: {error.strerror}", file=sys.stderr)
        return 1
    print(f"reload: sent SIG{args.signal} to {pid}")
    return 0
