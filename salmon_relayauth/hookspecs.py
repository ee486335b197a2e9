"""Every hook of salmon-relayauth. The docstrings are the reference for plugin authors.

Implement a hook with the :data:`hookimpl` marker in a module or class and publish it through the
entry-point group ``salmon_relayauth``::

    [project.entry-points.salmon_relayauth]
    my_rule = "my_package.my_module"

Hook arguments are passed by keyword; an implementation may accept any subset of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config.problems import ConfigProblem
    from .engine.domains import AcceptedDomains
    from .engine.headers import MessageFacts
    from .engine.limits import ConnectionCounts
    from .engine.selection import ConnectorIndex
    from .engine.smtp_address import MailPath
    from .model.connection import ConnectionInfo, ConnectorSelection
    from .model.connector import Connector, RelayConfig
    from .model.decision import Decision
    from .model.limits import RateLimit
    from .model.rights import Grant
    from .model.session import SessionState

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "salmon_relayauth"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def relayauth_select_connector(
    config: RelayConfig, index: ConnectorIndex, connection: ConnectionInfo
) -> ConnectorSelection | None:
    """Choose the receive connector for a new connection, before the banner is sent.

    :param config: the configuration in force.
    :param index: the selection index built from ``config`` when it was loaded.
    :param connection: the local and remote addresses and ports of the connection.
    :return: the selection, or None to leave the choice to the next plugin.

    Results combine by ``firstresult``: the first plugin returning a selection decides (plugins
    registered later, or marked ``tryfirst``, are asked first; the default plugin is ``trylast``).
    When every plugin returns None the connection is refused with ``421 4.3.2``.
    """


@hookspec
def relayauth_validate_config(config: RelayConfig) -> list[ConfigProblem]:
    """Find problems in a configuration that already passed the built-in checks.

    :param config: the configuration being loaded or checked.
    :return: problems found (errors stop start-up; warnings are reported).

    Results combine by concatenation: every plugin's problems are reported.
    """


@hookspec
def relayauth_principals(
    config: RelayConfig, connector: Connector, connection: ConnectionInfo, user: str | None, tls: bool
) -> list[str]:
    """Name the security principals a session runs as (reference §4.3).

    :param config: the configuration in force.
    :param connector: the session's connector.
    :param connection: the session's addresses.
    :param user: the authenticated user name, or None before (or without) a successful AUTH.
    :param tls: True once STARTTLS has completed.
    :return: principal names (``NT AUTHORITY\\ANONYMOUS LOGON``, a user name, ...).

    Results combine by union. Called at connect, after STARTTLS and after a successful AUTH.
    """


@hookspec
def relayauth_grants(
    config: RelayConfig, connector: Connector, connection: ConnectionInfo, principals: frozenset[str], user: str | None
) -> list[Grant]:
    """Contribute allow and deny grants of extended rights on a connector.

    :param config: the configuration in force.
    :param connector: the session's connector.
    :param connection: the session's addresses (a rule may depend on the client).
    :param principals: who the session runs as.
    :param user: the authenticated user name, or None.
    :return: grants; a grant applies when its principal is one of ``principals``.

    Results combine by a fold that does not depend on plugin order: a deny of a right wins over
    every allow; otherwise any allow grants it; otherwise it is not granted.
    """


@hookspec(firstresult=True)
def relayauth_authenticate(config: RelayConfig, connector: Connector, username: str, password: str) -> bool | None:
    """Check AUTH credentials.

    :param config: the configuration in force.
    :param connector: the connector the client authenticates on.
    :param username: the user name the client sent.
    :param password: the password the client sent; never log it.
    :return: True when the credentials are valid, False when they are not, None when this plugin
        does not know the user (the next plugin is asked).

    Results combine by ``firstresult``; when no plugin answers, authentication fails.
    """


@hookspec
def relayauth_check_mail(
    config: RelayConfig, session: SessionState, domains: AcceptedDomains, sender: MailPath, declared_size: int | None
) -> Decision | None:
    """Judge MAIL FROM.

    :param config: the configuration in force.
    :param session: the session, with its connector, principals and effective rights.
    :param domains: the accepted domains.
    :param sender: the parsed reverse path (``sender.is_null`` for ``<>``).
    :param declared_size: the ``SIZE=`` parameter, or None.
    :return: a decision, or None for no opinion.

    Results combine by severity: the most severe decision wins (5xx over 4xx over 2xx). At least one
    plugin must accept; when every plugin returns None the command is refused.
    """


@hookspec
def relayauth_check_rcpt(
    config: RelayConfig,
    session: SessionState,
    domains: AcceptedDomains,
    sender: MailPath,
    recipient: MailPath,
    accepted_count: int,
) -> Decision | None:
    """Judge one RCPT TO.

    :param config: the configuration in force.
    :param session: the session, with its connector, principals and effective rights.
    :param domains: the accepted domains.
    :param sender: the transaction's reverse path.
    :param recipient: the parsed forward path (source route already dropped).
    :param accepted_count: recipients already accepted in this transaction.
    :return: a decision, or None for no opinion.

    Results combine by severity as for MAIL. When every plugin returns None the recipient is
    refused with ``550 5.7.1 Unable to relay``: relaying is never the default.
    """


@hookspec
def relayauth_check_message(
    config: RelayConfig,
    session: SessionState,
    sender: MailPath,
    recipients: tuple[MailPath, ...],
    facts: MessageFacts,
) -> Decision | None:
    """Judge a whole message at the end of DATA.

    :param config: the configuration in force.
    :param session: the session, with its connector, principals and effective rights.
    :param sender: the transaction's reverse path.
    :param recipients: every accepted recipient.
    :param facts: size, header size, header field names and hop count of the message.
    :return: a refusal, or None to accept.

    Results combine by severity; no decision means the message is accepted.
    """


@hookspec
def relayauth_header_firewall(
    config: RelayConfig, session: SessionState, header_names: tuple[str, ...]
) -> list[str]:
    """Name header fields to remove from an accepted message (reference §3.1).

    :param config: the configuration in force.
    :param session: the session, with its effective rights.
    :param header_names: the message's header field names, as written.
    :return: field names to remove (compared case-insensitively).

    Results combine by union.
    """


@hookspec
def relayauth_connection_limits(
    config: RelayConfig, connector: Connector, connection: ConnectionInfo, counts: ConnectionCounts
) -> Decision | None:
    """Judge a new connection against concurrency limits, after its connector was selected.

    :param config: the configuration in force.
    :param connector: the connector selected for the connection.
    :param connection: the connection's addresses.
    :param counts: connections already open on this relay node (on the connector, from the source).
    :return: a refusal (sent instead of the banner, then the connection is closed), or None.

    Results combine by severity: the most severe refusal wins.
    """


@hookspec
def relayauth_rate_limits(config: RelayConfig, session: SessionState, sender: MailPath) -> list[RateLimit]:
    """Name the rate limits an accepted MAIL FROM counts against.

    :param config: the configuration in force.
    :param session: the session (connector, client, authenticated user).
    :param sender: the accepted reverse path.
    :return: limits to charge one message to; a plugin adds its own limit or key by returning more.

    Results combine by concatenation; all are charged atomically (all or none) in the throttling
    store, shared between relay nodes when it is Redis. The first exceeded limit's decision is sent
    and the connection is closed; a limit with ``shadow`` only logs.
    """
