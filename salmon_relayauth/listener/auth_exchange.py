"""The AUTH PLAIN and AUTH LOGIN exchanges: decoding what the client sends (never logging it)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

from ..engine.replies import reply
from ..model.decision import Decision

__all__ = ["AuthAbort", "read_credentials"]

_SOURCE = "relayauth.listener"


class AuthAbort(Exception):
    """The AUTH exchange ends early with this refusal."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.render())
        self.decision = decision


def decode_response(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthAbort(Decision(501, "5.5.2", "Cannot decode response", "bad base64", _SOURCE)) from None


async def read_credentials(mechanism: str, initial: str, challenge: Callable[[str], Awaitable[str]]) -> tuple[str, str]:
    """``(username, password)`` for AUTH ``mechanism``, asking the client with ``challenge(prompt)``
    for what the initial response did not carry; :class:`AuthAbort` carries the refusal."""
    if mechanism == "PLAIN":
        response = initial if initial and initial != "=" else await challenge("")
        parts = decode_response(response).split("\0")
        if len(parts) != 3:
            raise AuthAbort(Decision(501, "5.5.2", "Cannot decode response", "AUTH PLAIN not three fields", _SOURCE))
        return parts[1], parts[2]
    if mechanism == "LOGIN":
        username = decode_response(initial) if initial else decode_response(await challenge("VXNlcm5hbWU6"))
        password = decode_response(await challenge("UGFzc3dvcmQ6"))
        return username, password
    raise AuthAbort(reply("auth_unrecognized", f"mechanism {mechanism!r}", _SOURCE))

