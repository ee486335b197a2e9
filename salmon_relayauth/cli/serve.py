"""``salmon-relayauth serve CONFIG``: run the relay a configuration describes, in the foreground.

It is the same :class:`~salmon_relayauth.receiver.RelayReceiver` a Salmon project sets as
``settings.receiver``, routing through Salmon's Router with the built-in relay handler. SIGTERM or
Ctrl-C stops it cleanly: open sessions get time to finish (then ``421``), queued mail stays queued.
SIGHUP (or ``salmon-relayauth reload --pid-file FILE``) re-reads the configuration: a valid one takes
effect for new connections, an invalid one is refused with its errors logged.

With ``[server] workers`` above 1 (or ``--workers``), this process supervises that many worker
processes serving the same sockets (see :mod:`salmon_relayauth.workers`); the signals above go to it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..config.loader import read_config
from ..config.problems import ConfigError
from ..model.connector import MAX_WORKERS, ServerSettings
from ..plugins import PluginLoadError
from ..salmon_handlers import use_handlers
from ..workers import Supervisor, block_stop_signals, serve_until_stopped

__all__ = ["register", "run"]

RELAY_HANDLER = "salmon_relayauth.handlers.relay"


def register(verbs: Any) -> None:
    parser = verbs.add_parser("serve", help="run the relay in the foreground", description=__doc__)
    parser.add_argument("config", metavar="CONFIG", help="path to the TOML configuration")
    parser.add_argument("--queue", metavar="DIR", help="queue directory (default: [queue] directory of the config)")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS", help="time open sessions get at shutdown")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--pid-file", metavar="FILE", help="write the process id here (for `salmon-relayauth reload`)")
    parser.add_argument("--workers", type=_worker_count, metavar="N",
                        help="worker processes, a number or 'auto' (default: [server] workers, itself 1 by default)")
    parser.set_defaults(run=run)


def _worker_count(text: str) -> int:
    """``--workers``: 0 stands for auto (one per CPU)."""
    if text == "auto":
        return 0
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of processes or 'auto'") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{count} is not between 1 and {MAX_WORKERS}")
    return count


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")
    use_handlers([RELAY_HANDLER])
    try:
        config = read_config(Path(args.config)).config
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    workers = args.workers if args.workers is not None else (config.server.workers if config is not None else 1)
    count = ServerSettings(workers=workers).worker_count
    if count > 1:
        return _run_workers(args, count)
    return _run_single(args)


def _run_single(args: argparse.Namespace) -> int:
    from ..receiver import RelayReceiver

    try:
        receiver = RelayReceiver(args.config, queue_dir=args.queue, shutdown_grace=args.grace)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except PluginLoadError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    block_stop_signals()  # before start(): its threads inherit the mask, the signals come to this one
    try:
        receiver.start()
    except OSError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    _write_pid(args)
    print(f"salmon-relayauth: relaying on {', '.join(f'{h}:{p}' for h, p in receiver.addresses)}", flush=True)
    try:
        serve_until_stopped(receiver)
    finally:
        _remove_pid(args)
    return 0


def _run_workers(args: argparse.Namespace, count: int) -> int:
    supervisor = Supervisor(args.config, count, queue_dir=args.queue, grace=args.grace)
    try:
        addresses = supervisor.prepare()
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    except (PluginLoadError, OSError) as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    _write_pid(args)
    print(f"salmon-relayauth: relaying on {', '.join(f'{h}:{p}' for h, p in addresses)} with {count} workers", flush=True)
    try:
        return supervisor.run()
    finally:
        _remove_pid(args)


def _write_pid(args: argparse.Namespace) -> None:
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()}\n")


def _remove_pid(args: argparse.Namespace) -> None:
    if args.pid_file:
        Path(args.pid_file).unlink(missing_ok=True)
