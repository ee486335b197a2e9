"""``salmon-relayauth serve CONFIG``: run the relay a configuration describes, in the foreground.

It is the same :class:`~salmon_relayauth.receiver.RelayReceiver` a Salmon project sets as
``settings.receiver``, routing through Salmon's Router with the built-in relay handler. SIGTERM or
Ctrl-C stops it cleanly: open sessions get time to finish (then ``421``), queued mail stays queued.
SIGHUP (or ``salmon-relayauth reload --pid-file FILE``) re-reads the configuration: a valid one takes
effect for new connections, an invalid one is refused with its errors logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..config.problems import ConfigError
from ..plugins import PluginLoadError
from ..salmon_handlers import use_handlers

__all__ = ["register", "run"]

RELAY_HANDLER = "salmon_relayauth.handlers.relay"


def register(verbs: Any) -> None:
    parser = verbs.add_parser("serve", help="run the relay in the foreground", description=__doc__)
    parser.add_argument("config", metavar="CONFIG", help="path to the TOML configuration")
    parser.add_argument("--queue", metavar="DIR", help="queue directory (default: [queue] directory of the config)")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS", help="time open sessions get at shutdown")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--pid-file", metavar="FILE", help="write the process id here (for `salmon-relayauth reload`)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..receiver import RelayReceiver

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    use_handlers([RELAY_HANDLER])
    try:
        receiver = RelayReceiver(args.config, queue_dir=args.queue, shutdown_grace=args.grace)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except PluginLoadError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    reloading = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    def reload_requested(*_: object) -> None:
        reloading.set()
        stopping.set()  # wakes the main thread, which reloads and goes back to waiting

    signal.signal(signal.SIGHUP, reload_requested)
    try:
        receiver.start()
    except OSError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    print(f"salmon-relayauth: relaying on {', '.join(f'{h}:{p}' for h, p in receiver.addresses)}", flush=True)
    while True:
        stopping.wait()
        if not reloading.is_set():
            break
        reloading.clear()
        stopping.clear()
        problems = receiver.reload()
        print("salmon-relayauth: " + ("reload refused, see the log" if problems else "configuration reloaded"), flush=True)
    receiver.stop()
    if args.pid_file:
        Path(args.pid_file).unlink(missing_ok=True)
    return 0
