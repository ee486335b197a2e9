"""Frozen values and enums: no I/O, nothing imported from the layers above."""

from .addresses import AddressError, Binding, RangeForm, RemoteIPRange, client_address, parse_binding, parse_ip, parse_remote_ip_range
from .connection import ConnectionInfo, ConnectorSelection
from .connector import AcceptedDomain, Connector, PermissionEntry, PluginSettings, RelayConfig, ServerSettings, SmarthostSettings
from .decision import Decision
from .enums import (
    AcceptedDomainType,
    AuthMechanism,
    MessageRateSource,
    PermissionGroup,
    Principal,
    ProtocolLoggingLevel,
    Right,
    SizeMode,
    TransportRole,
    Usage,
    parse_enum,
)

__all__ = [
    "AcceptedDomain", "AcceptedDomainType", "AddressError", "AuthMechanism", "Binding", "ConnectionInfo",
    "Connector", "ConnectorSelection", "Decision", "MessageRateSource", "PermissionEntry", "PermissionGroup",
    "PluginSettings", "Principal", "ProtocolLoggingLevel", "RangeForm", "RelayConfig", "RemoteIPRange", "Right",
    "ServerSettings", "SizeMode", "SmarthostSettings", "TransportRole", "Usage", "client_address",
    "parse_binding", "parse_enum", "parse_ip", "parse_remote_ip_range",
]
