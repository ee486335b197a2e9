"""Reading a configuration (TOML file or Python mapping) into a validated :class:`RelayConfig`.

Reading never stops at the first problem: every bad key and value is collected so an operator fixes
a file in one pass. Unknown keys are errors, because a misspelt limit must not silently fall back to
a weaker default.
"""

from __future__ import annotations

import difflib
import ipaddress
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..model.addresses import AddressError, parse_binding
from ..model.connector import (
    AcceptedDomain,
    AuthenticationSettings,
    LoggingSettings,
    MetricsSettings,
    Connector,
    PermissionEntry,
    PluginSettings,
    ProxySettings,
    QueueSettings,
    RelayConfig,
    MAX_WORKERS,
    ServerSettings,
    SmarthostSettings,
    ThrottlingSettings,
    TlsSettings,
)
from ..model.enums import AcceptedDomainType, Principal, Right, Usage, parse_enum
from ..model.units import format_byte_size, parse_byte_size, parse_timespan
from .fields import CONNECTOR_FIELDS, FieldError, parse_boolean, parse_list
from .problems import ConfigError, ConfigProblem, Severity
from .usage_defaults import USAGE_DEFAULTS
from .validate import validate_config

__all__ = ["CheckResult", "config_from_mapping", "load_config", "read_config", "read_config_text"]

TOP_LEVEL_KEYS = (
    "server",
    "accepted_domains",
    "connectors",
    "smarthost",
    "plugins",
    "authentication",
    "queue",
    "tls",
    "proxy_protocol",
    "throttling",
    "logging",
    "metrics",
)
METRICS_KEYS = ("listen",)
LOGGING_KEYS = (
    "directory",
    "decision_log",
    "protocol_log_max_file_size",
    "protocol_log_max_directory_size",
    "protocol_log_max_age",
)
THROTTLING_KEYS = ("backend", "redis_url", "key_prefix")
TLS_KEYS = ("certificate", "key")
PROXY_KEYS = ("trusted_proxies", "timeout")
QUEUE_KEYS = ("directory", "retry_interval", "max_retry_interval", "message_expiration", "fsync")
AUTHENTICATION_KEYS = ("users_file",)
SERVER_KEYS = ("fqdn", "workers")
SMARTHOST_KEYS = ("host", "port", "starttls", "ssl", "username", "password")
PERMISSION_KEYS = ("user", "extended_rights", "deny")
ACCEPTED_DOMAIN_KEYS = ("domain", "type")
PLUGIN_KEYS = ("disabled",)


@dataclass(frozen=True)
class CheckResult:
    """What reading a configuration found: the config (None when there were errors) and all problems."""

    config: RelayConfig | None
    problems: list[ConfigProblem]

    @property
    def errors(self) -> list[ConfigProblem]:
        return [problem for problem in self.problems if problem.severity is Severity.ERROR]


def load_config(path: str | Path) -> RelayConfig:
    """Read and validate a TOML file; raise :class:`ConfigError` listing every error."""
    result = read_config(path)
    if result.config is None:
        raise ConfigError(result.problems)
    return result.config


def config_from_mapping(data: Mapping[str, Any], source: str = "<python>", base_dir: Path | None = None) -> RelayConfig:
    """The Python API: the same structure as the TOML file, as dicts and lists.

    Relative paths (queue directory, users file) are taken from ``base_dir``, by default the
    directory of ``source`` (the current directory for ``<python>``).
    """
    result = _Reader(source, base_dir if base_dir is not None else Path(source).parent).read(data)
    if result.config is None:
        raise ConfigError(result.problems)
    return result.config


def read_config(path: str | Path) -> CheckResult:
    """Read a TOML file and return the config with every problem found (nothing is raised)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except OSError as error:
        return CheckResult(None, [ConfigProblem(source, "", "", f"cannot read the file: {error.strerror}")])
    except UnicodeDecodeError as error:
        return CheckResult(None, [ConfigProblem(source, "", "", f"the file is not UTF-8 text: {error.reason}")])
    return read_config_text(text, source, Path(path).parent)


def read_config_text(text: str, source: str, base_dir: Path | None = None) -> CheckResult:
    """Like :func:`read_config` for TOML text already in memory; relative paths in it are taken
    from ``base_dir`` (the directory of ``source`` when not given)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return CheckResult(None, [ConfigProblem(source, "", "", f"invalid TOML: {error}")])
    except RecursionError:
        return CheckResult(None, [ConfigProblem(source, "", "", "invalid TOML: tables or arrays nested too deeply")])
    return _Reader(source, base_dir if base_dir is not None else Path(source).parent).read(data)


def _suggest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir
        self.problems: list[ConfigProblem] = []
        # connectors with a value that could not be read: their own cross-field rules are not
        # checked (they would compare against stand-in defaults), the file-wide rules still are
        self.partly_read: set[str] = set()

    def problem(self, section: str, field: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.source, section, field, message))

    def table(self, value: object, section: str, field: str = "") -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        self.problem(section, field, f"must be a table, not {value!r}")
        return {}

    def field_problems(self, section: str, field: str, error: FieldError) -> None:
        for index, message in error.items:
            self.problem(section, field if index is None else f"{field}[{index}]", message)

    def unknown_keys(self, table: Mapping[str, Any], known: tuple[str, ...], section: str) -> None:
        for key in table:
            if key not in known:
                self.problem(section, str(key), f"unknown key{_suggest(str(key), known)}")

    def read(self, data: Mapping[str, Any]) -> CheckResult:
        self.unknown_keys(data, TOP_LEVEL_KEYS, "")
        server = self.server(self.table(data.get("server", {}), "[server]"))
        domains = self.accepted_domains(data.get("accepted_domains", []))
        smarthost = self.smarthost(data["smarthost"]) if "smarthost" in data else None
        plugins = self.plugins(self.table(data.get("plugins", {}), "[plugins]"))
        authentication = self.authentication(self.table(data.get("authentication", {}), "[authentication]"))
        queue = self.queue(self.table(data.get("queue", {}), "[queue]"))
        tls = self.tls(self.table(data.get("tls", {}), "[tls]"))
        proxy = self.proxy(self.table(data.get("proxy_protocol", {}), "[proxy_protocol]"))
        throttling = self.throttling(self.table(data.get("throttling", {}), "[throttling]"))
        logging_settings = self.logging(self.table(data.get("logging", {}), "[logging]"))
        metrics = self.metrics(self.table(data.get("metrics", {}), "[metrics]"))
        raw_connectors = data.get("connectors")
        connectors: list[Connector] = []
        if raw_connectors is None or raw_connectors == []:
            self.problem("", "connectors", "no [[connectors]] defined: the relay would accept no connection")
        elif not isinstance(raw_connectors, list):
            self.problem("", "connectors", "must be an array of tables ([[connectors]])")
        else:
            for position, raw in enumerate(raw_connectors):
                connector = self.connector(raw, position)
                if connector is not None:
                    connectors.append(connector)
        config = RelayConfig(
            connectors=tuple(connectors),
            server=server,
            accepted_domains=domains,
            smarthost=smarthost,
            plugins=plugins,
            authentication=authentication,
            queue=queue,
            tls=tls,
            proxy=proxy,
            throttling=throttling,
            logging=logging_settings,
            metrics=metrics,
            source=self.source,
        )
        self.problems.extend(validate_config(config, skip_connector_rules=self.partly_read))
        if any(problem.severity is Severity.ERROR for problem in self.problems):
            return CheckResult(None, self.problems)
        return CheckResult(config, self.problems)

    def server(self, table: Mapping[str, Any]) -> ServerSettings:
        self.unknown_keys(table, SERVER_KEYS, "[server]")
        fqdn = table.get("fqdn", ServerSettings().fqdn)
        if not isinstance(fqdn, str):
            self.problem("[server]", "fqdn", f"{fqdn!r} is not a string")
            fqdn = ServerSettings().fqdn
        workers = table.get("workers", 1)
        if workers == "auto":
            workers = 0
        elif isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
            self.problem("[server]", "workers", f"{workers!r} is not a number of processes from 1 to {MAX_WORKERS}, or \"auto\"")
            workers = 1
        return ServerSettings(fqdn=fqdn, workers=workers)

    def accepted_domains(self, value: object) -> tuple[AcceptedDomain, ...]:
        if not isinstance(value, list):
            self.problem("", "accepted_domains", "must be an array of tables ([[accepted_domains]])")
            return ()
        domains = []
        for index, raw in enumerate(value):
            section = f"accepted_domains[{index}]"
            table = self.table(raw, section)
            self.unknown_keys(table, ACCEPTED_DOMAIN_KEYS, section)
            domain = table.get("domain")
            if not isinstance(domain, str):
                self.problem(section, "domain", "is required and must be a string" if domain is None else f"{domain!r} is not a string")
                continue
            try:
                kind = parse_enum(AcceptedDomainType, table.get("type", "Authoritative"))
            except ValueError as error:
                self.problem(section, "type", str(error))
                continue
            domains.append(AcceptedDomain(domain.strip().lower(), kind))
        return tuple(domains)

    def smarthost(self, value: object) -> SmarthostSettings:
        table = self.table(value, "[smarthost]")
        self.unknown_keys(table, SMARTHOST_KEYS, "[smarthost]")
        defaults = SmarthostSettings()
        values: dict[str, Any] = {}
        for key, kind in (("host", str), ("port", int), ("starttls", bool), ("ssl", bool), ("username", str), ("password", str)):
            if key not in table:
                continue
            raw = table[key]
            if not isinstance(raw, kind) or (kind is int and isinstance(raw, bool)):
                self.problem("[smarthost]", key, f"{raw!r} is not a {kind.__name__}")
                continue
            values[key] = raw
        port = values.get("port", defaults.port)
        if not 1 <= port <= 65535:
            self.problem("[smarthost]", "port", f"{port} is outside 1-65535")
        return SmarthostSettings(**values)

    def plugins(self, table: Mapping[str, Any]) -> PluginSettings:
        """``disabled`` names plugins to leave out; every other key is a table of one plugin's
        own settings (``[plugins.domain_denylist]``), which that plugin validates."""
        options: dict[str, Mapping[str, Any]] = {}
        for key, value in table.items():
            if key in PLUGIN_KEYS:
                continue
            if isinstance(value, Mapping):
                options[str(key)] = value
            else:
                self.problem(
                    "[plugins]", str(key),
                    f"unknown key{_suggest(str(key), PLUGIN_KEYS)}; a plugin's settings go in a [plugins.{key}] table",
                )
        raw = table.get("disabled", [])
        try:
            names = parse_list(raw, _name_string)
        except FieldError as error:
            self.field_problems("[plugins]", "disabled", error)
            return PluginSettings(options=options)
        return PluginSettings(disabled=names, options=options)

    def values(self, table: Mapping[str, Any], section: str, parsers: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
        """The keys of ``table`` that ``parsers`` know, parsed; each bad value becomes a problem."""
        values: dict[str, Any] = {}
        for key, parse in parsers.items():
            if key not in table:
                continue
            try:
                values[key] = parse(table[key])
            except FieldError as error:
                self.field_problems(section, key, error)
            except (ValueError, AddressError) as error:
                self.problem(section, key, str(error))
        return values

    def path(self, kind: str) -> Callable[[Any], Path]:
        """A parser of a file or directory path, taken relative to the configuration file."""

        def parse(raw: Any) -> Path:
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError(f"{raw!r} is not a {kind} path")
            return self.base_dir / raw

        return parse

    def authentication(self, table: Mapping[str, Any]) -> AuthenticationSettings:
        self.unknown_keys(table, AUTHENTICATION_KEYS, "[authentication]")
        return AuthenticationSettings(**self.values(table, "[authentication]", {"users_file": self.path("file")}))

    def tls(self, table: Mapping[str, Any]) -> TlsSettings:
        self.unknown_keys(table, TLS_KEYS, "[tls]")
        paths = self.values(table, "[tls]", {key: self.path("file") for key in TLS_KEYS})
        for key, path in paths.items():
            if not path.is_file():
                self.problem("[tls]", key, f"{path} does not exist or is not a file")
        if ("certificate" in table) != ("key" in table):
            self.problem("[tls]", "key" if "certificate" in table else "certificate", "certificate and key go together")
        return TlsSettings(paths.get("certificate"), paths.get("key"))

    def proxy(self, table: Mapping[str, Any]) -> ProxySettings:
        self.unknown_keys(table, PROXY_KEYS, "[proxy_protocol]")
        parsers = {"trusted_proxies": CONNECTOR_FIELDS["remote_ip_ranges"], "timeout": parse_timespan}
        return ProxySettings(**self.values(table, "[proxy_protocol]", parsers))

    def metrics(self, table: Mapping[str, Any]) -> MetricsSettings:
        """``listen = "127.0.0.1:9325"`` turns the endpoint on; only loopback addresses are allowed."""
        self.unknown_keys(table, METRICS_KEYS, "[metrics]")
        if "listen" not in table:
            return MetricsSettings()
        raw = table["listen"]
        try:
            binding = parse_binding(raw)
        except AddressError as error:
            self.problem("[metrics]", "listen", str(error))
            return MetricsSettings()
        if binding.address is None or not ipaddress.ip_address(binding.host).is_loopback:
            self.problem("[metrics]", "listen", f"{raw!r} is not a loopback address: metrics are for the local agent only")
            return MetricsSettings()
        return MetricsSettings(binding.host, binding.port)

    def logging(self, table: Mapping[str, Any]) -> LoggingSettings:
        self.unknown_keys(table, LOGGING_KEYS, "[logging]")
        parsers = {
            "directory": self.path("directory"),
            "decision_log": parse_boolean,
            "protocol_log_max_file_size": parse_byte_size,
            "protocol_log_max_directory_size": parse_byte_size,
            "protocol_log_max_age": parse_timespan,
        }
        values = {"directory": self.base_dir / LoggingSettings().directory, **self.values(table, "[logging]", parsers)}
        settings = LoggingSettings(**values)
        if settings.protocol_log_max_directory_size < settings.protocol_log_max_file_size:
            self.problem(
                "[logging]",
                "protocol_log_max_directory_size",
                f"{format_byte_size(settings.protocol_log_max_directory_size)} is smaller than "
                f"protocol_log_max_file_size ({format_byte_size(settings.protocol_log_max_file_size)}): "
                "the directory must hold one whole file",
            )
        return settings

    def throttling(self, table: Mapping[str, Any]) -> ThrottlingSettings:
        self.unknown_keys(table, THROTTLING_KEYS, "[throttling]")
        backend = table.get("backend", "memory")
        if backend not in ("memory", "redis"):
            self.problem("[throttling]", "backend", f"{backend!r} is not 'memory' or 'redis'")
            return ThrottlingSettings()
        url = table.get("redis_url")
        if backend == "redis":
            if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
                self.problem("[throttling]", "redis_url", f"{url!r} is not a redis:// URL (needed with backend = 'redis')")
                return ThrottlingSettings()
        elif url is not None:
            self.problem("[throttling]", "redis_url", "is only used with backend = 'redis'")
        prefix = table.get("key_prefix", "relayauth")
        if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
            self.problem("[throttling]", "key_prefix", f"{prefix!r} is not a key prefix")
            return ThrottlingSettings()
        return ThrottlingSettings(backend=backend, redis_url=url, key_prefix=prefix)

    def queue(self, table: Mapping[str, Any]) -> QueueSettings:
        self.unknown_keys(table, QUEUE_KEYS, "[queue]")
        parsers = {
            "directory": self.path("directory"),
            "retry_interval": parse_timespan,
            "max_retry_interval": parse_timespan,
            "message_expiration": parse_timespan,
            "fsync": parse_boolean,
        }
        values = {"directory": self.base_dir / QueueSettings().directory, **self.values(table, "[queue]", parsers)}
        settings = QueueSettings(**values)
        if settings.retry_interval <= timedelta(0):
            self.problem("[queue]", "retry_interval", "must be longer than zero")
        if settings.max_retry_interval < settings.retry_interval:
            self.problem("[queue]", "max_retry_interval", "must not be shorter than retry_interval")
        if settings.message_expiration < settings.retry_interval:
            self.problem("[queue]", "message_expiration", "must not be shorter than retry_interval")
        return settings

    def connector(self, raw: object, position: int) -> Connector | None:
        table = self.table(raw, f"connectors[{position}]")
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(f"connectors[{position}]", "name", "is required and must be a non-empty string")
            return None
        section = f"connector {name!r}"
        known = ("name", "permissions", *CONNECTOR_FIELDS)
        self.unknown_keys(table, known, section)
        values: dict[str, Any] = {}
        unparsed: set[str] = set()
        for key, parse in CONNECTOR_FIELDS.items():
            if key not in table:
                continue
            try:
                values[key] = parse(table[key])
            except FieldError as error:
                self.field_problems(section, key, error)
                unparsed.add(key)
            except (ValueError, AddressError) as error:
                self.problem(section, key, str(error))
                unparsed.add(key)
        permissions = self.permissions(table.get("permissions", []), section)
        usage = values.get("usage", Usage.CUSTOM)
        defaults = USAGE_DEFAULTS[usage]
        values.setdefault("permission_groups", defaults.permission_groups)
        values.setdefault("auth_mechanism", defaults.auth_mechanism)
        for key in ("bindings", "remote_ip_ranges"):
            if key in values or key in table:
                continue
            default = getattr(defaults, key)
            if default is None:
                self.problem(section, key, f"is required for a connector of usage {usage.value}")
            else:
                values[key] = default
        if "bindings" not in values or "remote_ip_ranges" not in values:
            return None
        connector = Connector(name=name, permissions=permissions, **values)
        if unparsed:
            self.partly_read.add(connector.name)
        return connector

    def permissions(self, value: object, section: str) -> tuple[PermissionEntry, ...]:
        if not isinstance(value, list):
            self.problem(section, "permissions", "must be an array of tables ([[connectors.permissions]])")
            return ()
        entries = []
        for index, raw in enumerate(value):
            where = f"permissions[{index}]"
            table = self.table(raw, section, where)
            for key in table:
                if key not in PERMISSION_KEYS:
                    self.problem(section, f"{where}.{key}", f"unknown key{_suggest(str(key), PERMISSION_KEYS)}")
            user = table.get("user")
            if not isinstance(user, str) or not user.strip():
                self.problem(section, f"{where}.user", "is required and must be a non-empty string")
                continue
            if "extended_rights" not in table:
                self.problem(section, f"{where}.extended_rights", "is required: name the rights to allow or deny")
                continue
            try:
                rights = parse_list(table["extended_rights"], lambda item: parse_enum(Right, item))
            except FieldError as error:
                self.field_problems(section, f"{where}.extended_rights", error)
                continue
            if not rights:
                self.problem(section, f"{where}.extended_rights", "must name at least one extended right")
                continue
            deny = table.get("deny", False)
            if not isinstance(deny, bool):
                self.problem(section, f"{where}.deny", f"{deny!r} is not true or false")
                continue
            entries.append(PermissionEntry(canonical_principal(user), frozenset(rights), deny))
        return tuple(entries)


def canonical_principal(user: str) -> str:
    """Well-known principals in their canonical spelling (Windows names are case-insensitive)."""
    wanted = user.strip().casefold()
    for principal in Principal:
        if principal.value.casefold() == wanted:
            return principal.value
    return user.strip()


def _name_string(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{value!r} is not a plugin name")
    return value.strip()
