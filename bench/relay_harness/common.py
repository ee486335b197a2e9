"""Small shared pieces: free loopback ports, waiting for a listener, the test message, and the
process-tree meter (CPU seconds and peak RSS of a target while a run lasts)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def which(name: str) -> str | None:
    """A program on PATH or in the sbin directories (Postfix's test tools live in /usr/sbin)."""
    return shutil.which(name) or shutil.which(name, path=SBIN_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_banner(host: str, port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> str:
    """Connect until the server greets (the banner line); raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the target process exited during start-up")
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                banner = sock.makefile("rb").readline().decode("ascii", "replace").strip()
                try:
                    sock.sendall(b"QUIT\r\n")
                    sock.recv(512)
                except OSError:
                    pass
                if banner.startswith("220"):
                    return banner
                last = RuntimeError(f"banner {banner!r}")
        except OSError as error:
            last = error
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not greet within {timeout:.0f} s ({last})")


def make_message(path: Path, size: int = 2000) -> int:
    """Write a plain-text message for ``smtp-source -F`` (LF line ends; smtp-source sends CRLF) that
    is exactly ``size`` bytes on the wire; returns that size."""
    headers = [
        "Received: from app01.contoso.com (app01.contoso.com [192.168.5.10]) by relay.contoso.com "
        "with ESMTP id 4F2A9C1D; Tue, 11 Jun 2024 09:15:02 +0000",
        "Received: by app01.contoso.com (Postfix, from userid 1001) id 1D4F2A9C; Tue, 11 Jun 2024 09:15:00 +0000",
        "From: Printer <printer@contoso.com>",
        "To: Kate <kate@fabrikam.com>",
        "Subject: Nightly report: 42 jobs, 0 failures",
        "Date: Tue, 11 Jun 2024 09:15:00 +0000",
        "Message-ID: <20240611091500.1D4F2A9C@app01.contoso.com>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ]
    lines = list(headers)
    wire = sum(len(line) + 2 for line in lines)
    number = 0
    while True:
        line = f"job-{number:04d} finished OK in 12.3 s; 1,024 rows exported to the warehouse."
        if wire + len(line) + 2 > size:
            break
        lines.append(line)
        wire += len(line) + 2
        number += 1
    rest = size - wire - 2  # one last line fills the message to the byte
    if rest >= 0:
        lines.append("x" * rest)
        wire += rest + 2
    else:  # cannot happen with 60+ byte lines, but keep the size honest
        lines[-1] = lines[-1][: len(lines[-1]) + rest + 2]
        wire = size
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return wire


@dataclass
class Usage:
    cpu_seconds: float
    peak_rss: int  # bytes, summed over the process tree
    peak_pss: int  # bytes: proportional set size summed over the tree, taken at the RSS peaks
    processes: int  # most processes seen at once


class TreeMeter:
    """CPU time and resident memory of a process and all its descendants.

    CPU: user + system of every live process of the tree, plus the times of children each one has
    reaped (so short-lived Postfix daemons that exit during a run are counted through their
    parent). RSS: sampled every ``interval`` seconds by a thread, summed over the tree (pages
    shared between processes, such as libraries, count once per process). PSS (each shared page
    divided among the processes mapping it, so a sum over a tree is fair) costs ~1 ms a process to
    read, so it is read only when the RSS sum reaches a new high (1% above the last one read)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak_rss = 0
        self.peak_pss = 0
        self._pss_at = 0
        self.max_processes = 0
        self._cpu_start = 0.0

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu(self) -> float:
        total = 0.0
        for process in self.tree():
            try:
                t = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def rss(self) -> int:
        total = 0
        processes = self.tree()
        for process in processes:
            try:
                total += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        self.max_processes = max(self.max_processes, len(processes))
        return total

    def pss(self) -> int:
        total = 0
        for process in self.tree():
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, AttributeError):
                continue
        return total

    def _observe(self) -> None:
        rss = self.rss()
        self.peak_rss = max(self.peak_rss, rss)
        if rss > self._pss_at * 1.01:
            self._pss_at = rss
            self.peak_pss = max(self.peak_pss, self.pss())

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._observe()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self.peak_rss = self.peak_pss = self._pss_at = 0
        self._observe()
        self._cpu_start = self.cpu()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="tree-meter", daemon=True)
        self._thread.start()

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._observe()
        return Usage(self.cpu() - self._cpu_start, self.peak_rss, self.peak_pss, self.max_processes)
