"""The policy a relay runs: a validated configuration, its plugin manager and its indexes.

The listener, the Salmon routing guard and the CLI all go through :class:`RelayPolicy` (usually via
:class:`~salmon_relayauth.session.RelaySession`), so a simulated decision (``explain``) and a live
one can never differ. Every method here calls hooks and folds their results; the folds themselves
are pure functions of the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pluggy

from .config.loader import read_config
from .config.problems import ConfigError, ConfigProblem, Severity
from .defaults.selection import MostSpecificSelection
from .engine.domains import AcceptedDomains
from .engine.headers import MessageFacts
from .engine.limits import ConnectionCounts
from .engine.permissions import fold_grants
from .engine.replies import reply
from .engine.selection import ConnectorIndex
from .engine.smtp_address import MailPath
from .model.connection import ConnectionInfo, ConnectorSelection
from .model.connector import Connector, RelayConfig
from .model.decision import Decision
from .model.limits import RateLimit
from .model.rights import EffectiveRights, Grant
from .model.session import SessionState
from .plugins import UnknownPluginError, make_plugin_manager

__all__ = ["RelayPolicy", "fold_decisions", "load_policy"]

_POLICY = "relayauth.policy"
_FOLD_CACHE_SIZE = 4096


def fold_decisions(decisions: Iterable[Decision | None], when_silent: Decision) -> Decision:
    """The most severe decision wins; ``when_silent`` when no plugin decided.

    Ties are broken on the decision's own values, so the result never depends on the order in
    which plugins were registered.
    """
    decided = [decision for decision in decisions if decision is not None]
    if not decided:
        return when_silent
    return max(decided, key=_severity_order)


def _severity_order(decision: Decision) -> tuple[int, int, bool, str, str, str, str]:
    # Between equally severe replies the built-in reason is shown (a host that may not relay hears
    # "Unable to relay", not a plugin's text), then the values decide, never the plugins' order.
    builtin = decision.source.startswith("relayauth.")
    return (decision.severity, decision.code, builtin, decision.status, decision.text, decision.source, decision.reason)


class RelayPolicy:
    """Everything needed to judge sessions under one configuration."""

    def __init__(self, config: RelayConfig, plugin_manager: pluggy.PluginManager | None = None) -> None:
        self.config = config
        if plugin_manager is None:
            plugin_manager = make_plugin_manager(disabled=config.plugins.disabled)
        else:
            _block(plugin_manager, config.plugins.disabled)
        self.plugin_manager = plugin_manager
        self.hook = self.plugin_manager.hook
        self.index = ConnectorIndex.build(config.connectors, source=MostSpecificSelection.name)
        self.domains = AcceptedDomains(config.accepted_domains)
        self._folds: dict[tuple[tuple[Grant, ...], frozenset[str]], EffectiveRights] = {}
        what_if = config.what_if()
        # The same policy with the dry-run connectors live: consulted, never obeyed.
        self.what_if: RelayPolicy | None = RelayPolicy(what_if, self.plugin_manager) if what_if is not None else None

    # -- connection ---------------------------------------------------------------------------

    def select_connector(self, connection: ConnectionInfo) -> ConnectorSelection | None:
        """The connector for a new connection, or None when it must be refused (see :meth:`no_connector`)."""
        result: ConnectorSelection | None = self.hook.relayauth_select_connector(
            config=self.config, index=self.index, connection=connection
        )
        return result

    def no_connector(self, connection: ConnectionInfo) -> Decision:
        """The greeting for a connection no connector takes: ``421 4.3.2``, so a misplaced sender
        queues and retries instead of bouncing mail while the operator fixes the ranges."""
        return reply(
            "service_unavailable",
            f"no enabled connector binds {connection.local_address}:{connection.local_port} "
            f"for client {connection.remote_address}",
            _POLICY,
        )

    # -- identity and rights ------------------------------------------------------------------

    def principals(self, connector: Connector, connection: ConnectionInfo, user: str | None, tls: bool) -> frozenset[str]:
        results: list[list[str]] = self.hook.relayauth_principals(
            config=self.config, connector=connector, connection=connection, user=user, tls=tls
        )
        return frozenset(principal for result in results for principal in result)

    def grants(
        self, connector: Connector, connection: ConnectionInfo, principals: frozenset[str], user: str | None
    ) -> list[Grant]:
        results: list[list[Grant]] = self.hook.relayauth_grants(
            config=self.config, connector=connector, connection=connection, principals=principals, user=user
        )
        return [grant for result in results for grant in result]

    def session_state(
        self, session_id: str, connection: ConnectionInfo, connector: Connector, user: str | None = None, tls: bool = False
    ) -> SessionState:
        """Who the session runs as and what it may do, computed through the hooks."""
        principals = self.principals(connector, connection, user, tls)
        grants = tuple(self.grants(connector, connection, principals, user))
        key = (grants, principals)
        rights = self._folds.get(key)
        if rights is None:  # the fold is a pure function of its inputs: remember recent results
            if len(self._folds) >= _FOLD_CACHE_SIZE:
                self._folds.clear()
            rights = self._folds[key] = fold_grants(grants, principals)
        return SessionState(session_id, connection, connector, principals, rights, user, tls)

    def authenticate(self, connector: Connector, username: str, password: str) -> bool:
        result = self.hook.relayauth_authenticate(
            config=self.config, connector=connector, username=username, password=password
        )
        return result is True

    # -- commands -------------------------------------------------------------------------------

    def judge_mail(self, session: SessionState, sender: MailPath, declared_size: int | None) -> Decision:
        decisions = self.hook.relayauth_check_mail(
            config=self.config, session=session, domains=self.domains, sender=sender, declared_size=declared_size
        )
        return fold_decisions(decisions, reply("cannot_submit", "no plugin accepted the sender", _POLICY))

    def judge_rcpt(self, session: SessionState, sender: MailPath, recipient: MailPath, accepted_count: int) -> Decision:
        decisions = self.hook.relayauth_check_rcpt(
            config=self.config,
            session=session,
            domains=self.domains,
            sender=sender,
            recipient=recipient,
            accepted_count=accepted_count,
        )
        return fold_decisions(decisions, reply("unable_to_relay", "no plugin accepted the recipient", _POLICY))

    def judge_message(
        self, session: SessionState, sender: MailPath, recipients: tuple[MailPath, ...], facts: MessageFacts
    ) -> Decision | None:
        """A refusal for the message, or None to accept it."""
        decisions = self.hook.relayauth_check_message(
            config=self.config, session=session, sender=sender, recipients=recipients, facts=facts
        )
        decided = [decision for decision in decisions if decision is not None and not decision.accepted]
        return fold_decisions(decided, reply("message_ok")) if decided else None

    def firewalled_headers(self, session: SessionState, header_names: tuple[str, ...]) -> set[str]:
        results: list[list[str]] = self.hook.relayauth_header_firewall(
            config=self.config, session=session, header_names=header_names
        )
        return {name.lower() for result in results for name in result}

    # -- limits ---------------------------------------------------------------------------------

    def connection_limit(self, connector: Connector, connection: ConnectionInfo, counts: ConnectionCounts) -> Decision | None:
        """A refusal for a new connection over a concurrency limit, or None."""
        decisions = self.hook.relayauth_connection_limits(
            config=self.config, connector=connector, connection=connection, counts=counts
        )
        refusals = [decision for decision in decisions if decision is not None and not decision.accepted]
        return fold_decisions(refusals, reply("service_unavailable")) if refusals else None

    def rate_limits(self, session: SessionState, sender: MailPath) -> list[RateLimit]:
        results: list[list[RateLimit]] = self.hook.relayauth_rate_limits(config=self.config, session=session, sender=sender)
        return [limit for result in results for limit in result]

    # -- configuration --------------------------------------------------------------------------

    def plugin_problems(self) -> list[ConfigProblem]:
        """Problems the plugins' ``relayauth_validate_config`` implementations find."""
        results: list[list[ConfigProblem]] = self.hook.relayauth_validate_config(config=self.config)
        problems = [problem for problems in results for problem in problems]
        for name in self.config.plugins.options:
            if self.plugin_manager.get_plugin(name) is None:
                problems.append(
                    ConfigProblem(
                        self.config.source,
                        f"[plugins.{name}]",
                        "",
                        f"settings for plugin {name!r}, but no plugin of that name is loaded "
                        "(not installed, disabled, or misspelt)",
                    )
                )
        return problems


def _block(manager: pluggy.PluginManager, names: Iterable[str]) -> None:
    """Apply ``[plugins] disabled`` to a plugin manager made elsewhere (tests, embedding apps)."""
    for name in names:
        if manager.get_plugin(name) is None and not manager.is_blocked(name):
            known = sorted(manager_name for manager_name, _ in manager.list_name_plugin() if manager_name)
            raise UnknownPluginError(f"cannot disable unknown plugin {name!r}; known plugins: {', '.join(known)}", [name])
        manager.set_blocked(name)


def load_policy(path: str | Path, plugin_manager: pluggy.PluginManager | None = None) -> RelayPolicy:
    """Read, validate and compile a configuration file; raise :class:`ConfigError` on any error
    (including the plugins' checks, such as open-relay detection)."""
    result = read_config(path)
    if result.config is None:
        raise ConfigError(result.problems)
    try:
        policy = RelayPolicy(result.config, plugin_manager)
    except UnknownPluginError as error:
        raise ConfigError(result.problems + [ConfigProblem(str(path), "[plugins]", "disabled", str(error))]) from error
    problems = result.problems + policy.plugin_problems()
    if any(problem.severity is Severity.ERROR for problem in problems):
        raise ConfigError(problems)
    return policy
