"""``serve --workers 2`` as a real process tree: a master and two forked workers accepting on the
same sockets, driven over loopback SMTP with a :class:`RecordingSmarthost` as the smarthost.

Which worker serves a connection is read from ``/proc``: the worker whose file descriptors hold the
server side of the client's TCP connection (found by its inode in ``/proc/net/tcp``). A test that
needs a connection to land on one particular worker stops the other one with SIGSTOP while it
connects: the kernel then has only one process left to hand the connection to. Before stopping a
worker, the tests wait until the connections they closed are closed on the server side too (so
that the stopped worker cannot be holding the shared throttling lock for one of them).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from salmon_relayauth.cli import main as cli_main
from salmon_relayauth.queue.store import queue_partition
from salmon_relayauth.testing import RecordingSmarthost, free_port

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")

# -- exact replies ---------------------------------------------------------------------------------

SENDER_OK = "250 2.1.0 Sender OK"
RECIPIENT_OK = "250 2.1.5 Recipient OK"
UNABLE_TO_RELAY = "550 5.7.1 Unable to relay"
TOO_MANY_SOURCE_CONNECTIONS = (
    "421 4.3.2 The maximum number of concurrent connections has exceeded a limit, closing transmission channel"
)
RATE_EXCEEDED = "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
QUEUED = re.compile(r"^250 2\.6\.0 <([0-9A-Za-z_-]+)@relay\.contoso\.com> Queued mail for delivery$")

# -- configuration ---------------------------------------------------------------------------------

TEMPLATE = """
[server]
fqdn = "relay.contoso.com"
@SERVER@

[[connectors]]
name = "Default Frontend"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"

[[connectors]]
name = "Anonymous Relay"
bindings = ["127.0.0.1:{port}"]
remote_ip_ranges = @RELAY_HOSTS@
permission_groups = ["AnonymousUsers"]
tarpit_interval = "00:00:00"
@LIMITS@

[[connectors.permissions]]
user = "NT AUTHORITY\\\\ANONYMOUS LOGON"
extended_rights = ["ms-Exch-SMTP-Accept-Any-Recipient"]

[smarthost]
host = "127.0.0.1"
port = {smarthost_port}

[queue]
directory = "queue"
fsync = false
retry_interval = "00:00:01"
"""

RELAY_HOSTS = '["127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.13"]'


def config_text(
    port: int, smarthost_port: int, *, server: str = "", relay_hosts: str = RELAY_HOSTS, limits: str = ""
) -> str:
    return (
        TEMPLATE.replace("@SERVER@", server)
        .replace("@RELAY_HOSTS@", relay_hosts)
        .replace("@LIMITS@", limits)
        .replace("{port}", str(port))
        .replace("{smarthost_port}", str(smarthost_port))
    )


def message(number: int) -> str:
    return f"Message-ID: <w{number}@contoso.com>\r\nSubject: message {number}\r\n\r\nbody {number}\r\n"


def message_number(content: bytes) -> int:
    found = re.search(rb"Message-ID: <w(\d+)@contoso\.com>", content)
    assert found is not None, content[:200]
    return int(found.group(1))


def wait_until(condition: Callable[[], Any], timeout: float, what: str, pause: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(pause)


# -- /proc -----------------------------------------------------------------------------------------


def children_of(pid: int) -> set[int]:
    children: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return children
    for task in tasks:
        try:
            children.update(int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except FileNotFoundError:
            continue
    return children


def process_state(pid: int) -> str | None:
    """The state letter of ``/proc/PID/stat`` (``T`` stopped, ``Z`` zombie), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2]


def process_group(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[2])


def is_stopped(pid: int) -> bool:
    return process_state(pid) == "T"


def alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def _tcp_address(host: str, port: int) -> str:
    return f"{int.from_bytes(socket.inet_aton(host), 'little'):08X}:{port:04X}"


def server_side_inode(client: socket.socket) -> int:
    """The inode of the accepted socket at the other end of ``client`` (0 when not found)."""
    local = _tcp_address(*client.getpeername())
    remote = _tcp_address(*client.getsockname())
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote and fields[9] != "0":
            return int(fields[9])
    return 0


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, ProcessLookupError):
        return inodes
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


# -- an SMTP client that reads exact replies -------------------------------------------------------


class Client:
    """A line-at-a-time SMTP client from a 127.x address; ``banner`` is the first reply (the 220 or
    the refusal sent in its place)."""

    def __init__(self, port: int, source: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), source_address=(source, 0), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.banner = self.reply()
        self.inode = 0
        self.worker = 0  # the pid of the worker that accepted it, when looked up

    def reply(self) -> str:
        lines: list[str] = []
        while True:
            raw = self.file.readline()
            if not raw:
                raise AssertionError(f"connection closed while reading a reply (got {lines!r})")
            line = raw.decode("ascii", "replace").rstrip("\r\n")
            lines.append(line)
            if line[3:4] != "-":
                return "\n".join(lines)

    def command(self, line: str) -> str:
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        return self.reply()

    def ehlo(self) -> None:
        answer = self.command("EHLO client.contoso.com")
        assert answer.startswith("250"), answer

    def send_message(self, number: int, recipient: str = "kate@fabrikam.com") -> str:
        """One transaction; the MAIL FROM reply when it is refused, else the end-of-data reply."""
        answer = self.command("MAIL FROM:<app@contoso.com>")
        if answer != SENDER_OK:
            return answer
        assert self.command(f"RCPT TO:<{recipient}>") == RECIPIENT_OK
        assert self.command("DATA").startswith("354")
        self.sock.sendall(message(number).encode("ascii") + b".\r\n")
        return self.reply()

    def relay_answer(self) -> str:
        """EHLO, MAIL FROM, then the reply to a RCPT TO an outside domain (then RSET)."""
        self.ehlo()
        assert self.command("MAIL FROM:<app@contoso.com>") == SENDER_OK
        answer = self.command("RCPT TO:<kate@fabrikam.com>")
        self.command("RSET")
        return answer

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            rest = self.file.read()
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert rest == b"", f"unexpected bytes before the close: {rest!r}"
        return True

    def quit(self) -> None:
        assert self.command("QUIT").startswith("221")
        self.closed_by_server()
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


# -- the process tree ------------------------------------------------------------------------------

STARTED = re.compile(r"\] INFO salmon_relayauth\.workers: worker (\d+) started \(pid (\d+)\)")


class Relay:
    """``python -m salmon_relayauth serve`` in its own process group, its output collected."""

    def __init__(
        self,
        directory: Path,
        smarthost_port: int,
        *,
        workers_flag: str | None = "2",
        grace: float = 2,
        server: str = "",
        relay_hosts: str = RELAY_HOSTS,
        limits: str = "",
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.smarthost_port = smarthost_port
        self.config = directory / "relay.toml"
        self.pid_file = directory / "relay.pid"
        self.queue_dir = directory / "queue"
        self.write_config(server=server, relay_hosts=relay_hosts, limits=limits)
        self.workers_flag = workers_flag
        self.grace = grace
        self.process: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._lines_changed = threading.Condition()
        self._ended = False  # the output is closed: serve and every worker are gone
        self.clients: list[Client] = []
        self.seen_pids: set[int] = set()

    def write_config(
        self, *, port: int | None = None, server: str = "", relay_hosts: str = RELAY_HOSTS, limits: str = ""
    ) -> None:
        fields = {"server": server, "relay_hosts": relay_hosts, "limits": limits}
        self.config.write_text(config_text(port or self.port, self.smarthost_port, **fields))

    # -- running

    def start(self) -> Relay:
        command = [
            sys.executable, "-m", "salmon_relayauth", "serve", str(self.config),
            "--pid-file", str(self.pid_file), "--grace", str(self.grace), "--log-level", "INFO",
        ]
        if self.workers_flag is not None:
            command += ["--workers", self.workers_flag]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        self.wait_line(lambda line: "relaying on" in line, 30, "the 'relaying on' line")
        self.workers()  # both workers listening
        return self

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._lines_changed:
                self.lines.append(line)
                self._lines_changed.notify_all()
        with self._lines_changed:
            self._ended = True
            self._lines_changed.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float, what: str, start: int = 0) -> str:
        """The first output line from index ``start`` on that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._lines_changed:
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._ended:
                    raise AssertionError(f"no {what} in the output of serve:\n{self.output()}")
                self._lines_changed.wait(min(remaining, 0.2))

    def output(self, last: int = 80) -> str:
        with self._lines_changed:
            return "".join(self.lines[-last:])

    def output_lines(self) -> list[str]:
        with self._lines_changed:
            return list(self.lines)

    def mark(self) -> int:
        with self._lines_changed:
            return len(self.lines)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def slots(self) -> dict[int, int]:
        """Worker pid -> slot, from the master's log."""
        with self._lines_changed:
            found = [STARTED.search(line) for line in self.lines]
        return {int(match.group(2)): int(match.group(1)) for match in found if match}

    def listening(self, pid: int) -> bool:
        with self._lines_changed:
            return any(f"[{pid}] INFO salmon_relayauth.receiver: relay listening on" in line for line in self.lines)

    def workers(self, count: int = 2, timeout: float = 15.0) -> list[int]:
        """The master's live children, once there are ``count`` of them and each has said it listens."""

        def ready() -> list[int] | None:
            pids = sorted(pid for pid in children_of(self.pid) if alive(pid))
            if len(pids) == count and all(self.listening(pid) for pid in pids):
                return pids
            return None

        pids: list[int] = wait_until(ready, timeout, f"{count} listening workers\n{self.output()}")
        self.seen_pids.update(pids)
        return pids

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def ours(self) -> list[int]:
        """Live processes of this relay's process group (the master's pid is its id)."""
        self.seen_pids.update(self.slots())
        self.seen_pids.update(children_of(self.pid))
        return [pid for pid in self.seen_pids if alive(pid) and process_group(pid) == self.pid]

    def stop(self) -> None:
        """SIGTERM to the master; SIGKILL to whatever of the process tree is left after it."""
        for client in self.clients:
            client.close()
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                workers = self.ours()
                self.signal(signal.SIGTERM)
                for pid in workers:  # a worker left stopped by a failed test would never end
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(15)
        finally:
            if self.process.poll() is None:
                self.seen_pids.update(self.ours())
                self.process.kill()
                self.process.wait(10)
            for pid in self.ours():  # orphaned workers of a master that died
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # -- clients

    def connect(self, source: str, port: int | None = None) -> Client:
        client = Client(port or self.port, source)
        self.clients.append(client)
        return client

    def holder(self, client: Client, timeout: float = 5.0) -> int:
        """The worker pid holding the server side of ``client`` (recorded on it)."""

        def find() -> int | None:
            inode = server_side_inode(client.sock)
            if not inode:
                return None
            for pid in children_of(self.pid):
                if inode in socket_inodes(pid):
                    client.inode, client.worker = inode, pid
                    return pid
            return None

        return int(wait_until(find, timeout, f"the worker holding {client.sock.getsockname()}"))

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until every closed client's connection is closed in its worker too."""
        closed = [client for client in self.clients if client.inode and client.sock.fileno() == -1]

        def done() -> bool:
            return not any(client.inode in socket_inodes(client.worker) for client in closed)

        wait_until(done, timeout, "the workers to close the connections the clients closed")

    @contextlib.contextmanager
    def only(self, worker: int) -> Iterator[None]:
        """New connections go to ``worker``: every other worker is stopped meanwhile."""
        self.settle()
        others = [pid for pid in children_of(self.pid) if pid != worker and alive(pid)]
        try:
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            for pid in others:
                wait_until(functools.partial(is_stopped, pid), 5, f"worker {pid} to stop")
            yield
        finally:
            for pid in others:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def connect_to(self, worker: int, source: str, port: int | None = None) -> Client:
        """A connection that the given worker accepts (checked)."""
        with self.only(worker):
            client = self.connect(source, port)
            if client.banner.startswith("220"):
                assert self.holder(client) == worker
        return client

    def queued_files(self) -> list[Path]:
        return sorted(self.queue_dir.glob("*.msg"))


@pytest.fixture
def relay(tmp_path: Path, smarthost: RecordingSmarthost) -> Iterator[Callable[..., Relay]]:
    """A factory for started relays; every process of each is gone when the test ends."""
    started: list[Relay] = []

    def start(**options: Any) -> Relay:
        directory = tmp_path / f"relay{len(started)}"
        directory.mkdir()
        server = Relay(directory, smarthost.port, **options)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def queue_id_of(reply: str) -> str:
    match = QUEUED.match(reply)
    assert match is not None, reply
    return match.group(1)


# == mail flow ======================================================================================


def test_forty_messages_from_several_clients_reach_the_smarthost_exactly_once(relay, smarthost) -> None:
    server = relay()
    assert "with 2 workers" in server.wait_line(lambda line: "relaying on" in line, 1, "the start line")
    workers = server.workers()
    assert len(workers) == 2 and server.pid not in workers
    assert set(server.slots()) == set(workers), "the master's log names other pids than its children"
    assert sorted(server.slots().values()) == [0, 1]

    accepted: dict[int, tuple[str, int]] = {}  # message number -> (queue id, worker pid)
    failures: list[str] = []
    lock = threading.Lock()

    def send(source: str, numbers: range) -> None:
        for number in numbers:
            try:
                client = Client(server.port, source)
                try:
                    worker = server.holder(client)
                    client.ehlo()
                    reply = client.send_message(number)
                    client.quit()
                finally:
                    client.close()
                with lock:
                    accepted[number] = (queue_id_of(reply), worker)
            except (AssertionError, OSError) as error:
                with lock:
                    failures.append(f"message {number} from {source}: {error!r}")

    senders = [
        threading.Thread(target=send, args=(f"127.0.0.{10 + index}", range(index * 10, index * 10 + 10)))
        for index in range(4)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(60)
    assert failures == []
    assert sorted(accepted) == list(range(40))
    assert len({queue_id for queue_id, _ in accepted.values()}) == 40

    # Both workers took connections, and each new id falls in the partition its worker delivers.
    holders = {worker for _, worker in accepted.values()}
    assert holders == set(workers), f"connections served by {holders} only, workers are {workers}"
    slots = server.slots()
    for queue_id, worker in accepted.values():
        assert queue_partition(queue_id, 2) == slots[worker] % 2, (queue_id, worker, slots)

    smarthost.wait_for(40, timeout=20)
    wait_until(lambda: not server.queued_files(), 10, "the queue directory to be empty")
    numbers = sorted(message_number(item.content) for item in smarthost.messages)
    assert numbers == list(range(40)), "a message was lost or delivered twice"
    assert all(item.rcpt_tos == ("kate@fabrikam.com",) for item in smarthost.messages)
    assert not list(server.queue_dir.glob("*.state")) and not list(server.queue_dir.glob("*.tmp"))


# == limits across workers ==========================================================================


def test_connection_cap_per_source_holds_across_workers(relay) -> None:
    server = relay(limits="max_inbound_connection_per_source = 2")
    first, second = server.workers()
    # one connection held in each worker: neither worker alone is at the cap
    held = [server.connect_to(first, "127.0.0.10"), server.connect_to(second, "127.0.0.10")]
    assert all(client.banner.startswith("220 relay.contoso.com") for client in held)

    for worker in (first, second):  # whichever worker takes the third, it refuses it
        mark = server.mark()
        with server.only(worker):
            third = server.connect("127.0.0.10")
            assert third.banner == TOO_MANY_SOURCE_CONNECTIONS
            assert third.closed_by_server()
        server.wait_line(lambda line, w=worker: f"[{w}]" in line and "refused 127.0.0.10" in line, 5,
                         f"worker {worker}'s refusal", mark)
    for _ in range(6):  # and without steering, whichever takes it
        third = server.connect("127.0.0.10")
        assert third.banner == TOO_MANY_SOURCE_CONNECTIONS
        assert third.closed_by_server()

    other = server.connect("127.0.0.11")  # another source has its own count
    assert other.banner.startswith("220 ")
    other.quit()

    held[0].quit()  # a closed connection stops counting, in the other worker as well
    with server.only(second):
        again = server.connect("127.0.0.10")
        assert again.banner.startswith("220 "), again.banner
        assert server.holder(again) == second
    with server.only(first):
        refused = server.connect("127.0.0.10")
        assert refused.banner == TOO_MANY_SOURCE_CONNECTIONS


def test_message_rate_is_shared_by_the_workers(relay, smarthost) -> None:
    server = relay(limits="message_rate_limit = 3")
    workers = server.workers()
    replies = []
    for number in range(6):  # alternately on each worker: a per-worker budget would take all six
        client = server.connect_to(workers[number % 2], "127.0.0.10")
        client.ehlo()
        reply = client.send_message(number)
        replies.append(reply)
        if reply == RATE_EXCEEDED:
            assert client.closed_by_server()
            client.close()
        else:
            client.quit()
    accepted = [reply for reply in replies if QUEUED.match(reply)]
    assert len(accepted) == 3, replies
    assert replies[3:] == [RATE_EXCEEDED] * 3, replies
    assert len(smarthost.wait_for(3)) == 3
    other = server.connect("127.0.0.11")  # another source has its own budget
    other.ehlo()
    assert QUEUED.match(other.send_message(99))


# == a dead worker ==================================================================================


def test_killed_worker_is_replaced_and_its_connections_stop_counting(relay, smarthost) -> None:
    server = relay(limits="max_inbound_connection_per_source = 2")
    victim, survivor = server.workers()
    held = [server.connect_to(victim, "127.0.0.10") for _ in range(2)]
    assert all(client.banner.startswith("220 ") for client in held)
    # the cap is reached, in the other worker too
    assert server.connect_to(survivor, "127.0.0.10").banner == TOO_MANY_SOURCE_CONNECTIONS

    mark = server.mark()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: not alive(victim), 5, "the killed worker to be gone")
    workers = server.workers(timeout=8)
    replacement = next(pid for pid in workers if pid != victim and pid != survivor)
    assert set(workers) == {survivor, replacement}
    assert server.slots()[replacement] == server.slots()[victim], "the replacement took another slot"
    for client in held:  # their server side died with the worker
        assert client.closed_by_server()
        client.close()

    # the dead worker's two connections no longer count: two new ones fit under the cap
    fresh = [server.connect_to(replacement, "127.0.0.10"), server.connect_to(survivor, "127.0.0.10")]
    assert [client.banner[:4] for client in fresh] == ["220 ", "220 "], [client.banner for client in fresh]
    assert server.connect("127.0.0.10").banner == TOO_MANY_SOURCE_CONNECTIONS

    # mail still flows, through the replacement as through the survivor
    for number, worker in enumerate((replacement, survivor)):
        client = server.connect_to(worker, "127.0.0.11")
        client.ehlo()
        assert QUEUED.match(client.send_message(number))
        client.quit()
    received = smarthost.wait_for(2)
    assert sorted(message_number(item.content) for item in received) == [0, 1]


# == reload =========================================================================================


def test_sighup_reloads_every_worker_and_refuses_an_invalid_file(relay) -> None:
    server = relay(relay_hosts='["127.0.0.10"]')
    workers = server.workers()
    for worker in workers:
        assert server.connect_to(worker, "127.0.0.10").relay_answer() == RECIPIENT_OK
        assert server.connect_to(worker, "127.0.0.12").relay_answer() == UNABLE_TO_RELAY

    # the relay host moves from .10 to .12: .10 now falls to the connector without relay rights
    server.write_config(relay_hosts='["127.0.0.12"]')
    mark = server.mark()
    server.signal(signal.SIGHUP)
    server.wait_line(lambda line: "reload: every worker reads" in line, 5, "the master's reload line", mark)
    for worker in workers:
        server.wait_line(lambda line, w=worker: f"[{w}]" in line and "configuration reloaded" in line, 5,
                         f"worker {worker}'s reload", mark)
    for worker in workers:
        assert server.connect_to(worker, "127.0.0.10").relay_answer() == UNABLE_TO_RELAY
        assert server.connect_to(worker, "127.0.0.12").relay_answer() == RECIPIENT_OK
    for _ in range(6):
        assert server.connect("127.0.0.10").relay_answer() == UNABLE_TO_RELAY
    assert sorted(pid for pid in children_of(server.pid) if alive(pid)) == workers, "a reload restarted workers"

    # an invalid file (a bad address, and a new port) changes nothing, in any worker
    new_port = free_port()
    server.write_config(port=new_port, relay_hosts='["127.0.0.300"]')
    mark = server.mark()
    server.signal(signal.SIGHUP)
    refused = server.wait_line(lambda line: "reload refused" in line, 5, "the refused reload", mark)
    assert "127.0.0.300" in refused
    for worker in workers:
        assert server.connect_to(worker, "127.0.0.12").relay_answer() == RECIPIENT_OK
        assert server.connect_to(worker, "127.0.0.10").relay_answer() == UNABLE_TO_RELAY
    with pytest.raises(ConnectionRefusedError):
        Client(new_port, "127.0.0.12")
    assert sorted(pid for pid in children_of(server.pid) if alive(pid)) == workers
    assert server.process is not None and server.process.poll() is None


def test_a_worker_restarted_after_a_refused_reload_serves_the_running_configuration(relay) -> None:
    # The file on disk is now invalid, but the master refused it: the relay keeps running with the
    # configuration it has, and a replacement for a dead worker must serve with that one too.
    server = relay(relay_hosts='["127.0.0.10"]')
    victim, survivor = server.workers()
    server.write_config(relay_hosts='["127.0.0.300"]')
    mark = server.mark()
    server.signal(signal.SIGHUP)
    server.wait_line(lambda line: "reload refused" in line, 5, "the refused reload", mark)

    mark = server.mark()
    os.kill(victim, signal.SIGKILL)
    started = server.wait_line(lambda line: STARTED.search(line) is not None, 8, "the replacement's start", mark)
    replacement = int(STARTED.search(started).group(2))  # type: ignore[union-attr]
    outcome = server.wait_line(
        lambda line: f"[{replacement}]" in line
        and ("relay listening on" in line or "cannot start" in line or "failed" in line),
        10, f"worker {replacement} to listen or fail", mark,
    )
    assert "relay listening on" in outcome, f"the replacement worker did not start: {outcome.strip()}"
    assert server.workers() == sorted([survivor, replacement])
    assert server.connect_to(replacement, "127.0.0.10").relay_answer() == RECIPIENT_OK
    assert server.connect_to(replacement, "127.0.0.12").relay_answer() == UNABLE_TO_RELAY


def test_sighup_with_a_new_port_starts_a_new_generation(relay, smarthost) -> None:
    server = relay(relay_hosts='["127.0.0.12"]')
    old_port, old_workers = server.port, server.workers()
    new_port = free_port()
    server.write_config(port=new_port, relay_hosts='["127.0.0.12"]')
    mark = server.mark()
    server.signal(signal.SIGHUP)
    server.wait_line(lambda line: "bindings changed" in line, 5, "the new generation line", mark)

    def answers(port: int) -> bool:
        try:
            client = Client(port, "127.0.0.12", timeout=2)
        except (OSError, AssertionError):  # refused, or reset by a listener closing
            return False
        client.close()
        return client.banner.startswith("220 ")

    wait_until(lambda: answers(new_port), 10, "the new port to answer")
    wait_until(lambda: not answers(old_port), 10, "the old port to stop answering")
    new_workers = server.workers()
    assert not set(new_workers) & set(old_workers)
    wait_until(lambda: not any(alive(pid) for pid in old_workers), 10, "the old generation to finish")
    assert sorted(server.slots()[pid] for pid in new_workers) == [2, 3]

    for number, worker in enumerate(new_workers):
        client = server.connect_to(worker, "127.0.0.12", port=new_port)
        client.ehlo()
        assert QUEUED.match(client.send_message(number))
        client.quit()
    assert sorted(message_number(item.content) for item in smarthost.wait_for(2)) == [0, 1]
    wait_until(lambda: not server.queued_files(), 10, "the queue directory to be empty")


def test_two_binding_changes_within_the_grace_period_keep_two_workers_and_their_counts(relay) -> None:
    # Change the bindings twice while the first generation still finishes a session: three
    # generations overlap. The third must get slots no live worker holds, and the first one's end
    # must neither restart its workers nor wipe the third one's connection counts.
    server = relay(grace=3, limits="max_inbound_connection_per_source = 2")
    first_generation = server.workers()
    lingering = [server.connect_to(worker, "127.0.0.13") for worker in first_generation]
    for client in lingering:
        client.ehlo()  # an open session keeps its worker until the grace period ends
    generations = [set(server.slots())]
    for _ in range(2):
        new_port = free_port()
        server.write_config(port=new_port, limits="max_inbound_connection_per_source = 2")
        mark = server.mark()
        server.signal(signal.SIGHUP)
        server.wait_line(lambda line: "bindings changed" in line, 5, "the new generation line", mark)
        wait_until(lambda: len(server.slots()) == 2 * (len(generations) + 1), 5, "the new generation's start lines")
        generations.append(set(server.slots()) - set().union(*generations))
    slots = server.slots()
    third_generation = sorted(generations[2])
    assert len(third_generation) == 2, slots
    live_elsewhere = {slots[pid] for pid in first_generation if alive(pid)}
    assert not {slots[pid] for pid in third_generation} & live_elsewhere, slots  # no column shared
    wait_until(lambda: all(server.listening(pid) for pid in third_generation), 10, "the third generation to listen")

    held = [server.connect("127.0.0.10", port=new_port) for _ in range(2)]
    assert all(client.banner.startswith("220 ") for client in held), [client.banner for client in held]
    assert {server.holder(client) for client in held} <= set(third_generation)

    for client in lingering:  # the grace period ends: 421, and the first generation exits
        client.sock.settimeout(10)
        assert client.file.read().startswith(b"421 4.3.2"), "the lingering session was not closed with 421"
    for pid in first_generation:
        server.wait_line(lambda line, pid=pid: f"(pid {pid})" in line and "salmon_relayauth.workers" in line
                         and "started" not in line, 10, f"the master's line on the end of worker {pid}")

    third = server.connect("127.0.0.10", port=new_port)
    assert third.banner == TOO_MANY_SOURCE_CONNECTIONS, "the old generation's end wiped the new one's counts"
    ends = [line for line in server.output_lines() if any(f"(pid {pid})" in line for pid in first_generation)
            and "started" not in line]
    assert all("finished" in line for line in ends), "an old generation's end was taken for a crash:\n" + "".join(ends)
    assert server.workers() == sorted(third_generation)


# == stopping =======================================================================================


def test_sigterm_stops_master_and_workers_and_loses_nothing(relay, smarthost) -> None:
    server = relay(workers_flag=None, server="workers = 2")  # the count from the configuration
    assert "with 2 workers" in server.wait_line(lambda line: "relaying on" in line, 1, "the start line")
    workers = server.workers()
    assert server.pid_file.read_text().strip() == str(server.pid)

    open_session = server.connect_to(workers[0], "127.0.0.10")
    open_session.ehlo()
    assert open_session.command("MAIL FROM:<app@contoso.com>") == SENDER_OK
    assert open_session.command("RCPT TO:<kate@fabrikam.com>") == RECIPIENT_OK
    accepted = []
    for number in range(1, 5):  # accepted just before the signal, on both workers
        client = server.connect("127.0.0.11") if number > 2 else server.connect_to(workers[number % 2], "127.0.0.11")
        client.ehlo()
        queue_id_of(client.send_message(number))
        client.quit()
        accepted.append(number)
    server.signal(signal.SIGTERM)
    # the open session gets its grace period to finish its message
    assert open_session.command("DATA").startswith("354")
    open_session.sock.sendall(message(0).encode("ascii") + b".\r\n")
    queue_id_of(open_session.reply())
    accepted.append(0)
    open_session.command("QUIT")

    assert server.wait(20) == 0
    assert any("all workers stopped" in line for line in server.output_lines())
    wait_until(lambda: not any(alive(pid) for pid in workers), 5, "the workers to be gone")
    assert all(process_state(pid) is None for pid in workers), "a worker is left as a zombie"
    assert not server.pid_file.exists()
    delivered = {message_number(item.content) for item in smarthost.messages}
    queued = {message_number(path.read_bytes()) for path in server.queued_files()}
    assert set(accepted) <= delivered | queued, f"lost: {set(accepted) - delivered - queued}"


# == bad worker counts ==============================================================================


@pytest.mark.parametrize(("value", "named"), [("0", "0"), ("x", "'x'"), ("65", "65"), ("-1", "-1")])
def test_bad_workers_flag_is_an_argparse_error_naming_the_value(tmp_path, capsys, value, named) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(config_text(free_port(), free_port()))
    with pytest.raises(SystemExit) as stopped:
        cli_main(["serve", str(config), "--workers", value])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert "--workers" in error and named in error, error


@pytest.mark.parametrize("value", ["0", '"many"', "true", "65", "2.5"])
def test_bad_workers_setting_is_a_config_problem_naming_workers(tmp_path, capsys, value) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(config_text(free_port(), free_port(), server=f"workers = {value}"))
    assert cli_main(["check", str(config)]) == 1
    error = capsys.readouterr().err
    assert "[server]" in error and "workers" in error, error


def test_serve_refuses_a_bad_workers_setting(tmp_path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(config_text(free_port(), free_port(), server='workers = "many"'))
    result = subprocess.run([sys.executable, "-m", "salmon_relayauth", "serve", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "[server]" in result.stderr and "workers" in result.stderr and "many" in result.stderr
    assert "relaying on" not in result.stdout


def test_auto_and_explicit_counts_are_accepted(tmp_path, capsys) -> None:
    config = tmp_path / "relay.toml"
    for value in ('"auto"', "1", "64"):
        config.write_text(config_text(free_port(), free_port(), server=f"workers = {value}"))
        assert cli_main(["check", str(config)]) == 0, capsys.readouterr()
