"""Default plugin: refuse configurations that would make the relay an open relay.

A connector on which an anonymous or externally secured session holds
``ms-Exch-SMTP-Accept-Any-Recipient`` may only serve private address space, and at most a /16 of
IPv4 or a /48 of IPv6. Anything wider is an error unless the connector says
``acknowledge_open_relay = true`` (then it is a warning, every time the file is checked).
"""

from __future__ import annotations

import netaddr

from ..config.problems import ConfigProblem, Severity
from ..engine.permissions import connector_grants, fold_grants
from ..engine.principals import default_principals
from ..hookspecs import hookimpl
from ..model.addresses import RemoteIPRange
from ..model.connector import Connector, RelayConfig
from ..model.enums import Right

__all__ = ["OpenRelayCheck"]

# Address space that is not reachable from the Internet: RFC 1918, loopback, link-local,
# carrier-grade NAT (RFC 6598), IPv6 unique-local and link-local.
_PRIVATE = netaddr.IPSet(
    [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    ]
)
_WIDEST = {4: 1 << 16, 6: 1 << 80}  # a /16 of IPv4, a /48 of IPv6
_RELAY = Right.SMTP_ACCEPT_ANY_RECIPIENT


def _public_part(remote: RemoteIPRange) -> netaddr.IPSet:
    block = netaddr.IPRange(netaddr.IPAddress(remote.first, remote.version), netaddr.IPAddress(remote.last, remote.version))
    return netaddr.IPSet(block) - _PRIVATE


class OpenRelayCheck:
    name = "relayauth.open_relay"

    @hookimpl
    def relayauth_validate_config(self, config: RelayConfig) -> list[ConfigProblem]:
        problems = []
        for connector in config.enabled_connectors:
            problems.extend(self._connector_problems(config, connector))
        return problems

    def _connector_problems(self, config: RelayConfig, connector: Connector) -> list[ConfigProblem]:
        principals = default_principals(connector, None)
        rights = fold_grants(connector_grants(connector), principals)
        if _RELAY not in rights:
            return []
        granted_by = next(trace for trace in rights.traces if trace.right is _RELAY).allowed_by
        who = " and ".join(sorted(principals))
        origin = ", ".join(sorted({grant.origin for grant in granted_by}))
        problems = []
        for remote in connector.remote_ip_ranges:
            wide = remote.size > _WIDEST[remote.version]
            public = _public_part(remote)
            if not wide and not public:
                continue
            what = []
            if public:
                sample = next(iter(public.iter_cidrs()))
                what.append(f"includes public address space (for example {sample})")
            if wide:
                what.append(f"is wider than a /{16 if remote.version == 4 else 48}")
            severity = Severity.WARNING if connector.acknowledge_open_relay else Severity.ERROR
            advice = (
                "acknowledged with acknowledge_open_relay = true"
                if connector.acknowledge_open_relay
                else "narrow the range, or set acknowledge_open_relay = true on this connector if this is intended"
            )
            problems.append(
                ConfigProblem(
                    config.source,
                    f"connector {connector.name!r}",
                    "remote_ip_ranges",
                    f"open relay: {remote} {' and '.join(what)}, and {who} holds {_RELAY.value} "
                    f"(granted by {origin}); {advice}",
                    severity,
                )
            )
        return problems
