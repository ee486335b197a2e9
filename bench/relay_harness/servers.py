"""The comparison servers, each run in a process of its own by ``bench/relay``:

``servers.py salmon --port P --dir D [--backlog N]``
    Salmon's stock ``salmon.server.SMTPReceiver`` with Salmon's stock queue handler
    (``salmon.handlers.queue``: every message pushed to the Maildir ``run/queue`` under D, no fsync).
    The receiver listens with Salmon's backlog of 5 unless ``--backlog`` re-issues ``listen()``.
``servers.py aiosmtpd --port P --dir D [--no-fsync]``
    Bare aiosmtpd (``aiosmtpd.controller.Controller``) whose handler writes each message into the
    Maildir D the way a careful Maildir writer does: ``tmp/`` file, fsync, rename into ``new/``,
    fsync of ``new/``; on the event loop, as a bare handler would.

Both print ``ready`` on stdout when listening and stop on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any


def serve_salmon(port: int, directory: Path, backlog: int | None) -> None:
    from salmon.routing import Router
    from salmon.server import SMTPReceiver

    os.chdir(directory)  # salmon.handlers.queue writes to run/queue relative to the working directory
    (directory / "run").mkdir(exist_ok=True)  # as in a project made by ``salmon gen``
    # salmon.handlers.queue routes "like" salmon.handlers.log (which it expects to be loaded first).
    Router.load(["salmon.handlers.log", "salmon.handlers.queue"])
    receiver = SMTPReceiver("127.0.0.1", port)
    if backlog is not None:
        receiver.socket.listen(backlog)  # listen() again on a listening socket changes its backlog
    receiver.start()
    print("ready", flush=True)
    _wait_for_sigterm()
    os._exit(0)  # the asyncore loop thread has no stop; the process just ends


class _MaildirHandler:
    def __init__(self, directory: Path, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        for sub in ("tmp", "new", "cur"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self.count = 0
        self.new_fd = os.open(directory / "new", os.O_RDONLY)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        name = f"{time.time_ns()}.P{os.getpid()}Q{self.count}.{self.host}"
        temp = self.directory / "tmp" / name
        head = f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {', '.join(envelope.rcpt_tos)}\r\n".encode()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            data = memoryview(head + envelope.original_content)
            while data:
                data = data[os.write(fd, data) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, self.directory / "new" / name)
        if self.fsync:
            os.fsync(self.new_fd)
        return "250 2.0.0 OK stored"


def serve_aiosmtpd(port: int, directory: Path, fsync: bool) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(_MaildirHandler(directory, fsync), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    _wait_for_sigterm()
    controller.stop()


def _wait_for_sigterm() -> None:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("server", choices=["salmon", "aiosmtpd"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--backlog", type=int)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    if args.server == "salmon":
        serve_salmon(args.port, args.dir, args.backlog)
    else:
        serve_aiosmtpd(args.port, args.dir, not args.no_fsync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
