"""Validation of a whole configuration: value ranges, Exchange's cross-parameter rules, overlaps.

Sources: reference §4.2 (auth mechanisms), §6.3 (overlaps), §7 (parameter ranges), §7.7 (collected
cross-parameter rules). Every problem names the connector and the field.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator
from datetime import timedelta
from typing import NamedTuple

from ..model.addresses import RemoteIPRange
from ..model.connector import MAX_NAME_LENGTH, Connector, RelayConfig
from ..model.enums import AuthMechanism as A
from ..model.enums import PermissionGroup as G
from ..model.units import format_timespan
from .problems import ConfigProblem, Severity

__all__ = ["validate_config", "overlap_problems"]

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_MAX_INT32 = 2147483647

# (field, lowest, highest) for plain integer limits; None limits (Unlimited) are always valid.
_INTEGER_RANGES = (
    ("max_message_size", 65536, _MAX_INT32),
    ("max_header_size", 1, _MAX_INT32),
    ("max_recipients_per_message", 1, 512000),
    ("max_hop_count", 1, 500),
    ("max_local_hop_count", 0, 50),
    ("max_protocol_errors", 0, _MAX_INT32),
    ("max_inbound_connection", 1, _MAX_INT32),
    ("max_inbound_connection_per_source", 1, 10000),
    ("max_inbound_connection_percentage_per_source", 1, 100),
    ("message_rate_limit", 1, _MAX_INT32),
    ("max_logon_failures", 0, 10),
    ("rate_limit_ipv4_prefix", 8, 32),
    ("rate_limit_ipv6_prefix", 16, 128),
)
_TIMEOUT_RANGE = (timedelta(seconds=1), timedelta(days=1))
_TARPIT_RANGE = (timedelta(0), timedelta(minutes=10))


def is_hostname(name: str) -> bool:
    """A DNS name of letters, digits and hyphens, up to 253 characters."""
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def validate_config(config: RelayConfig, skip_connector_rules: Collection[str] = ()) -> list[ConfigProblem]:
    """Every problem of a configuration whose values each parsed on their own.

    :param skip_connector_rules: names of connectors whose single-connector rules are not checked
        (the loader passes those with a value it could not read).
    """
    problems: list[ConfigProblem] = []

    def report(section: str, field: str, message: str, severity: Severity = Severity.ERROR) -> None:
        problems.append(ConfigProblem(config.source, section, field, message, severity))

    if not is_hostname(config.server.fqdn):
        report("[server]", "fqdn", f"{config.server.fqdn!r} is not a valid host name")
    _check_domains(config, report)
    seen: dict[str, str] = {}
    for connector in config.connectors:
        section = f"connector {connector.name!r}"
        folded = connector.name.casefold()
        if folded in seen:
            report(section, "name", f"duplicate connector name (also used by {seen[folded]!r})")
        seen[folded] = connector.name
        if connector.name in skip_connector_rules:
            continue
        for field, message in connector_problems(connector):
            report(section, field, message)
        if not _can_accept_sessions(connector):
            report(
                section,
                "permission_groups",
                "no permission group and no allow entry: this connector accepts no mail from anyone",
                Severity.WARNING,
            )
    _check_tls(config, report)
    problems.extend(overlap_problems(config.live_connectors, config.source))
    problems.extend(_dry_run_problems(config, report))
    return problems


def _dry_run_problems(config: RelayConfig, report: Callable[..., None]) -> list[ConfigProblem]:
    """A dry-run connector must name a live connector it replaces (if any), listen where live traffic
    arrives, and fit with the others as it would once made live."""
    live_names = {c.name.casefold() for c in config.connectors if not c.dry_run}
    live_bindings = {binding for c in config.live_connectors for binding in c.bindings}
    for connector in config.enabled_connectors:
        if not connector.dry_run:
            if connector.dry_run_replaces:
                report(f"connector {connector.name!r}", "dry_run_replaces", "only a dry-run connector replaces another")
            continue
        section = f"connector {connector.name!r}"
        if connector.dry_run_replaces and connector.dry_run_replaces.casefold() not in live_names:
            report(section, "dry_run_replaces", f"{connector.dry_run_replaces!r} is not a connector that is not in dry run")
        unheard = [str(b) for b in connector.bindings if not any(b.overlaps(live) for live in live_bindings)]
        if unheard:
            report(section, "bindings", f"no live connector listens on {', '.join(unheard)}: the dry run sees no traffic there", Severity.WARNING)
    what_if = config.what_if()
    if what_if is None:
        return []
    return [
        ConfigProblem(p.source, p.section, p.field, f"once the dry run is made live: {p.message}", p.severity)
        for p in overlap_problems(what_if.live_connectors, config.source)
    ]


def _check_tls(config: RelayConfig, report: Callable[..., None]) -> None:
    """STARTTLS needs a certificate: without one, a connector that depends on TLS cannot work."""
    if config.tls.certificate is not None:
        return
    for connector in config.enabled_connectors:
        section = f"connector {connector.name!r}"
        if connector.require_tls:
            report(
                section, "require_tls", "no certificate in [tls]: STARTTLS is never offered, so every MAIL is refused",
                Severity.WARNING,
            )
        elif A.BASIC_AUTH_REQUIRE_TLS in connector.auth_mechanism:
            report(
                section, "auth_mechanism",
                "no certificate in [tls]: STARTTLS is never offered, so 'BasicAuthRequireTLS' never offers AUTH",
                Severity.WARNING,
            )


def _check_domains(config: RelayConfig, report: Callable[[str, str, str], None]) -> None:
    seen: set[str] = set()
    for index, domain in enumerate(config.accepted_domains):
        name = domain.domain[2:] if domain.domain.startswith("*.") else domain.domain
        if not is_hostname(name):
            report(f"accepted_domains[{index}]", "domain", f"{domain.domain!r} is not a domain name or '*.domain'")
        elif "." not in name:
            # "com" or "*.com" would make every recipient under a top-level domain local: an open relay.
            report(f"accepted_domains[{index}]", "domain", f"{domain.domain!r} is a whole top-level domain, not one of yours")
        if domain.domain in seen:
            report(f"accepted_domains[{index}]", "domain", f"{domain.domain!r} is listed twice")
        seen.add(domain.domain)


def _can_accept_sessions(connector: Connector) -> bool:
    groups = connector.permission_groups - {G.NONE, G.CUSTOM}
    return bool(groups) or any(not entry.deny for entry in connector.permissions)


def connector_problems(connector: Connector) -> Iterator[tuple[str, str]]:
    """``(field, message)`` for every rule one connector breaks on its own."""
    name = connector.name
    if len(name) > MAX_NAME_LENGTH:
        yield "name", f"{len(name)} characters; a connector name has at most {MAX_NAME_LENGTH}"
    if any(ord(char) < 32 or char in "\\" for char in name):
        yield "name", f"{name!r} contains a control character or a backslash"
    if not connector.bindings:
        yield "bindings", "must list at least one local IP:port"
    if not connector.remote_ip_ranges:
        yield "remote_ip_ranges", "must list at least one address, range or CIDR block"
    for field, low, high in _INTEGER_RANGES:
        value = getattr(connector, field)
        if value is not None and not low <= value <= high:
            yield field, f"{value} is outside the allowed range {low}-{high}"
    for field in ("connection_timeout", "connection_inactivity_timeout"):
        yield from _span_in_range(connector, field, _TIMEOUT_RANGE)
    for field in ("tarpit_interval", "auth_tarpit_interval"):
        yield from _span_in_range(connector, field, _TARPIT_RANGE)
    if connector.connection_inactivity_timeout >= connector.connection_timeout:
        yield (
            "connection_inactivity_timeout",
            "must be shorter than connection_timeout "
            f"({format_timespan(connector.connection_inactivity_timeout)} is not less than "
            f"{format_timespan(connector.connection_timeout)})",
        )
    if connector.binary_mime_enabled and not connector.chunking_enabled:
        yield "binary_mime_enabled", "BINARYMIME needs chunking_enabled = true"
    if connector.banner is not None:
        if "\r" in connector.banner or "\n" in connector.banner:
            yield "banner", "must be one line"
        elif not (connector.banner == "220" or connector.banner.startswith("220 ")):
            yield "banner", f"{connector.banner!r} must start with '220 '"
    if connector.fqdn is not None and not is_hostname(connector.fqdn):
        yield "fqdn", f"{connector.fqdn!r} is not a valid host name"
    yield from _auth_problems(connector)
    groups = connector.permission_groups
    if G.NONE in groups and len(groups) > 1:
        yield "permission_groups", "'None' cannot be combined with other permission groups"


def _span_in_range(connector: Connector, field: str, bounds: tuple[timedelta, timedelta]) -> Iterator[tuple[str, str]]:
    value: timedelta = getattr(connector, field)
    low, high = bounds
    if not low <= value <= high:
        yield field, f"{format_timespan(value)} is outside the allowed range {format_timespan(low)}-{format_timespan(high)}"


def _auth_problems(connector: Connector) -> Iterator[tuple[str, str]]:
    """The auth-mechanism rules of New-ReceiveConnector (reference §4.2)."""
    auth = connector.auth_mechanism
    if A.NONE in auth and len(auth) > 1:
        yield "auth_mechanism", "'None' must be used by itself"
    if A.BASIC_AUTH_REQUIRE_TLS in auth and not {A.BASIC_AUTH, A.TLS} <= auth:
        yield "auth_mechanism", "'BasicAuthRequireTLS' also needs 'BasicAuth' and 'Tls'"
    if A.EXTERNAL_AUTHORITATIVE in auth:
        if auth - {A.EXTERNAL_AUTHORITATIVE, A.TLS}:
            yield "auth_mechanism", "the only value allowed with 'ExternalAuthoritative' is 'Tls'"
        if G.EXCHANGE_SERVERS not in connector.permission_groups:
            yield "permission_groups", "'ExternalAuthoritative' needs the 'ExchangeServers' permission group"
    if connector.require_tls and A.TLS not in auth:
        yield "require_tls", "require_tls = true needs 'Tls' in auth_mechanism"
    if connector.domain_secure_enabled:
        if A.TLS not in auth:
            yield "domain_secure_enabled", "domain_secure_enabled = true needs 'Tls' in auth_mechanism"
        if A.EXTERNAL_AUTHORITATIVE in auth:
            yield "domain_secure_enabled", "domain_secure_enabled = true cannot be used with 'ExternalAuthoritative'"


def overlap_problems(connectors: tuple[Connector, ...], source: str) -> list[ConfigProblem]:
    """Reference §6.3: on overlapping bindings, remote ranges may nest but not partly overlap, and two
    connectors with the same binding may not claim the same range.

    A specific-IP binding and a wildcard binding of the same port overlap. Equal ranges on a specific
    and a wildcard binding are allowed: the specific binding wins (see the selection index).
    """
    found: dict[str, ConfigProblem] = {}
    for version, members in _binding_groups(connectors):
        for connector, message in _range_conflicts(version, members):
            problem = ConfigProblem(source, f"connector {connector.name!r}", "remote_ip_ranges", message)
            found.setdefault(str(problem), problem)
    return list(found.values())


class _Member(NamedTuple):
    connector: Connector
    specific: bool  # bound to the group's own address rather than through the wildcard


class _Cluster(NamedTuple):
    """One connector's ranges that overlap each other, with the span they cover together."""

    first: int
    last: int
    specific: bool
    member: int
    ranges: tuple[RemoteIPRange, ...]


def _binding_groups(connectors: tuple[Connector, ...]) -> Iterator[tuple[int, list[_Member]]]:
    """Sets of connectors whose bindings overlap, with their address family.

    One set per (port, family) for the wildcard alone, and one per specific local address holding
    the connectors bound to it plus those bound to the wildcard.
    """
    # Connectors are keyed by position: comparing the dataclasses field by field would make
    # this quadratic in the number of connectors.
    wildcard: dict[tuple[int, int], dict[int, Connector]] = defaultdict(dict)
    specific: dict[tuple[int, int], dict[int, dict[int, Connector]]] = defaultdict(lambda: defaultdict(dict))
    for position, connector in enumerate(connectors):
        for binding in connector.bindings:
            key = (binding.port, binding.version)
            bound = wildcard[key] if binding.address is None else specific[key][binding.address]
            bound[position] = connector
    for key in set(wildcard) | set(specific):
        wild = wildcard.get(key, {})
        yield key[1], [_Member(connector, False) for connector in wild.values()]
        for bound in specific.get(key, {}).values():
            others = [_Member(connector, False) for position, connector in wild.items() if position not in bound]
            yield key[1], [_Member(connector, True) for connector in bound.values()] + others


def _range_conflicts(version: int, members: list[_Member]) -> Iterator[tuple[Connector, str]]:
    """Sweep the ranges in order, keeping the chain of spans that contain the current one.

    A connector's own ranges may overlap each other, so each connector's ranges are first grouped
    into clusters of overlapping ranges. Clusters of different connectors are compared range by
    range: an overlap must be a nesting, and equal ranges need different binding kinds. A cluster
    of one range only needs comparing with the innermost open span (the others contain it).
    """
    clusters = [
        _Cluster(ranges[0].first, max(r.last for r in ranges), member.specific, index, tuple(ranges))
        for index, member in enumerate(members)
        for ranges in _overlapping_clusters([r for r in member.connector.remote_ip_ranges if r.version == version])
    ]
    clusters.sort(key=lambda cluster: (cluster.first, -cluster.last, cluster.specific, cluster.member))
    chain: list[_Cluster] = []
    for cluster in clusters:
        while chain and chain[-1].last < cluster.first:
            chain.pop()
        conflict = None
        for depth, outer in enumerate(reversed(chain)):
            if depth and len(outer.ranges) == 1 and len(cluster.ranges) == 1:
                continue
            conflict = _conflict(members, cluster, outer)
            if conflict is not None:
                break
        if conflict is not None:
            yield members[cluster.member].connector, conflict
            continue
        chain.append(cluster)


def _conflict(members: list[_Member], inner: _Cluster, outer: _Cluster) -> str | None:
    this, that = members[inner.member].connector, members[outer.member].connector
    for mine in inner.ranges:
        for theirs in outer.ranges:
            if not mine.overlaps(theirs):
                continue
            if mine.first == theirs.first and mine.last == theirs.last:
                if inner.specific == outer.specific:
                    return (
                        f"{mine} of connector {this.name!r} is the same range as {theirs} of connector "
                        f"{that.name!r} on the same binding; give one of them another local IP or another range"
                    )
            elif not (mine.covers(theirs) or theirs.covers(mine)):
                return (
                    f"{mine} of connector {this.name!r} partly overlaps {theirs} of connector {that.name!r}; "
                    "ranges on connectors that share a binding may nest but not partly overlap"
                )
    return None


def _overlapping_clusters(ranges: list[RemoteIPRange]) -> list[list[RemoteIPRange]]:
    clusters: list[list[RemoteIPRange]] = []
    end = -1
    for current in sorted(ranges, key=lambda r: (r.first, -r.last)):
        if clusters and current.first <= end:
            clusters[-1].append(current)
            end = max(end, current.last)
        else:
            clusters.append([current])
            end = current.last
    return clusters
