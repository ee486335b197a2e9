"""Reading the DATA section: the end marker, dot-unstuffing, size limit and line-end hygiene.

Only ``CRLF . CRLF`` ends a message. A bare LF or bare CR never ends anything; what happens to
them is the connector's choice (``bare_linefeed_rejection_enabled``): refuse the message with
``554 5.6.0``, or (the default) turn every bare CR and bare LF into CRLF, so nothing downstream
can read a different message boundary than this relay did.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DataOutcome", "read_data"]

_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_DOT_CRLF = b".\r\n"


@dataclass(frozen=True, slots=True)
class DataOutcome:
    """What was read: the message, or why it must be refused after the end marker."""

    content: bytes
    too_big: bool = False
    bare_line_ends: bool = False


async def read_data(
    reader: asyncio.StreamReader,
    size_limit: int | None,
    reject_bare_line_ends: bool,
    on_progress: Callable[[], None] | None = None,
) -> DataOutcome:
    """Read up to the end marker. Past ``size_limit`` the rest is read and discarded, so the
    reply can come after the end marker as RFC 5321 §4.2.5 wants. ``on_progress`` is called for
    every piece received (a client sending a large message steadily is not idle).

    The content is read in pieces that end at ``.CRLF`` (or at the reader's limit), not line by
    line: a piece ends the message when its dot starts a line, that is when CRLF precedes it."""
    pieces: list[bytes] = []
    tail = b"\r\n"  # the last two bytes read: the message starts at a line start
    size = 0
    too_big = False
    while True:
        try:
            piece = await reader.readuntil(_DOT_CRLF)
        except asyncio.LimitOverrunError as overrun:
            piece = await reader.read(overrun.consumed)  # no end in sight yet: keep what is there
        except asyncio.IncompleteReadError as error:
            raise ConnectionResetError("connection closed during DATA") from error
        if on_progress is not None:
            on_progress()
        if piece.endswith(_DOT_CRLF) and (tail + piece[:-3])[-2:] == b"\r\n":
            piece = piece[:-3]  # the end marker
            ended = True
        else:
            ended = False
        if piece:
            tail = (tail + piece)[-2:]
            size += len(piece)
            if size_limit is not None and size > size_limit:
                too_big = True
                pieces.clear()
            if not too_big:
                pieces.append(piece)
        if ended:
            break
    if too_big:
        return DataOutcome(b"", too_big=True)
    content = b"".join(pieces)
    # Dot-unstuffing: a line's leading dot goes (lines start after CRLF only, and at the start).
    content = content.replace(b"\r\n.", b"\r\n")
    if content.startswith(b"."):
        content = content[1:]
    if _has_bare_line_end(content):
        if reject_bare_line_ends:
            return DataOutcome(b"", bare_line_ends=True)
        content = _BARE_LINE_END.sub(b"\r\n", content)
    return DataOutcome(content)


def _has_bare_line_end(content: bytes) -> bool:
    """Whether a CR or an LF stands outside a CRLF (three counts: faster than the regex's search)."""
    pairs = content.count(b"\r\n")
    return content.count(b"\n") != pairs or content.count(b"\r") != pairs
