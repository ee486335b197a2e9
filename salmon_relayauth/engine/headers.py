"""The header block of a raw message: its size, field names and hop count, and field removal.

Works on bytes as received (CRLF or LF line ends) so the body is never parsed or re-encoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MessageFacts", "message_facts", "remove_header_fields"]

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the end-of-data checks look at.

    :param size: the whole message in bytes.
    :param header_size: the header block in bytes.
    :param header_names: field names in order, as written.
    :param hop_count: the number of ``Received:`` fields.
    """

    size: int
    header_size: int
    header_names: tuple[str, ...]
    hop_count: int


def _header_block_length(raw: bytes) -> int:
    """Bytes of the header block, including the line end of its last field (not the blank line)."""
    match = _HEADER_END.search(raw)
    if match is None:
        return len(raw)
    return match.start() + (2 if raw[match.start() : match.start() + 1] == b"\r" else 1)


def message_facts(raw: bytes) -> MessageFacts:
    end = _header_block_length(raw)
    names = tuple(name.decode("ascii") for name in _FIELD_NAME.findall(raw, 0, end))
    hops = sum(1 for name in names if name.lower() == "received")
    return MessageFacts(len(raw), end, names, hops)


def remove_header_fields(raw: bytes, names: set[str]) -> bytes:
    """``raw`` without the header fields (with their folded continuation lines) named in ``names``."""
    if not names:
        return raw
    end = _header_block_length(raw)
    kept: list[bytes] = []
    dropping = False
    for line in raw[:end].splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        dropping = name in names
        if not dropping:
            kept.append(line)
    return b"".join(kept) + raw[end:]
