"""``salmon-relayauth probe``: the source document's telnet test, automated.

Connects to the relay from a chosen source address, runs EHLO, MAIL FROM, RCPT TO, DATA (a short
test message) and QUIT, prints the conversation and says whether this host can relay, or which
step refused it and with what reply.
"""

from __future__ import annotations

import argparse
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from ..model.addresses import AddressError, parse_binding

__all__ = ["ProbeResult", "probe", "register", "run"]

TEST_MESSAGE = b"Subject: Test\r\n\r\nThis is a test message\r\n.\r\n"


@dataclass
class ProbeResult:
    transcript: list[tuple[str, str]] = field(default_factory=list)  # ("C"|"S", line)
    refused_at: str | None = None
    refusal: str | None = None

    @property
    def relayed(self) -> bool:
        return self.refused_at is None


class _Conversation:
    def __init__(self, sock: socket.socket, result: ProbeResult) -> None:
        self.reader = sock.makefile("rb")
        self.sock = sock
        self.result = result

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            raw = self.reader.readline()
            if not raw:
                raise ConnectionError("the relay closed the connection")
            line = raw.decode("ascii", "replace").rstrip("\r\n")
            self.result.transcript.append(("S", line))
            lines.append(line)
            if line[3:4] != "-":
                return int(line[:3]), line

    def send(self, line: str) -> tuple[int, str]:
        self.result.transcript.append(("C", line))
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        return self.reply()


def probe(server: tuple[str, int], source: str, mail_from: str, recipient: str, timeout: float = 30) -> ProbeResult:
    """Run the conversation; the result records every line and the first refusal."""
    result = ProbeResult()
    with socket.create_connection(server, timeout=timeout, source_address=(source, 0)) as sock:
        talk = _Conversation(sock, result)
        steps: list[tuple[str, Any, int]] = [
            ("connect", talk.reply, 220),
            ("EHLO", lambda: talk.send(f"EHLO {socket.gethostname() or 'probe'}"), 250),
            ("MAIL FROM", lambda: talk.send(f"MAIL FROM:<{mail_from}>"), 250),
            ("RCPT TO", lambda: talk.send(f"RCPT TO:<{recipient}>"), 250),
            ("DATA", lambda: talk.send("DATA"), 354),
            ("end of data", lambda: _message(talk), 250),
        ]
        for name, step, expected in steps:
            code, line = step()
            if code != expected:
                result.refused_at, result.refusal = name, line
                break
        try:
            talk.send("QUIT")
        except (OSError, ConnectionError):
            pass
    return result


def _message(talk: _Conversation) -> tuple[int, str]:
    for line in TEST_MESSAGE.decode().splitlines():
        talk.result.transcript.append(("C", line))
    talk.sock.sendall(TEST_MESSAGE)
    return talk.reply()


def register(verbs: Any) -> None:
    parser = verbs.add_parser("probe", help="test relaying from a host, like the telnet test", description=__doc__)
    parser.add_argument("--server", default="127.0.0.1:25", metavar="IP:PORT", help="the relay to test")
    parser.add_argument("--source", required=True, metavar="IP", help="the local address to connect from")
    parser.add_argument("--mail-from", required=True, metavar="ADDR")
    parser.add_argument("--rcpt", required=True, metavar="ADDR")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        binding = parse_binding(args.server)
    except AddressError as error:
        print(f"probe: --server: {error}", file=sys.stderr)
        return 2
    try:
        result = probe((binding.host, binding.port), args.source, args.mail_from, args.rcpt)
    except OSError as error:
        print(f"probe: cannot talk to {args.server} from {args.source}: {error}", file=sys.stderr)
        return 1
    except ConnectionError as error:
        print(f"probe: {error}", file=sys.stderr)
        return 1
    for side, line in result.transcript:
        print(f"{side}: {line}")
    if result.relayed:
        print(f"Verdict: {args.source} can relay to {args.rcpt} through {args.server}")
        return 0
    print(f"Verdict: {args.source} cannot relay through {args.server}: refused at {result.refused_at} with \"{result.refusal}\"")
    if result.refused_at == "RCPT TO":
        print("  (run `salmon-relayauth explain CONFIG --client ...` to see which connector took this host and which right it lacks)")
    return 1
