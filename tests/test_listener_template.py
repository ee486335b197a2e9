"""The listener initialises each connection's protocol from a template of what aiosmtpd's
``SMTP.__init__`` computed once: every new protocol must look exactly like a freshly initialised one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import MethodType

from aiosmtpd.smtp import SMTP

from salmon_relayauth.listener import smtp as listener_smtp
from salmon_relayauth.listener.server import RelayServer
from salmon_relayauth.listener.smtp import ConnectorSMTP
from salmon_relayauth.policy import load_policy

ROOT = Path(__file__).resolve().parent.parent


def test_templated_protocol_equals_an_initialised_one() -> None:
    async def main() -> None:
        policy = load_policy(ROOT / "sample_app" / "config" / "relay.toml")
        server = RelayServer(policy, None, asyncio.get_running_loop())  # type: ignore[arg-type]
        listener_smtp._TEMPLATES.pop(ConnectorSMTP, None)
        first = ConnectorSMTP(server)  # initialised by aiosmtpd, and captured
        assert ConnectorSMTP in listener_smtp._TEMPLATES
        second = ConnectorSMTP(server)  # from the template
        assert set(vars(second)) == set(vars(first))
        for name, value in vars(first).items():
            other = vars(second)[name]
            if isinstance(value, MethodType):
                assert other.__func__ is value.__func__ and other.__self__ is second, name
            elif name in ("_auth_methods",):
                assert set(other) == set(value) == {"LOGIN", "PLAIN"}
                assert all(entry.method.__self__ is second and entry.is_builtin for entry in other.values())
            elif name in ("_smtp_methods", "_strong_reader", "_stream_reader_wr", "_closed", "_drain_waiters"):
                assert other is not value, name  # per connection
            else:
                assert other == value, name
        assert second._strong_reader is not first._strong_reader
        assert type(second._strong_reader).__name__ == "CRLFStreamReader"
        assert second.hostname == policy.config.server.fqdn

    asyncio.run(main())


def test_a_protocol_class_that_cannot_be_templated_is_initialised_every_time() -> None:
    class Unusual(ConnectorSMTP):
        def __init__(self, server: RelayServer) -> None:
            self.extra = [1]  # a mutable attribute the template does not know to share
            super().__init__(server)

    calls = []
    original = SMTP.__init__

    def counting(self: SMTP, *args: object, **kwargs: object) -> None:
        calls.append(self)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    async def main() -> None:
        policy = load_policy(ROOT / "sample_app" / "config" / "relay.toml")
        server = RelayServer(policy, None, asyncio.get_running_loop())  # type: ignore[arg-type]
        SMTP.__init__ = counting  # type: ignore[method-assign]
        try:
            for _ in range(3):
                Unusual(server)
        finally:
            SMTP.__init__ = original  # type: ignore[method-assign]
        assert len(calls) == 3 and Unusual in listener_smtp._UNTEMPLATED

    asyncio.run(main())
