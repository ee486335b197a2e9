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
from .engine.smtp_address import AddressSyntaxError, MailPath, parse_path
from .model.connector import AuthenticationSettings, ProxySettings, QueueSettings, TlsSettings
from .model.rights import EffectiveRights, Grant, RightTrace
from .model.session import SessionState
from .plugins import ENTRY_POINT_GROUP, PluginLoadError, make_plugin_manager
from .policy import RelayPolicy, fold_decisions, load_policy
from .queue.delivery import DeliveryWorker
from .queue.store import MessageQueue, QueuedEnvelope
from .receiver import RelayReceiver
from .routing import RelayContext, relay_guard
from .session import MessageVerdict, RelaySession

from ._version import __version__

__all__ = [
    "AddressSyntaxError", "AuthenticationSettings", "DeliveryWorker", "EffectiveRights", "Grant", "MailPath",
    "MessageQueue", "MessageVerdict", "ProxySettings", "QueueSettings", "QueuedEnvelope", "RelayContext",
    "RelayReceiver", "RelaySession", "RightTrace", "SessionState", "TlsSettings", "fold_decisions", "parse_path",
    "relay_guard",
    "AcceptedDomain", "AcceptedDomainType", "AddressError", "AuthMechanism", "Binding", "CheckResult",
    "ConfigError", "ConfigProblem", "ConnectionInfo", "Connector", "ConnectorIndex", "ConnectorSelection",
    "Decision", "ENTRY_POINT_GROUP", "MessageRateSource", "PermissionEntry", "PermissionGroup",
    "PluginLoadError", "Principal", "ProtocolLoggingLevel", "RelayConfig", "RelayPolicy", "RemoteIPRange",
    "Right", "ServerSettings", "Severity", "SizeMode", "SmarthostSettings", "TransportRole", "Usage",
    "config_from_mapping", "config_to_mapping", "dump_toml", "hookimpl", "hookspec", "load_config",
    "load_policy", "make_plugin_manager", "parse_binding", "parse_enum", "parse_remote_ip_range",
    "rank_candidates", "read_config",
]
