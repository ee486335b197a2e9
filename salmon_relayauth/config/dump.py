"""Writing a configuration back out: the inverse of the loader, so configs round-trip.

Every connector field is written explicitly (usage defaults already applied), in the spellings the
loader reads, so the written file means exactly what the loaded one did.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import timedelta
from enum import Enum
from typing import Any

import tomlkit

from ..model.connector import Connector, RelayConfig, SmarthostSettings
from ..model.units import UNLIMITED, format_byte_size, format_timespan
from .fields import CONNECTOR_FIELDS

__all__ = ["config_to_mapping", "connector_to_mapping", "dump_toml"]

_BYTE_FIELDS = {"max_message_size", "max_header_size"}
_LIMIT_FIELDS = {
    "max_protocol_errors",
    "max_inbound_connection",
    "max_inbound_connection_per_source",
    "message_rate_limit",
}


def _value(field: str, value: Any) -> Any:
    if field in _BYTE_FIELDS:
        return format_byte_size(value)
    if field in _LIMIT_FIELDS and value is None:
        return UNLIMITED
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, frozenset):
        return sorted(member.value for member in value)
    if isinstance(value, tuple):
        return [str(item) for item in value]  # bindings, ranges and user names render as written
    return value


def connector_to_mapping(connector: Connector) -> dict[str, Any]:
    data: dict[str, Any] = {"name": connector.name}
    for field in CONNECTOR_FIELDS:
        value = getattr(connector, field)
        if value is not None or field in _LIMIT_FIELDS:  # an unset banner or fqdn means "the default"
            data[field] = _value(field, value)
    if connector.permissions:
        data["permissions"] = [
            {
                "user": entry.user,
                "extended_rights": sorted(right.value for right in entry.extended_rights),
                **({"deny": True} if entry.deny else {}),
            }
            for entry in connector.permissions
        ]
    return data


def config_to_mapping(config: RelayConfig) -> dict[str, Any]:
    data: dict[str, Any] = {"server": {"fqdn": config.server.fqdn}}
    if config.server.workers != 1:
        data["server"]["workers"] = config.server.workers or "auto"
    if config.accepted_domains:
        data["accepted_domains"] = [
            {"domain": domain.domain, "type": domain.type.value} for domain in config.accepted_domains
        ]
    if config.authentication.users_file is not None:
        data["authentication"] = {"users_file": str(config.authentication.users_file)}
    data["queue"] = {
        "directory": str(config.queue.directory),
        "retry_interval": format_timespan(config.queue.retry_interval),
        "max_retry_interval": format_timespan(config.queue.max_retry_interval),
        "message_expiration": format_timespan(config.queue.message_expiration),
        "fsync": config.queue.fsync,
    }
    if config.tls.certificate is not None and config.tls.key is not None:
        data["tls"] = {"certificate": str(config.tls.certificate), "key": str(config.tls.key)}
    if config.proxy.trusted_proxies:
        data["proxy_protocol"] = {
            "trusted_proxies": [str(r) for r in config.proxy.trusted_proxies],
            "timeout": format_timespan(config.proxy.timeout),
        }
    data["logging"] = {
        "directory": str(config.logging.directory),
        "decision_log": config.logging.decision_log,
        "protocol_log_max_file_size": format_byte_size(config.logging.protocol_log_max_file_size),
        "protocol_log_max_directory_size": format_byte_size(config.logging.protocol_log_max_directory_size),
        "protocol_log_max_age": format_timespan(config.logging.protocol_log_max_age),
    }
    if config.metrics.host is not None:
        host = config.metrics.host
        data["metrics"] = {"listen": f"[{host}]:{config.metrics.port}" if ":" in host else f"{host}:{config.metrics.port}"}
    if config.throttling.backend != "memory":
        data["throttling"] = {
            "backend": config.throttling.backend,
            "redis_url": config.throttling.redis_url,
            "key_prefix": config.throttling.key_prefix,
        }
    if config.plugins.disabled or config.plugins.options:
        data["plugins"] = {"disabled": list(config.plugins.disabled), **{k: dict(v) for k, v in config.plugins.options.items()}}
    data["connectors"] = [connector_to_mapping(connector) for connector in config.connectors]
    if config.smarthost is not None:
        data["smarthost"] = {
            field.name: getattr(config.smarthost, field.name)
            for field in fields(SmarthostSettings)
            if getattr(config.smarthost, field.name) is not None
        }
    return data


def dump_toml(config: RelayConfig) -> str:
    return tomlkit.dumps(config_to_mapping(config))
