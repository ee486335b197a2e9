"""Exchange value spellings: byte quantities (``36MB``), timespans (``00:05:00``) and ``Unlimited``."""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

__all__ = [
    "UNLIMITED",
    "format_byte_size",
    "format_timespan",
    "parse_byte_size",
    "parse_limit",
    "parse_timespan",
]

UNLIMITED = "Unlimited"

# Exchange's ByteQuantifiedSize uses binary multiples: 36 MB is 37,748,736 bytes.
_BYTE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
_BYTE_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)?\s*(?:\(\s*([\d,]+)\s*bytes\s*\))?\s*$", re.IGNORECASE)
_MAX_SECONDS = 999_999_999  # timedelta's own limit is about 86 billion seconds
# [-][d.]hh:mm:ss[.fffffff], the form Get-ReceiveConnector prints.
_TIMESPAN = re.compile(r"^\s*(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?\s*$")


def parse_byte_size(value: object) -> int:
    """Bytes from an integer or an Exchange size such as ``36MB``, ``256 KB`` or ``36 MB (37,748,736 bytes)``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is a negative size")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size; write bytes or a size such as '36MB'")
    match = _BYTE_SIZE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a size; write bytes or a size such as '36MB' (units B, KB, MB, GB)")
    number, unit, spelled_out = match.group(1), (match.group(2) or "B").upper(), match.group(3)
    size = Fraction(number) * _BYTE_UNITS[unit]  # exact: a float would round large sizes
    if size.denominator != 1:
        raise ValueError(f"{value!r} is not a whole number of bytes")
    if spelled_out is not None and int(spelled_out.replace(",", "")) != size:
        raise ValueError(f"{value!r} contradicts itself: {number} {unit} is {int(size):,} bytes")
    return int(size)


def format_byte_size(size: int) -> str:
    """The shortest exact Exchange spelling: ``37748736`` -> ``36MB``."""
    for unit in ("TB", "GB", "MB", "KB"):
        if size and size % _BYTE_UNITS[unit] == 0:
            return f"{size // _BYTE_UNITS[unit]}{unit}"
    return f"{size}B"


def parse_timespan(value: object) -> timedelta:
    """A timespan from ``hh:mm:ss``, ``d.hh:mm:ss`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a timespan")
    if isinstance(value, (int, float)):
        if not 0 <= value <= _MAX_SECONDS:
            raise ValueError(f"{value} is not a timespan of 0 to {_MAX_SECONDS} seconds")
        return timedelta(seconds=value)
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a timespan; write 'hh:mm:ss' or 'd.hh:mm:ss'")
    match = _TIMESPAN.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a timespan; write 'hh:mm:ss' or 'd.hh:mm:ss'")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59 or int(hours) > 23:
        raise ValueError(f"{value!r} is not a timespan: hours run to 23, minutes and seconds to 59")
    if int(days or 0) * 86400 > _MAX_SECONDS:
        raise ValueError(f"{value!r} is longer than {_MAX_SECONDS // 86400} days")
    return timedelta(
        days=int(days or 0),
        hours=int(hours),
        minutes=int(minutes),
        seconds=int(seconds),
        microseconds=int((fraction or "0").ljust(7, "0")) // 10,
    )


def format_timespan(span: timedelta) -> str:
    """The Exchange spelling: ``timedelta(minutes=5)`` -> ``00:05:00``; days as ``1.00:00:00``."""
    days = span.days
    hours, rest = divmod(span.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if span.microseconds:
        text += f".{span.microseconds * 10:07d}"
    return f"{days}.{text}" if days else text


def parse_limit(value: object) -> int | None:
    """An integer limit, or None for ``Unlimited`` (any case)."""
    if isinstance(value, str) and value.strip().lower() == UNLIMITED.lower():
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number or 'Unlimited'")
    return value
