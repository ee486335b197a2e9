"""Configuration: TOML file or Python mapping in, validated :class:`RelayConfig` out."""

from .dump import config_to_mapping, connector_to_mapping, dump_toml
from .loader import CheckResult, config_from_mapping, load_config, read_config, read_config_text
from .problems import ConfigError, ConfigProblem, Severity

__all__ = [
    "CheckResult", "ConfigError", "ConfigProblem", "Severity", "config_from_mapping", "config_to_mapping",
    "connector_to_mapping", "dump_toml", "load_config", "read_config", "read_config_text",
]
