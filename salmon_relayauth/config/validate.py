"""Validation of a whole configuration: value ranges, Exchange's cross-parameter rules, overlaps.

Sources: reference §4.2 (auth mechanisms), §6.3 (overlaps), §7 (parameter ranges), §7.7 (collected
cross-parameter rules). Every problem names the connector and the field.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import NamedTuple

from ..model.addresses import RangeForm, RemoteIPRange
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
)
_TIMEOUT_RANGE = (timedelta(seconds=1), timedelta(days=1))
_TARPIT_RANGE = (timedelta(0), timedelta(minutes=10))


def is_hostname(name: str) -> bool:
    """A DNS name of letters, digits and hyphens, up to 253 characters."""
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def validate_config(config: RelayConfig) -> list[ConfigProblem]:
    """Every problem of a configuration whose values each parsed on their own."""
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
        for field, message in connector_problems(connector):
            report(section, field, message)
        if not _can_accept_sessions(connector):
            report(
                section,
                "permission_groups",
                "no permission group and no allow entry: this connector accepts no mail from anyone",
                Severity.WARNING,
            )
    problems.extend(overlap_problems(config.enabled_connectors, config.source))
    return problems


def _check_domains(config: RelayConfig, report: Callable[[str, str, str], None]) -> None:
    seen: set[str] = set()
    for index, domain in enumerate(config.accepted_domains):
        name = domain.domain[2:] if domain.domain.startswith("*.") else domain.domain
        if not is_hostname(name):
            report(f"accepted_domains[{index}]", "domain", f"{domain.domain!r} is not a domain name or '*.domain'")
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


class _Entry(NamedTuple):
    first: int
    last: int
    specific: bool
    member: int
    range: RemoteIPRange


def _binding_groups(connectors: tuple[Connector, ...]) -> Iterator[tuple[int, list[_Member]]]:
    """Sets of connectors whose bindings overlap, with their address family.

    One set per (port, family) for the wildcard alone, and one per specific local address holding
    the connectors bound to it plus those bound to the wildcard.
    """
    wildcard: dict[tuple[int, int], list[Connector]] = defaultdict(list)
    specific: dict[tuple[int, int], dict[int, list[Connector]]] = defaultdict(lambda: defaultdict(list))
    for connector in connectors:
        for binding in connector.bindings:
            key = (binding.port, binding.version)
            bound = wildcard[key] if binding.address is None else specific[key][binding.address]
            if connector not in bound:
                bound.append(connector)
    for key in set(wildcard) | set(specific):
        wild = wildcard.get(key, [])
        yield key[1], [_Member(connector, False) for connector in wild]
        for bound in specific.get(key, {}).values():
            others = [_Member(connector, False) for connector in wild if connector not in bound]
            yield key[1], [_Member(connector, True) for connector in bound] + others


def _range_conflicts(version: int, members: list[_Member]) -> Iterator[tuple[Connector, str]]:
    """Sweep the ranges in order keeping the chain of ranges that contain the current one.

    Each connector's own ranges are merged where they overlap first, so only ranges of different
    connectors meet; a range that starts inside the innermost open range must then end inside it.
    """
    entries = [
        _Entry(merged.first, merged.last, member.specific, index, merged)
        for index, member in enumerate(members)
        for merged in _merge_overlapping([r for r in member.connector.remote_ip_ranges if r.version == version])
    ]
    entries.sort(key=lambda entry: (entry.first, -entry.last, entry.specific, entry.member))
    chain: list[_Entry] = []
    for entry in entries:
        while chain and chain[-1].last < entry.first:
            chain.pop()
        if chain:
            outer = chain[-1]
            this, that = members[entry.member].connector, members[outer.member].connector
            if entry.last > outer.last:
                yield this, (
                    f"{_describe(this, entry.range)} partly overlaps {_describe(that, outer.range)}; "
                    "ranges on connectors that share a binding may nest but not partly overlap"
                )
                continue
            if (entry.first, entry.last, entry.specific) == (outer.first, outer.last, outer.specific):
                yield this, (
                    f"{_describe(this, entry.range)} is the same range as {_describe(that, outer.range)} "
                    "on the same binding; give one of them another local IP or another range"
                )
                continue
        chain.append(entry)


def _describe(connector: Connector, merged: RemoteIPRange) -> str:
    shown = ", ".join(str(r) for r in connector.remote_ip_ranges if merged.covers(r))
    return f"{shown} of connector {connector.name!r}"


def _merge_overlapping(ranges: list[RemoteIPRange]) -> list[RemoteIPRange]:
    merged: list[RemoteIPRange] = []
    for current in sorted(ranges, key=lambda r: (r.first, -r.last)):
        if merged and current.first <= merged[-1].last:
            if current.last > merged[-1].last:
                previous = merged[-1]
                merged[-1] = RemoteIPRange(previous.version, previous.first, current.last, RangeForm.RANGE)
        else:
            merged.append(current)
    return merged
