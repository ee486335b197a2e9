"""Where aiosmtpd's behaviour is adjusted to this relay's: line ends, reply texts, unknown commands."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from types import MethodType
from typing import Any

from aiosmtpd.smtp import SMTP, _AuthMechAttr

from ..model.addresses import AddressError, client_address

__all__ = ["AIOSMTPD_REPLIES", "CRLFStreamReader", "CommandTable", "SMTPTemplate", "plain_address", "smtp_commands"]


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


class CommandTable:
    """aiosmtpd's command table for one connection (aiosmtpd only ever calls ``get``): every verb,
    known or not, is run through ``run(verb, handler, argument)``, the protocol's logging wrapper;
    unknown verbs get ``unknown``. The handlers are the class's functions, bound per call."""

    __slots__ = ("_run", "_commands", "_unknown")

    def __init__(self, run: Callable[..., Awaitable[None]], commands: dict[str, Callable[..., Awaitable[None]]],
                 unknown: Callable[..., Awaitable[None]]) -> None:
        self._run, self._commands, self._unknown = run, commands, unknown

    def get(self, verb: str, default: Any = None) -> Callable[[str | None], Awaitable[None]]:
        handler = self._commands.get(verb)
        if handler is None:
            return functools.partial(self._run, "UNKNOWN", self._unknown)
        return functools.partial(self._run, verb, handler)


def plain_address(address: str) -> str:
    """An IPv4-mapped IPv6 peer (``::ffff:192.0.2.1``) as the IPv4 address it is."""
    try:
        version, value = client_address(address)
    except AddressError:
        return address
    if version == 4 and ":" in address:
        return ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0))
    return address


class SMTPTemplate:
    """What aiosmtpd's ``SMTP.__init__`` computed for one instance, to give the next ones of the
    same class on the same loop without computing it again.

    ``SMTP.__init__`` runs ``inspect.getmembers`` and ``dir`` over the protocol and its handler for
    every connection (about 200 µs, more than a session's whole policy work), yet everything it sets
    depends only on the class and the constructor's arguments. :meth:`capture` keeps those attributes;
    :meth:`apply` gives them to a new instance, with methods bound to it, and a fresh stream reader.
    ``capture`` returns None when it meets an attribute it does not know how to copy (a future
    aiosmtpd), and the caller then keeps calling ``SMTP.__init__``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, plain: dict[str, Any], auth: dict[str, tuple[Any, bool]]) -> None:
        self.loop = loop
        self._plain = plain
        self._auth = auth  # mechanism -> (function, whether it is a method of the protocol itself)

    @classmethod
    def capture(cls, instance: SMTP, loop: asyncio.AbstractEventLoop) -> SMTPTemplate | None:
        reader_state = set(vars(asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), lambda *_: None, loop=loop)))
        plain: dict[str, Any] = {}
        for name, value in vars(instance).items():
            if name in reader_state or name in ("_auth_methods", "_smtp_methods"):
                continue
            if isinstance(value, (str, int, float, bool, type(None))) or name in _SHARED:
                plain[name] = value
            else:
                return None  # something this class does not know to be safe to share
        auth: dict[str, tuple[Any, bool]] = {}
        for mechanism, entry in instance._auth_methods.items():
            method = entry.method
            if not isinstance(method, MethodType) or method.__self__ not in (instance, instance.event_handler):
                return None
            if (method.__self__ is instance) != entry.is_builtin:
                return None
            auth[mechanism] = (method.__func__ if method.__self__ is instance else method, entry.is_builtin)
        return cls(loop, plain, auth)

    def apply(self, instance: SMTP) -> None:
        """Initialise ``instance`` as ``SMTP.__init__`` would have, with the captured arguments."""
        reader = asyncio.StreamReader(loop=self.loop, limit=instance.line_length_limit)
        asyncio.StreamReaderProtocol.__init__(instance, reader, client_connected_cb=instance._cb_client_connected, loop=self.loop)
        instance.__dict__.update(self._plain)
        instance._auth_methods = {
            mechanism: _AuthMechAttr(MethodType(function, instance) if builtin else function, builtin)
            for mechanism, (function, builtin) in self._auth.items()
        }


# Attributes SMTP.__init__ sets to objects every instance may share: the loop, the handler (the
# relay's is stateless), its hooks (bound to that handler), and the AUTH callback (a function).
# The command table is the caller's to build (see smtp_commands).
_SHARED = frozenset({"loop", "event_handler", "_handle_hooks", "_auth_callback"})


def smtp_commands(cls: type[SMTP]) -> dict[str, Callable[..., Awaitable[None]]]:
    """The verbs a protocol class implements (its ``smtp_*`` functions), as aiosmtpd finds them."""
    commands = _COMMANDS.get(cls)
    if commands is None:
        commands = _COMMANDS[cls] = {name[5:]: getattr(cls, name) for name in dir(cls) if name.startswith("smtp_")}
    return commands


_COMMANDS: dict[type[SMTP], dict[str, Callable[..., Awaitable[None]]]] = {}
