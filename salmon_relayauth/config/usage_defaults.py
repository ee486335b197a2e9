"""Exchange's creation-time defaults per usage type (reference §5).

Usage only matters for the keys an operator leaves out; afterwards the connector is just its values.
``None`` for bindings or remote ranges means the usage requires the operator to give them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.addresses import Binding, RemoteIPRange, parse_binding, parse_remote_ip_range
from ..model.enums import AuthMechanism, PermissionGroup, Usage

__all__ = ["UsageDefaults", "USAGE_DEFAULTS"]


@dataclass(frozen=True)
class UsageDefaults:
    permission_groups: frozenset[PermissionGroup]
    auth_mechanism: frozenset[AuthMechanism]
    bindings: tuple[Binding, ...] | None
    remote_ip_ranges: tuple[RemoteIPRange, ...] | None


_A = AuthMechanism
_G = PermissionGroup


def _both_families(port: int) -> tuple[Binding, ...]:
    return (parse_binding(f"0.0.0.0:{port}"), parse_binding(f"[::]:{port}"))


USAGE_DEFAULTS: dict[Usage, UsageDefaults] = {
    Usage.CLIENT: UsageDefaults(
        frozenset({_G.EXCHANGE_USERS}),
        frozenset({_A.TLS, _A.BASIC_AUTH, _A.BASIC_AUTH_REQUIRE_TLS, _A.INTEGRATED}),
        _both_families(587),
        None,
    ),
    Usage.CUSTOM: UsageDefaults(frozenset({_G.NONE}), frozenset({_A.TLS}), None, None),
    Usage.INTERNAL: UsageDefaults(
        frozenset({_G.EXCHANGE_LEGACY_SERVERS, _G.EXCHANGE_SERVERS}),
        frozenset({_A.TLS, _A.EXCHANGE_SERVER}),
        _both_families(25),
        None,
    ),
    Usage.INTERNET: UsageDefaults(
        frozenset({_G.ANONYMOUS_USERS}),
        frozenset({_A.TLS}),
        None,
        (parse_remote_ip_range("0.0.0.0-255.255.255.255"),),
    ),
    Usage.PARTNER: UsageDefaults(frozenset({_G.PARTNERS}), frozenset({_A.TLS}), None, None),
}
