"""The benchmark's targets. Each runs in processes of its own, on a free loopback port, started
before and stopped after every run, with a fresh queue or Maildir:

``relay-full``   this project's relay (``python -m salmon_relayauth serve``) with the sample
                 configuration: Default Frontend + Anonymous Relay (which also covers 127.0.0.1, the
                 address smtp-source connects from), accepted domains, header firewall, Exchange's
                 default connection limits, the message-rate limit raised so that it is checked but
                 never reached, tarpit 0, durable queue with fsync, smarthost = smtp-sink.
``relay-allow``  the same relay, queue, smarthost and logs with an allow-everything policy: one
                 connector, ExternalAuthoritative + ExchangeServers over 127.0.0.0/8, no limits, its
                 protocol logging level that of the sample's Anonymous Relay (Verbose).
``salmon``       Salmon's stock ``SMTPReceiver`` (backlog 5) with Salmon's queue handler (Maildir).
``salmon-b128``  the same with the listen backlog raised to 128 (not in the default set).
``aiosmtpd``     bare aiosmtpd writing a Maildir with fsync.
``postfix``      Postfix as an anonymous relay for 127.0.0.0/8 to the same kind of smtp-sink.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path
from typing import BinaryIO

import tomlkit

from .common import wait_banner
from .postfix import PostfixInstance

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_app" / "config" / "relay.toml"
SERVERS = Path(__file__).resolve().parent / "servers.py"
RATE_LIMIT = 100_000_000  # messages a minute: the limit is charged on every MAIL, never reached

SENDER = "printer@contoso.com"
RECIPIENT = "kate@fabrikam.com"  # outside the accepted domains: every message is relayed
HELO = "app01.contoso.com"


def third_party_plugins() -> list[tuple[str, str]]:
    """Entry-point plugins installed in this environment (``(name, distribution)``): the benchmark
    configurations disable them, so that it measures this project's own policy whatever the
    virtualenv holds (the example plugin, for instance, when the test suite was set up)."""
    found = []
    for entry_point in entry_points(group="salmon_relayauth"):
        found.append((entry_point.name, entry_point.dist.name if entry_point.dist is not None else "?"))
    return sorted(set(found))


def _disable_plugins(document: tomlkit.TOMLDocument) -> None:
    names = [name for name, _ in third_party_plugins()]
    if not names:
        return
    if "plugins" not in document:
        document["plugins"] = tomlkit.table()
    disabled = list(document["plugins"].get("disabled", []))
    document["plugins"]["disabled"] = disabled + [name for name in names if name not in disabled]


def full_policy_config(port: int, sink_port: int, queue: Path) -> str:
    """The sample configuration, on this port, for a client at 127.0.0.1, with tarpit 0; its logs
    (protocol log of the Verbose connectors, decision log), if it has any, next to the queue."""
    document = tomlkit.parse(SAMPLE.read_text(encoding="utf-8"))
    for connector in document["connectors"]:
        connector["bindings"] = [f"127.0.0.1:{port}"]
        connector["tarpit_interval"] = "00:00:00"
        if connector["name"] == "Anonymous Relay":
            connector["remote_ip_ranges"].append("127.0.0.1")  # smtp-source cannot choose its source address
            connector["message_rate_limit"] = RATE_LIMIT
        if connector["name"] == "Externally Secured Relay":
            connector["bindings"] = [f"127.0.0.1:{port + 1}"]  # disabled, as in the sample
    document["smarthost"]["host"] = "127.0.0.1"
    document["smarthost"]["port"] = sink_port
    document["queue"]["directory"] = str(queue)
    document["queue"]["fsync"] = True
    if "logging" in document:
        document["logging"]["directory"] = str(queue.parent / "logs")
    _disable_plugins(document)
    return tomlkit.dumps(document)


def allow_everything_config(port: int, sink_port: int, queue: Path) -> str:
    """One connector that lets 127.0.0.0/8 relay anything, logging as the sample's connector that
    relay-full's client lands on (so that the two runs differ by their policy alone), its logs next
    to the queue; every other setting at its default."""
    document = tomlkit.parse(_ALLOW_EVERYTHING.format(port=port, sink_port=sink_port, queue=queue))
    document["connectors"][0]["protocol_logging_level"] = sample_logging_level()
    document["logging"] = {"directory": str(queue.parent / "logs")}
    _disable_plugins(document)
    return tomlkit.dumps(document)


def sample_logging_level() -> str:
    """The protocol logging level of the sample's Anonymous Relay connector."""
    sample = tomllib.loads(SAMPLE.read_text(encoding="utf-8"))
    relay = next(connector for connector in sample["connectors"] if connector["name"] == "Anonymous Relay")
    return str(relay.get("protocol_logging_level", "None"))


_ALLOW_EVERYTHING = """\
# bench/relay: the relay with nothing to decide. Every client of 127.0.0.0/8 is an externally
# secured Exchange server with every right; no limits, no tarpit.
[server]
fqdn = "relay.contoso.com"

[[connectors]]
name = "Allow everything"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
auth_mechanism = ["ExternalAuthoritative"]
permission_groups = ["ExchangeServers"]
acknowledge_open_relay = true
tarpit_interval = "00:00:00"
max_inbound_connection = "Unlimited"
max_inbound_connection_per_source = "Unlimited"

[smarthost]
host = "127.0.0.1"
port = {sink_port}

[queue]
directory = "{queue}"
fsync = true
"""


class Target:
    name = ""
    delivers = False  # whether it relays to the smarthost (so delivered/s means something)
    multi_recipient = True

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self._log: BinaryIO | None = None

    def start(self, workdir: Path, port: int, sink_port: int) -> int:
        raise NotImplementedError

    def _spawn(self, command: list[str], workdir: Path, port: int, timeout: float = 30.0) -> int:
        self._log = open(workdir / "target.log", "ab")
        process = self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            wait_banner("127.0.0.1", port, timeout, alive=lambda: process.poll() is None)
        except Exception as error:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {error}; {self.log_tail()}") from None
        return process.pid

    def log_tail(self, lines: int = 3) -> str:
        if self.workdir is None or not (self.workdir / "target.log").exists():
            return ""
        text = (self.workdir / "target.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stored(self) -> int | None:
        """Messages the target holds on disk after a run (its Maildir, or its queue), if it knows."""
        return None


class RelayTarget(Target):
    delivers = True

    def __init__(self, name: str, allow_everything: bool, log_level: str, workers: str = "1") -> None:
        super().__init__()
        self.name = name
        self.allow_everything = allow_everything
        self.log_level = log_level
        self.workers = workers
        self.queue: Path | None = None

    def write_config(self, workdir: Path, port: int, sink_port: int) -> Path:
        self.queue = workdir / "queue"
        make = allow_everything_config if self.allow_everything else full_policy_config
        config = workdir / "relay.toml"
        config.write_text(make(port, sink_port, self.queue), encoding="utf-8")
        tomllib.loads(config.read_text(encoding="utf-8"))
        return config

    def start(self, workdir: Path, port: int, sink_port: int) -> int:
        self.workdir = workdir
        config = self.write_config(workdir, port, sink_port)
        command = [sys.executable, "-m", "salmon_relayauth", "serve", str(config), "--grace", "2",
                   "--log-level", self.log_level, "--workers", self.workers]
        return self._spawn(command, workdir, port)

    def stored(self) -> int | None:
        if self.queue is None or not self.queue.is_dir():
            return None
        return sum(1 for name in os.listdir(self.queue) if name.endswith(".msg"))


class SalmonTarget(Target):
    multi_recipient = False  # SMTPReceiver answers 451 to a second RCPT

    def __init__(self, name: str, backlog: int | None) -> None:
        super().__init__()
        self.name = name
        self.backlog = backlog

    def start(self, workdir: Path, port: int, sink_port: int) -> int:
        self.workdir = workdir
        command = [sys.executable, str(SERVERS), "salmon", "--port", str(port), "--dir", str(workdir)]
        if self.backlog is not None:
            command += ["--backlog", str(self.backlog)]
        return self._spawn(command, workdir, port)

    def stored(self) -> int | None:
        new = self.workdir / "run" / "queue" / "new" if self.workdir else None
        return len(os.listdir(new)) if new and new.is_dir() else 0


class AiosmtpdTarget(Target):
    name = "aiosmtpd"

    def start(self, workdir: Path, port: int, sink_port: int) -> int:
        self.workdir = workdir
        command = [sys.executable, str(SERVERS), "aiosmtpd", "--port", str(port), "--dir", str(workdir / "Maildir")]
        return self._spawn(command, workdir, port)

    def stored(self) -> int | None:
        new = self.workdir / "Maildir" / "new" if self.workdir else None
        return len(os.listdir(new)) if new and new.is_dir() else 0


class PostfixTarget(Target):
    name = "postfix"
    delivers = True

    def __init__(self, log: bool) -> None:
        super().__init__()
        self.log = log
        self.instance: PostfixInstance | None = None

    def start(self, workdir: Path, port: int, sink_port: int) -> int:
        self.workdir = workdir
        self.instance = PostfixInstance(workdir / "postfix", port, sink_port, log=self.log)
        pid = self.instance.start()
        try:
            wait_banner("127.0.0.1", port, 30)
        except Exception:
            self.stop()
            raise
        return pid

    def stop(self) -> None:
        if self.instance is not None:
            self.instance.stop()
            self.instance = None

    def stored(self) -> int | None:
        return self.instance.queued() if self.instance else None


ALL = ("relay-full", "relay-allow", "salmon", "aiosmtpd", "postfix")
OPTIONAL = ("salmon-b128",)
ALIASES = {"relay": ("relay-full", "relay-allow"), "all": ALL, "python": ("relay-full", "relay-allow", "salmon", "aiosmtpd")}


def make_target(name: str, relay_log_level: str = "WARNING", postfix_log: bool = False, relay_workers: str = "1") -> Target:
    if name == "relay-full":
        return RelayTarget(name, False, relay_log_level, relay_workers)
    if name == "relay-allow":
        return RelayTarget(name, True, relay_log_level, relay_workers)
    if name == "salmon":
        return SalmonTarget(name, None)
    if name == "salmon-b128":
        return SalmonTarget(name, 128)
    if name == "aiosmtpd":
        return AiosmtpdTarget()
    if name == "postfix":
        return PostfixTarget(postfix_log)
    raise ValueError(f"unknown target {name!r}")


def expand(spec: str) -> list[str]:
    names: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        for name in ALIASES.get(item, (item,)):
            if name not in ALL + OPTIONAL:
                raise ValueError(f"unknown target {name!r} (known: {', '.join(ALL + OPTIONAL)}; aliases: {', '.join(ALIASES)})")
            if name not in names:
                names.append(name)
    return names
