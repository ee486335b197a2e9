"""Parsing of connector address syntax: remote IP ranges and local bindings.

Remote ranges accept the forms New-ReceiveConnector accepts: a single address, an ``a-b`` range, CIDR
(host bits allowed, normalised to the network) and IPv6 with a zone index (the zone is dropped: it
names a local interface, not a part of the client's address). Bindings are ``IPv4:port``,
``[IPv6]:port`` and the wildcards ``0.0.0.0:port`` and ``[::]:port``.

Addresses are kept as integers so that the selection index compares plain ints.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "AddressError",
    "Binding",
    "RangeForm",
    "RemoteIPRange",
    "client_address",
    "parse_binding",
    "parse_ip",
    "parse_remote_ip_range",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressError(ValueError):
    """A remote IP range, binding or client address that cannot be parsed; the message names the value."""


class RangeForm(Enum):
    """How a remote range was written; kept so the range renders back in the operator's form."""

    SINGLE = "single"
    RANGE = "range"
    CIDR = "cidr"


def parse_ip(text: str) -> IPAddress:
    """Parse one IPv4 or IPv6 address (an IPv6 zone index such as ``%11`` is dropped)."""
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    if "%" in raw:
        raw, _, zone = raw.partition("%")
        if not zone or ":" not in raw:
            raise AddressError(f"{text!r} is not a valid IP address")
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        raise AddressError(f"{text!r} is not a valid IP address") from None


def client_address(text: str) -> tuple[int, int]:
    """Return ``(version, integer)`` for a client address; IPv4-mapped IPv6 counts as IPv4.

    ``::ffff:192.168.5.10`` is how a dual-stack socket reports an IPv4 client, so it must match the
    IPv4 ranges that name ``192.168.5.10``. Addresses as sockets print them take a fast path
    (this runs for every connection); anything else goes through the strict parser.
    """
    try:
        if ":" not in text:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        value = int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except (OSError, TypeError):
        return _family_and_int(parse_ip(text))
    if value >> 32 == 0xFFFF:
        return 4, value & 0xFFFFFFFF
    return 6, value


def _family_and_int(address: IPAddress) -> tuple[int, int]:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return 4, int(address.ipv4_mapped)
    return address.version, int(address)


@dataclass(frozen=True, slots=True)
class RemoteIPRange:
    """A contiguous block of client addresses of one family, ``first``..``last`` inclusive."""

    version: int
    first: int
    last: int
    form: RangeForm

    @property
    def size(self) -> int:
        """Number of addresses in the range: the smaller, the more specific."""
        return self.last - self.first + 1

    def contains(self, version: int, address: int) -> bool:
        return version == self.version and self.first <= address <= self.last

    def overlaps(self, other: RemoteIPRange) -> bool:
        return self.version == other.version and self.first <= other.last and other.first <= self.last

    def covers(self, other: RemoteIPRange) -> bool:
        """True when every address of ``other`` is inside this range."""
        return self.version == other.version and self.first <= other.first and other.last <= self.last

    def __str__(self) -> str:
        first = ipaddress.ip_address(self.first) if self.version == 4 else ipaddress.IPv6Address(self.first)
        if self.form is RangeForm.SINGLE:
            return str(first)
        if self.form is RangeForm.CIDR:
            bits = 32 if self.version == 4 else 128
            prefix = bits - (self.size.bit_length() - 1)
            return f"{first}/{prefix}"
        last = ipaddress.ip_address(self.last) if self.version == 4 else ipaddress.IPv6Address(self.last)
        return f"{first}-{last}"


def parse_remote_ip_range(text: str) -> RemoteIPRange:
    """Parse one RemoteIPRanges value; errors name the value and what is wrong with it."""
    if not isinstance(text, str):
        raise AddressError(f"{text!r} is not a string")
    raw = text.strip()
    if not raw:
        raise AddressError("empty remote IP range")
    if "/" in raw:
        return _parse_cidr(text, raw)
    if "-" in raw:
        low_text, _, high_text = raw.partition("-")
        low, high = parse_ip(low_text), parse_ip(high_text)
        (version, first), (high_version, last) = _family_and_int(low), _family_and_int(high)
        if version != high_version and low.version == high.version == 6:
            # One end in the IPv4-mapped block (::ffff:0:0/96), one outside: an IPv6 range as written.
            version = high_version = 6
            first, last = int(low), int(high)
        if version != high_version:
            raise AddressError(f"{text!r} mixes IPv4 and IPv6 ends")
        if first > last:
            raise AddressError(f"{text!r} is reversed: {low_text.strip()} is after {high_text.strip()}")
        return RemoteIPRange(version, first, last, RangeForm.RANGE)
    version, value = _family_and_int(parse_ip(raw))
    return RemoteIPRange(version, value, value, RangeForm.SINGLE)


def _is_decimal(text: str) -> bool:
    """ASCII digits only: ``int()`` would also take ``2_5``, `` 25`` and non-ASCII digits."""
    return text.isascii() and text.isdigit()


def _parse_cidr(text: str, raw: str) -> RemoteIPRange:
    address_text, _, prefix_text = raw.partition("/")
    address = parse_ip(address_text)
    bits = 32 if address.version == 4 else 128
    if not _is_decimal(prefix_text.strip()):
        raise AddressError(f"{text!r} has a prefix length that is not a number")
    prefix = int(prefix_text.strip())
    if not 0 <= prefix <= bits:
        raise AddressError(f"{text!r} has prefix length {prefix}; IPv{address.version} allows 0 to {bits}")
    host_bits = bits - prefix
    first = (int(address) >> host_bits) << host_bits
    return RemoteIPRange(address.version, first, first + (1 << host_bits) - 1, RangeForm.CIDR)


@dataclass(frozen=True, slots=True)
class Binding:
    """A local listen endpoint. ``address`` is None for the family wildcard (``0.0.0.0`` or ``[::]``)."""

    version: int
    address: int | None
    port: int

    @property
    def is_wildcard(self) -> bool:
        return self.address is None

    @property
    def host(self) -> str:
        """The address to bind a socket to."""
        if self.address is None:
            return "0.0.0.0" if self.version == 4 else "::"
        return str(ipaddress.IPv4Address(self.address) if self.version == 4 else ipaddress.IPv6Address(self.address))

    def covers(self, version: int, address: int, port: int) -> bool:
        """True when a connection accepted at local ``address:port`` arrived on this binding."""
        return port == self.port and version == self.version and self.address in (None, address)

    def overlaps(self, other: Binding) -> bool:
        """Two bindings overlap when one socket could accept a connection meant for the other."""
        return (
            self.port == other.port
            and self.version == other.version
            and (self.address is None or other.address is None or self.address == other.address)
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" if self.version == 4 else f"[{self.host}]:{self.port}"


def parse_binding(text: str) -> Binding:
    """Parse ``IPv4:port`` or ``[IPv6]:port``; errors name the value."""
    if not isinstance(text, str):
        raise AddressError(f"{text!r} is not a string")
    raw = text.strip()
    if raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
        if not sep:
            raise AddressError(f"binding {text!r} must be written [IPv6]:port")
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or ":" in host:
            raise AddressError(f"binding {text!r} must be written IPv4:port or [IPv6]:port")
    if not _is_decimal(port_text):
        raise AddressError(f"binding {text!r} has a port that is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise AddressError(f"binding {text!r} has port {port}; ports run from 1 to 65535")
    address = parse_ip(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        raise AddressError(f"binding {text!r} uses an IPv4-mapped address; write the IPv4 address instead")
    value = int(address)
    return Binding(address.version, None if value == 0 else value, port)
