"""The receive connector and the server-wide settings around it, as frozen values.

Field names are the snake_case of the New-/Set-ReceiveConnector parameters (reference §7); defaults
are Exchange's for a new connector on a Mailbox server. Usage-type defaults (reference §5) are
applied by the configuration loader, which knows which fields the operator left out.
"""

from __future__ import annotations

import os

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any
from pathlib import Path

from .addresses import Binding, RemoteIPRange
from .enums import (
    AcceptedDomainType,
    AuthMechanism,
    BackendFailure,
    MessageRateSource,
    PermissionGroup,
    ProtocolLoggingLevel,
    Right,
    SizeMode,
    TransportRole,
    Usage,
)

__all__ = [
    "AcceptedDomain",
    "AuthenticationSettings",
    "Connector",
    "PermissionEntry",
    "LoggingSettings",
    "MetricsSettings",
    "PluginSettings",
    "ProxySettings",
    "QueueSettings",
    "RelayConfig",
    "ServerSettings",
    "SmarthostSettings",
    "ThrottlingSettings",
    "TlsSettings",
]

MAX_NAME_LENGTH = 64


@dataclass(frozen=True, slots=True)
class PermissionEntry:
    """An explicit permission on a connector, the Add-ADPermission analogue."""

    user: str
    extended_rights: frozenset[Right]
    deny: bool = False


@dataclass(frozen=True, slots=True)
class Connector:
    """One receive connector. ``None`` in a limit means Exchange's ``Unlimited``."""

    name: str
    bindings: tuple[Binding, ...]
    remote_ip_ranges: tuple[RemoteIPRange, ...]
    usage: Usage = Usage.CUSTOM
    transport_role: TransportRole = TransportRole.FRONTEND_TRANSPORT
    enabled: bool = True
    comment: str = ""
    # security
    auth_mechanism: frozenset[AuthMechanism] = frozenset({AuthMechanism.TLS})
    permission_groups: frozenset[PermissionGroup] = frozenset({PermissionGroup.NONE})
    permissions: tuple[PermissionEntry, ...] = ()
    require_tls: bool = False
    domain_secure_enabled: bool = False
    max_logon_failures: int = 3
    auth_tarpit_interval: timedelta = timedelta(seconds=5)
    # identity on the wire
    banner: str | None = None
    fqdn: str | None = None
    require_ehlo_domain: bool = False
    # limits
    max_message_size: int = 36 << 20
    max_header_size: int = 256 << 10
    max_recipients_per_message: int = 200
    max_hop_count: int = 30
    max_local_hop_count: int = 8
    max_protocol_errors: int | None = 5
    max_inbound_connection: int | None = 5000
    max_inbound_connection_per_source: int | None = 20
    max_inbound_connection_percentage_per_source: int = 2
    message_rate_limit: int | None = None
    message_rate_source: MessageRateSource = MessageRateSource.IP_ADDRESS
    connection_timeout: timedelta = timedelta(minutes=10)
    connection_inactivity_timeout: timedelta = timedelta(minutes=5)
    tarpit_interval: timedelta = timedelta(seconds=5)
    # ESMTP
    enhanced_status_codes_enabled: bool = True
    pipelining_enabled: bool = True
    size_enabled: SizeMode = SizeMode.ENABLED
    eight_bit_mime_enabled: bool = True
    binary_mime_enabled: bool = True
    chunking_enabled: bool = True
    delivery_status_notification_enabled: bool = True
    long_addresses_enabled: bool = False
    orar_enabled: bool = False
    bare_linefeed_rejection_enabled: bool = False
    reject_reserved_top_level_recipient_domains: bool = False
    reject_reserved_second_level_recipient_domains: bool = False
    reject_single_label_recipient_domains: bool = False
    protocol_logging_level: ProtocolLoggingLevel = ProtocolLoggingLevel.NONE
    # not Exchange: the operator's written consent to relay for public or very wide ranges
    acknowledge_open_relay: bool = False
    # not Exchange: throttling refinements
    rate_limit_ipv4_prefix: int = 32  # count a client's IPv4 /N as one source (24: its /24)
    rate_limit_ipv6_prefix: int = 128  # likewise for IPv6 (64: one host cannot spread over its /64)
    throttling_exemptions: tuple[RemoteIPRange, ...] = ()  # clients no limit applies to
    throttling_exempt_users: tuple[str, ...] = ()  # authenticated users no limit applies to
    throttling_shadow: bool = False  # limits only log what they would have refused
    throttling_backend_failure: BackendFailure = BackendFailure.LOCAL_LIMITS
    # not Exchange: try a connector on live traffic without letting it decide (see README, "Dry run")
    dry_run: bool = False
    dry_run_replaces: str = ""  # the live connector it would replace, if any

    @property
    def live(self) -> bool:
        """Takes connections: enabled and not in dry-run mode."""
        return self.enabled and not self.dry_run


@dataclass(frozen=True, slots=True)
class AcceptedDomain:
    """An accepted domain; ``domain`` may start with ``*.`` to cover every subdomain."""

    domain: str
    type: AcceptedDomainType = AcceptedDomainType.AUTHORITATIVE


MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """Server-wide settings: the FQDN connectors default to, and how many worker processes serve
    the listening sockets (``workers = "auto"``, stored as 0, means one per CPU)."""

    fqdn: str = "localhost"
    workers: int = 1

    @property
    def worker_count(self) -> int:
        """The number of worker processes to run (``auto`` resolved on this machine)."""
        return self.workers or max(1, min(os.cpu_count() or 1, MAX_WORKERS))


@dataclass(frozen=True, slots=True)
class SmarthostSettings:
    """Where relayed mail goes; mirrors Salmon's ``Relay`` arguments."""

    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuthenticationSettings:
    """Where the built-in credential check finds its users (a file of salted password hashes)."""

    users_file: Path | None = None


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Where the operators' logs go.

    :param directory: protocol logs go in ``<directory>/ProtocolLog/SmtpReceive`` (for connectors
        with ``protocol_logging_level = "Verbose"``), the decision log in ``<directory>/decisions.jsonl``.
    :param decision_log: write the JSON decision log.
    """

    directory: Path = Path("logs")
    decision_log: bool = True
    protocol_log_max_file_size: int = 10 << 20
    protocol_log_max_directory_size: int = 250 << 20
    protocol_log_max_age: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where the Prometheus metrics endpoint listens (a loopback address); None host means off."""

    host: str | None = None
    port: int = 9325


@dataclass(frozen=True, slots=True)
class ThrottlingSettings:
    """Where throttling state lives: this process (``memory``) or a Redis server shared by relay nodes."""

    backend: str = "memory"
    redis_url: str | None = None
    key_prefix: str = "relayauth"


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The certificate STARTTLS presents (PEM files); without it STARTTLS is not offered."""

    certificate: Path | None = None
    key: Path | None = None


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """PROXY protocol (v1 and v2): only these peers may, and must, send a PROXY header."""

    trusted_proxies: tuple[RemoteIPRange, ...] = ()
    timeout: timedelta = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """The durable outbound queue and its retry policy.

    :param directory: where queued messages live (relative paths are taken from the config file).
    :param retry_interval: the delay before the first retry; each later retry waits twice as long...
    :param max_retry_interval: ...up to this.
    :param message_expiration: how long a message may wait for delivery before it is returned to
        its sender with a delivery status notification (Exchange's default: two days).
    :param fsync: flush every accepted message to disk before replying 250 (turn off only for tests
        on throw-away disks; a crash would then lose mail that was acknowledged).
    """

    directory: Path = Path("queue")
    retry_interval: timedelta = timedelta(minutes=1)
    max_retry_interval: timedelta = timedelta(hours=1)
    message_expiration: timedelta = timedelta(days=2)
    fsync: bool = True


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """Which plugins to leave out (names of default plugins or of entry points), and each plugin's
    own settings by plugin name, as written in ``[plugins.<name>]`` (the plugin validates them)."""

    disabled: tuple[str, ...] = ()
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """A whole, validated configuration. ``source`` names the file it came from, for messages."""

    connectors: tuple[Connector, ...]
    server: ServerSettings = ServerSettings()
    accepted_domains: tuple[AcceptedDomain, ...] = ()
    smarthost: SmarthostSettings | None = None
    plugins: PluginSettings = PluginSettings()
    authentication: AuthenticationSettings = AuthenticationSettings()
    queue: QueueSettings = QueueSettings()
    tls: TlsSettings = TlsSettings()
    proxy: ProxySettings = ProxySettings()
    throttling: ThrottlingSettings = ThrottlingSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    source: str = "<python>"

    def connector(self, name: str) -> Connector:
        """The connector called ``name`` (names compare case-insensitively, as in Exchange)."""
        wanted = name.casefold()
        for connector in self.connectors:
            if connector.name.casefold() == wanted:
                return connector
        raise KeyError(name)

    @property
    def enabled_connectors(self) -> tuple[Connector, ...]:
        """Enabled connectors, dry-run ones included (every check applies to those too)."""
        return tuple(connector for connector in self.connectors if connector.enabled)

    @property
    def live_connectors(self) -> tuple[Connector, ...]:
        """The connectors that take connections."""
        return tuple(connector for connector in self.connectors if connector.live)

    def what_if(self) -> RelayConfig | None:
        """The configuration as it would be with every enabled dry-run connector live (replacing the
        connector it names in ``dry_run_replaces``); None when there is no dry-run connector."""
        trials = [c for c in self.connectors if c.enabled and c.dry_run]
        if not trials:
            return None
        replaced = {c.dry_run_replaces.casefold() for c in trials if c.dry_run_replaces}
        kept = [c for c in self.connectors if not c.dry_run and c.name.casefold() not in replaced]
        promoted = [replace(c, dry_run=False, dry_run_replaces="") for c in trials]
        return replace(self, connectors=tuple(kept + promoted))
