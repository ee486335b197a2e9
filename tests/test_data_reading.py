"""The DATA reader takes the content in pieces ending at ``.CRLF`` rather than line by line: whatever
the pieces the network delivers, it must find exactly the end marker a line-by-line reader finds,
unstuff the same dots and leave the next command in the stream."""

from __future__ import annotations

import asyncio
import os

from hypothesis import given, settings
from hypothesis import strategies as st

from salmon_relayauth.listener.data import read_data

EXAMPLES = int(os.environ.get("RELAYAUTH_FUZZ_EXAMPLES", "200"))
# Lines of a message: dots, spaces, letters and bare CR / bare LF, never a CRLF (that ends a line).
LINES = st.lists(st.binary(max_size=12).map(lambda raw: bytes(b"a. \r\n"[byte % 5] for byte in raw)), max_size=12).filter(
    lambda lines: not any(b"\r\n" in line for line in lines)
)


def line_by_line(lines: list[bytes]) -> bytes:
    """What the message is, read the slow way: its lines with CRLF, bare line ends made CRLF."""
    return b"".join(line.replace(b"\r", b"\x00").replace(b"\n", b"\x00").replace(b"\x00", b"\r\n") + b"\r\n" for line in lines)


def wire(lines: list[bytes]) -> bytes:
    """The DATA section as a client sends it: dot-stuffed lines, the end marker, the next command."""
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\nQUIT\r\n"


async def read_in_pieces(data: bytes, cuts: list[int], limit: int) -> tuple[bytes, bytes, int]:
    reader = asyncio.StreamReader(limit=limit)
    progress = []

    async def feed() -> None:
        start = 0
        for cut in sorted(set(cuts)) + [len(data)]:
            reader.feed_data(data[start:cut])
            start = cut
            await asyncio.sleep(0)

    feeding = asyncio.ensure_future(feed())
    outcome = await read_data(reader, None, False, lambda: progress.append(1))
    rest = await reader.readuntil(b"\r\n")
    await feeding
    return outcome.content, rest, len(progress)


@settings(max_examples=EXAMPLES, deadline=None)
@given(lines=LINES, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8), limit=st.sampled_from([8, 64, 4096]))
def test_any_split_of_the_stream_reads_the_same_message(lines: list[bytes], cuts: list[int], limit: int) -> None:
    data = wire(lines)
    content, rest, progress = asyncio.run(read_in_pieces(data, [cut for cut in cuts if cut < len(data)], limit))
    assert content == line_by_line(lines)
    assert rest == b"QUIT\r\n"  # nothing after the end marker was taken
    assert progress >= 1


def test_a_dot_that_does_not_start_a_line_never_ends_the_message() -> None:
    data = b"end of sentence.\r\nbare\n.\r\n..\r\n.\r\nQUIT\r\n"
    content, rest, _ = asyncio.run(read_in_pieces(data, [3, 17, 18, 24], 4096))
    assert content == b"end of sentence.\r\nbare\r\n.\r\n.\r\n"
    assert rest == b"QUIT\r\n"


def test_an_empty_message_and_size_limit() -> None:
    assert asyncio.run(read_in_pieces(b".\r\nQUIT\r\n", [], 4096))[:2] == (b"", b"QUIT\r\n")

    async def too_big() -> tuple[bool, bytes]:
        reader = asyncio.StreamReader(limit=64)
        reader.feed_data(b"x" * 500 + b"\r\n" + b"y" * 100 + b"\r\n.\r\nQUIT\r\n")
        outcome = await read_data(reader, 300, False)
        return outcome.too_big, await reader.readuntil(b"\r\n")

    assert asyncio.run(too_big()) == (True, b"QUIT\r\n")
