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
    from .engine.selection import ConnectorIndex
    from .model.connection import ConnectionInfo, ConnectorSelection
    from .model.connector import RelayConfig

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
def relayauth_validate_config(config: RelayConfig) -> list[ConfigProblem]:  # type: ignore[empty-body]
    """Find problems in a configuration that already passed the built-in checks.

    :param config: the configuration being loaded or checked.
    :return: problems found (errors stop start-up; warnings are reported).

    Results combine by concatenation: every plugin's problems are reported.
    """
