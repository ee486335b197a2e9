"""Where aiosmtpd's behaviour is adjusted to this relay's: line ends, reply texts, unknown commands."""

from __future__ import annotations

import asyncio
from typing import Any

from ..model.addresses import AddressError, client_address

__all__ = ["AIOSMTPD_REPLIES", "CRLFStreamReader", "CommandTable", "plain_address"]


class CRLFStreamReader(asyncio.StreamReader):
    """aiosmtpd reads command lines with ``readuntil()``, whose default separator is a bare LF."""

    async def readuntil(self, separator: Any = b"\r\n") -> bytes:
        return await super().readuntil(separator)


# aiosmtpd's own replies to malformed lines, in the relay's spelling (no "Error" and no Python words).
AIOSMTPD_REPLIES = {
    "500 Error: bad syntax": "500 5.5.2 Syntax error, command unrecognized",
    "500 Error: strict ASCII mode": "500 5.5.2 Syntax error, command contains non-ASCII characters",
    "500 Command line too long": "500 5.5.2 Command too long",
    "554 Command refused due to lack of security": "554 5.7.3 Unable to initialize security subsystem",
}


class CommandTable(dict[str, Any]):
    """aiosmtpd's command table, answering every unknown verb with this relay's own handler."""

    def __init__(self, commands: dict[str, Any], unknown: Any) -> None:
        super().__init__(commands)
        self.unknown = unknown

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key, self.unknown)


def plain_address(address: str) -> str:
    """An IPv4-mapped IPv6 peer (``::ffff:192.0.2.1``) as the IPv4 address it is."""
    try:
        version, value = client_address(address)
    except AddressError:
        return address
    if version == 4 and ":" in address:
        return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))
    return address
