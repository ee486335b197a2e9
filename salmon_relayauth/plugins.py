"""The plugin manager factory: default plugins, entry-point plugins and the caller's own, checked.

There is no module-global manager: every relay, ``explain`` run and test makes its own, so two
configurations never share plugin state. Start-up fails closed: a plugin that cannot be imported,
a hook implementation with a bad signature, or a hook name no spec defines raises
:class:`PluginLoadError` naming the plugin.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

import pluggy

from . import hookspecs
from .defaults import DEFAULT_PLUGINS
from .hookspecs import PROJECT_NAME

__all__ = ["ENTRY_POINT_GROUP", "PluginLoadError", "UnknownPluginError", "make_plugin_manager"]

ENTRY_POINT_GROUP = "salmon_relayauth"


class PluginLoadError(RuntimeError):
    """A plugin could not be loaded or does not match the hook specifications."""


class UnknownPluginError(PluginLoadError):
    """``disabled`` names a plugin that does not exist; ``names`` lists them."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


def make_plugin_manager(
    *,
    plugins: Iterable[tuple[str, object]] = (),
    disabled: Iterable[str] = (),
    load_entrypoints: bool = True,
) -> pluggy.PluginManager:
    """A new plugin manager with the default plugins, the installed entry-point plugins and ``plugins``.

    :param plugins: extra ``(name, plugin)`` pairs, registered last (so asked first by firstresult hooks).
    :param disabled: names of default or entry-point plugins to block; an unknown name is an error,
        since a misspelt name would leave the plugin meant to be off running.

    A plugin in ``plugins`` with the name of a default or installed plugin replaces it.
    :param load_entrypoints: load the plugins published in the ``salmon_relayauth`` entry-point group.
    """
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    blocked = set(disabled)
    found_entrypoints = list(entry_points(group=ENTRY_POINT_GROUP)) if load_entrypoints else []
    known = set(DEFAULT_PLUGINS) | {ep.name for ep in found_entrypoints}
    unknown = sorted(blocked - known)
    if unknown:
        raise UnknownPluginError(
            f"cannot disable unknown plugin(s) {', '.join(map(repr, unknown))}; known plugins: {', '.join(sorted(known))}",
            unknown,
        )
    extra = list(plugins)
    replacing = {name for name, _ in extra}
    for name in blocked - replacing:  # a caller's plugin of the same name replaces the one blocked
        manager.set_blocked(name)
    for name, plugin_class in DEFAULT_PLUGINS.items():
        if name not in blocked and name not in replacing:
            _register(manager, plugin_class(), name)
    for entry_point in found_entrypoints:
        if entry_point.name not in blocked and entry_point.name not in replacing:
            _register(manager, _load(entry_point), entry_point.name)
    for name, plugin in extra:
        _register(manager, plugin, name)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        name = manager.get_name(error.plugin) or repr(error.plugin)
        raise PluginLoadError(f"plugin {name!r} implements a hook that does not exist: {error}") from error
    return manager


def _load(entry_point: EntryPoint) -> object:
    distribution = entry_point.dist.name if entry_point.dist is not None else "unknown distribution"
    try:
        return entry_point.load()
    except Exception as error:  # any failure to import must stop start-up, naming the plugin
        raise PluginLoadError(
            f"plugin {entry_point.name!r} ({entry_point.value}, from {distribution}) failed to load: "
            f"{type(error).__name__}: {error}"
        ) from error


def _register(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        manager.register(plugin, name=name)
    except pluggy.PluginValidationError as error:
        raise PluginLoadError(f"plugin {name!r} is not valid: {error}") from error
    except ValueError as error:
        raise PluginLoadError(f"plugin {name!r} could not be registered: {error}") from error
