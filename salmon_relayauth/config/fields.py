"""How each connector key of the configuration file is read: one parser per field.

A parser takes the raw TOML (or Python) value and returns the model value, raising ``ValueError``
with a message that names the offending value. List fields report the index of the bad item.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from enum import Enum
from typing import Any, TypeVar

from ..model.addresses import AddressError, Binding, RemoteIPRange, parse_binding, parse_remote_ip_range
from ..model.enums import (
    AuthMechanism,
    BackendFailure,
    MessageRateSource,
    PermissionGroup,
    ProtocolLoggingLevel,
    SizeMode,
    TransportRole,
    Usage,
    parse_enum,
)
from ..model.units import parse_byte_size, parse_limit, parse_timespan

__all__ = ["CONNECTOR_FIELDS", "FieldError", "parse_boolean", "parse_list"]

T = TypeVar("T")
E = TypeVar("E", bound=Enum)


class FieldError(ValueError):
    """Bad values inside a field: ``items`` lists ``(list position or None, message)`` for each one;
    ``index`` is the position of the first."""

    def __init__(self, message: str, index: int | None = None, items: list[tuple[int | None, str]] | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.items = items if items is not None else [(index, message)]


def parse_list(value: object, item: Callable[[Any], T]) -> tuple[T, ...]:
    """A list of items (a lone string counts as a list of one, as in the cmdlets)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise FieldError(f"{value!r} is not a list")
    parsed = []
    bad: list[tuple[int | None, str]] = []
    for index, raw in enumerate(value):
        try:
            parsed.append(item(raw))
        except FieldError as error:
            bad.extend((index, message) for _, message in error.items)
        except (ValueError, AddressError) as error:
            bad.append((index, str(error)))
    if bad:
        raise FieldError(bad[0][1], bad[0][0], bad)
    return tuple(parsed)


def _flags(kind: type[E]) -> Callable[[object], frozenset[E]]:
    def parse(value: object) -> frozenset[E]:
        if isinstance(value, str) and "," in value:
            value = [part for part in value.split(",") if part.strip()]
        members = parse_list(value, lambda raw: parse_enum(kind, raw))
        if not members:
            raise FieldError(f"an empty list; write [\"{next(iter(kind)).value}\"] for none")
        return frozenset(members)

    return parse


def _one(kind: type[E]) -> Callable[[object], E]:
    return lambda value: parse_enum(kind, value)


def parse_boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "$true", "false", "$false"):
        return value.strip().lower() in ("true", "$true")
    raise ValueError(f"{value!r} is not true or false")


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _optional_text(value: object) -> str | None:
    return None if value == "" else _text(value)


def _bindings(value: object) -> tuple[Binding, ...]:
    if isinstance(value, str) and "," in value:
        value = [part for part in value.split(",") if part.strip()]
    return parse_list(value, parse_binding)


def _ranges(value: object) -> tuple[RemoteIPRange, ...]:
    if isinstance(value, str) and "," in value:
        value = [part for part in value.split(",") if part.strip()]
    return parse_list(value, parse_remote_ip_range)


def _timespan(value: object) -> timedelta:
    return parse_timespan(value)


# Every connector key except ``name`` and ``permissions`` (read separately), in file order.
CONNECTOR_FIELDS: dict[str, Callable[[Any], Any]] = {
    "usage": _one(Usage),
    "transport_role": _one(TransportRole),
    "enabled": parse_boolean,
    "comment": _text,
    "bindings": _bindings,
    "remote_ip_ranges": _ranges,
    "auth_mechanism": _flags(AuthMechanism),
    "permission_groups": _flags(PermissionGroup),
    "require_tls": parse_boolean,
    "domain_secure_enabled": parse_boolean,
    "max_logon_failures": _integer,
    "auth_tarpit_interval": _timespan,
    "banner": _optional_text,
    "fqdn": _optional_text,
    "require_ehlo_domain": parse_boolean,
    "max_message_size": parse_byte_size,
    "max_header_size": parse_byte_size,
    "max_recipients_per_message": _integer,
    "max_hop_count": _integer,
    "max_local_hop_count": _integer,
    "max_protocol_errors": parse_limit,
    "max_inbound_connection": parse_limit,
    "max_inbound_connection_per_source": parse_limit,
    "max_inbound_connection_percentage_per_source": _integer,
    "message_rate_limit": parse_limit,
    "message_rate_source": _one(MessageRateSource),
    "connection_timeout": _timespan,
    "connection_inactivity_timeout": _timespan,
    "tarpit_interval": _timespan,
    "enhanced_status_codes_enabled": parse_boolean,
    "pipelining_enabled": parse_boolean,
    "size_enabled": _one(SizeMode),
    "eight_bit_mime_enabled": parse_boolean,
    "binary_mime_enabled": parse_boolean,
    "chunking_enabled": parse_boolean,
    "delivery_status_notification_enabled": parse_boolean,
    "long_addresses_enabled": parse_boolean,
    "orar_enabled": parse_boolean,
    "bare_linefeed_rejection_enabled": parse_boolean,
    "reject_reserved_top_level_recipient_domains": parse_boolean,
    "reject_reserved_second_level_recipient_domains": parse_boolean,
    "reject_single_label_recipient_domains": parse_boolean,
    "protocol_logging_level": _one(ProtocolLoggingLevel),
    "acknowledge_open_relay": parse_boolean,
    "rate_limit_ipv4_prefix": _integer,
    "rate_limit_ipv6_prefix": _integer,
    "throttling_exemptions": _ranges,
    "throttling_exempt_users": lambda value: parse_list(value, _text),
    "throttling_shadow": parse_boolean,
    "throttling_backend_failure": _one(BackendFailure),
    "dry_run": parse_boolean,
    "dry_run_replaces": _text,
}
