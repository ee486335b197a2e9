"""The policy a relay runs: a validated configuration, its plugin manager and its selection index.

The listener, the Salmon routing guard and the CLI all go through :class:`RelayPolicy`, so a
simulated decision (``explain``) and a live one can never differ.
"""

from __future__ import annotations

from pathlib import Path

import pluggy

from .config.loader import read_config
from .config.problems import ConfigError, ConfigProblem, Severity
from .defaults.selection import MostSpecificSelection
from .engine.selection import ConnectorIndex
from .model.connection import ConnectionInfo, ConnectorSelection
from .model.connector import RelayConfig
from .model.decision import Decision
from .plugins import make_plugin_manager

__all__ = ["NO_CONNECTOR", "RelayPolicy", "load_policy"]

NO_CONNECTOR_TEXT = "Service not available, closing transmission channel"


class RelayPolicy:
    """Everything needed to judge sessions under one configuration."""

    def __init__(self, config: RelayConfig, plugin_manager: pluggy.PluginManager | None = None) -> None:
        self.config = config
        self.plugin_manager = plugin_manager or make_plugin_manager(disabled=config.plugins.disabled)
        self.hook = self.plugin_manager.hook
        self.index = ConnectorIndex.build(config.connectors, source=MostSpecificSelection.name)

    def select_connector(self, connection: ConnectionInfo) -> ConnectorSelection | None:
        """The connector for a new connection, or None when it must be refused (see :meth:`no_connector`)."""
        result: ConnectorSelection | None = self.hook.relayauth_select_connector(
            config=self.config, index=self.index, connection=connection
        )
        return result

    def no_connector(self, connection: ConnectionInfo) -> Decision:
        """The greeting for a connection no connector takes: ``421 4.3.2``, so a misplaced sender
        queues and retries instead of bouncing mail while the operator fixes the ranges."""
        return Decision(
            421,
            "4.3.2",
            NO_CONNECTOR_TEXT,
            reason=(
                f"no enabled connector binds {connection.local_address}:{connection.local_port} "
                f"for client {connection.remote_address}"
            ),
            source="relayauth.policy",
        )

    def plugin_problems(self) -> list[ConfigProblem]:
        """Problems the plugins' ``relayauth_validate_config`` implementations find."""
        results: list[list[ConfigProblem]] = self.hook.relayauth_validate_config(config=self.config)
        return [problem for problems in results for problem in problems]


def load_policy(path: str | Path, plugin_manager: pluggy.PluginManager | None = None) -> RelayPolicy:
    """Read, validate and compile a configuration file; raise :class:`ConfigError` on any error."""
    result = read_config(path)
    if result.config is None:
        raise ConfigError(result.problems)
    policy = RelayPolicy(result.config, plugin_manager)
    problems = result.problems + policy.plugin_problems()
    if any(problem.severity is Severity.ERROR for problem in problems):
        raise ConfigError(problems)
    return policy

