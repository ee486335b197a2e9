"""Test-only Salmon handlers that refuse or crash for chosen recipients (loaded by test_salmon_routing).

- ``refused@fabrikam.com``: ``SMTPError(550, "5.7.1 Not today")``
- ``greylisted@fabrikam.com``: ``SMTPError(451, "4.7.1 Greylisted, try again later")``
- ``forged@fabrikam.com``: an ``SMTPError`` whose text tries to smuggle a second reply line
- ``crash@fabrikam.com``: an ordinary exception (:class:`HandlerMeltdown`)

Any other recipient passes through untouched.
"""

from __future__ import annotations

from typing import Any

from salmon.routing import nolocking, route, stateless
from salmon.server import SMTPError

CRASH_DETAIL = "internal-detail-7f3a: database password is hunter2"


class HandlerMeltdown(RuntimeError):
    """An ordinary handler bug; its name and text must never reach the SMTP client."""


@route("(address)@(host)", address=".+", host=".+")
@stateless
@nolocking
def REFUSE_OR_CRASH(message: Any, address: str | None = None, host: str | None = None) -> None:
    recipient = str(message.To).lower()
    if recipient == "refused@fabrikam.com":
        raise SMTPError(550, "5.7.1 Not today")
    if recipient == "greylisted@fabrikam.com":
        raise SMTPError(451, "4.7.1 Greylisted, try again later")
    if recipient == "forged@fabrikam.com":
        raise SMTPError(550, "5.7.1 Not today\r\n250 2.6.0 <forged> Queued mail for delivery")
    if recipient == "crash@fabrikam.com":
        raise HandlerMeltdown(CRASH_DETAIL)
