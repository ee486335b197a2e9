"""salmon-relayauth: Exchange-style receive connectors for the Salmon mail framework.

Tests and plugins import only from this module (and :mod:`salmon_relayauth.hookspecs` for markers).
"""

from .config import (
    CheckResult,
    ConfigError,
    ConfigProblem,
    Severity,
    config_from_mapping,
    config_to_mapping,
    dump_toml,
    load_config,
    read_config,
)
from .engine import ConnectorIndex, rank_candidates
from .hookspecs import hookimpl, hookspec
from .model import (
    AcceptedDomain,
    AcceptedDomainType,
    AddressError,
    AuthMechanism,
    Binding,
    ConnectionInfo,
    Connector,
    ConnectorSelection,
    Decision,
    MessageRateSource,
    PermissionEntry,
    PermissionGroup,
    Principal,
    ProtocolLoggingLevel,
    RelayConfig,
    RemoteIPRange,
    Right,
    ServerSettings,
    SizeMode,
    SmarthostSettings,
    TransportRole,
    Usage,
    parse_binding,
    parse_enum,
    parse_remote_ip_range,
)
from .plugins import ENTRY_POINT_GROUP, PluginLoadError, make_plugin_manager
from .policy import RelayPolicy, load_policy

__version__ = "0.1.0"

__all__ = [
    "AcceptedDomain", "AcceptedDomainType", "AddressError", "AuthMechanism", "Binding", "CheckResult",
    "ConfigError", "ConfigProblem", "ConnectionInfo", "Connector", "ConnectorIndex", "ConnectorSelection",
    "Decision", "ENTRY_POINT_GROUP", "MessageRateSource", "PermissionEntry", "PermissionGroup",
    "PluginLoadError", "Principal", "ProtocolLoggingLevel", "RelayConfig", "RelayPolicy", "RemoteIPRange",
    "Right", "ServerSettings", "Severity", "SizeMode", "SmarthostSettings", "TransportRole", "Usage",
    "config_from_mapping", "config_to_mapping", "dump_toml", "hookimpl", "hookspec", "load_config",
    "load_policy", "make_plugin_manager", "parse_binding", "parse_enum", "parse_remote_ip_range",
    "rank_candidates", "read_config",
]
