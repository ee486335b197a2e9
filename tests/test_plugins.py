"""The plugin spine: default plugins can be blocked or replaced, entry points load, failures stop start-up."""

from __future__ import annotations

import pytest

from salmon_relayauth import (
    ConnectionInfo,
    ConnectorSelection,
    PluginLoadError,
    RelayPolicy,
    config_from_mapping,
    hookimpl,
    load_policy,
    make_plugin_manager,
)

CONFIG = {
    "connectors": [
        {
            "name": "Default Frontend",
            "bindings": ["0.0.0.0:2525"],
            "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
            "permission_groups": ["AnonymousUsers"],
        },
        {
            "name": "Anonymous Relay",
            "bindings": ["0.0.0.0:2525"],
            "remote_ip_ranges": ["192.168.5.10"],
            "permission_groups": ["AnonymousUsers"],
        },
    ]
}
RELAY_HOST = ConnectionInfo("127.0.0.1", 2525, "192.168.5.10")
OTHER_HOST = ConnectionInfo("127.0.0.1", 2525, "198.51.100.7")


class PinToDefaultFrontend:
    """A third-party selection rule: every client lands on 'Default Frontend'."""

    @hookimpl
    def relayauth_select_connector(self, config, index, connection):  # type: ignore[no-untyped-def]
        chosen = config.connector("Default Frontend")
        return ConnectorSelection(chosen, chosen.remote_ip_ranges[0], False, "pin")


def names(policy: RelayPolicy, connection: ConnectionInfo) -> str | None:
    selection = policy.select_connector(connection)
    return None if selection is None else selection.connector.name


def test_default_plugin_is_registered_by_name() -> None:
    manager = make_plugin_manager(load_entrypoints=False)
    assert manager.get_plugin("relayauth.selection") is not None


def test_third_party_selection_overrides_default() -> None:
    config = config_from_mapping(CONFIG)
    manager = make_plugin_manager(plugins=[("pin", PinToDefaultFrontend())], load_entrypoints=False)
    policy = RelayPolicy(config, manager)
    selection = policy.select_connector(RELAY_HOST)
    assert selection is not None and selection.connector.name == "Default Frontend"
    assert selection.source == "pin"
    # Without the plugin the relay host lands on its own connector.
    assert names(RelayPolicy(config, make_plugin_manager(load_entrypoints=False)), RELAY_HOST) == "Anonymous Relay"


def test_plugin_returning_none_defers_to_default() -> None:
    class NoOpinion:
        @hookimpl
        def relayauth_select_connector(self, config, index, connection):  # type: ignore[no-untyped-def]
            return None

    manager = make_plugin_manager(plugins=[("quiet", NoOpinion())], load_entrypoints=False)
    assert names(RelayPolicy(config_from_mapping(CONFIG), manager), RELAY_HOST) == "Anonymous Relay"


def test_blocked_default_selection_refuses_everyone() -> None:
    config = config_from_mapping(CONFIG)
    manager = make_plugin_manager(disabled=["relayauth.selection"], load_entrypoints=False)
    policy = RelayPolicy(config, manager)
    assert manager.get_plugin("relayauth.selection") is None
    assert policy.select_connector(RELAY_HOST) is None
    assert policy.select_connector(OTHER_HOST) is None


def test_blocked_default_replaced_by_config_file(tmp_path, entry_point_dir) -> None:
    entry_point_dir(
        "pin_plugin",
        {"pin": "pin_selection"},
        {
            "pin_selection": (
                "from salmon_relayauth import hookimpl, ConnectorSelection\n"
                "@hookimpl\n"
                "def relayauth_select_connector(config, index, connection):\n"
                "    chosen = config.connector('Anonymous Relay')\n"
                "    return ConnectorSelection(chosen, chosen.remote_ip_ranges[0], False, 'pin')\n"
            )
        },
    )
    path = tmp_path / "relay.toml"
    path.write_text(
        '[plugins]\ndisabled = ["relayauth.selection"]\n'
        '[[connectors]]\nname = "Anonymous Relay"\nbindings = ["0.0.0.0:2525"]\n'
        'remote_ip_ranges = ["192.168.5.10"]\npermission_groups = ["AnonymousUsers"]\n'
    )
    policy = load_policy(path)
    assert policy.plugin_manager.get_plugin("relayauth.selection") is None
    assert names(policy, OTHER_HOST) == "Anonymous Relay"  # the entry-point plugin decided


def test_entry_point_plugin_is_discovered(entry_point_dir) -> None:
    entry_point_dir(
        "office_rule",
        {"office_rule": "office_rule_module"},
        {
            "office_rule_module": (
                "from salmon_relayauth import hookimpl, ConnectorSelection\n"
                "@hookimpl(tryfirst=True)\n"
                "def relayauth_select_connector(config, index, connection):\n"
                "    chosen = config.connector('Default Frontend')\n"
                "    return ConnectorSelection(chosen, chosen.remote_ip_ranges[0], False, 'office_rule')\n"
            )
        },
    )
    manager = make_plugin_manager()
    assert manager.get_plugin("office_rule") is not None
    selection = RelayPolicy(config_from_mapping(CONFIG), manager).select_connector(RELAY_HOST)
    assert selection is not None and selection.source == "office_rule"


def test_entry_point_that_fails_to_import_stops_startup(entry_point_dir) -> None:
    entry_point_dir("broken_dist", {"broken": "broken_module"}, {"broken_module": "import no_such_module_xyz\n"})
    with pytest.raises(PluginLoadError) as caught:
        make_plugin_manager()
    message = str(caught.value)
    assert "'broken'" in message and "broken_dist" in message and "no_such_module_xyz" in message


def test_entry_point_naming_missing_module_stops_startup(entry_point_dir) -> None:
    entry_point_dir("ghost_dist", {"ghost": "ghost_module_not_written"}, {})
    with pytest.raises(PluginLoadError, match="'ghost'"):
        make_plugin_manager()


def test_unknown_hook_name_stops_startup() -> None:
    class Typo:
        @hookimpl
        def relayauth_selct_connector(self, config):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(PluginLoadError, match="typo-plugin.*relayauth_selct_connector|relayauth_selct_connector.*typo-plugin"):
        make_plugin_manager(plugins=[("typo-plugin", Typo())], load_entrypoints=False)


def test_hook_with_unknown_argument_stops_startup() -> None:
    class BadArgs:
        @hookimpl
        def relayauth_select_connector(self, config, client_ip):  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(PluginLoadError, match="bad-args"):
        make_plugin_manager(plugins=[("bad-args", BadArgs())], load_entrypoints=False)


def test_disabling_an_unknown_plugin_is_an_error() -> None:
    with pytest.raises(PluginLoadError, match="relayauth.selecton"):
        make_plugin_manager(disabled=["relayauth.selecton"], load_entrypoints=False)


def test_validate_hook_collects_problems_from_every_plugin(tmp_path) -> None:
    from salmon_relayauth import ConfigError, ConfigProblem

    class NoPort2525:
        @hookimpl
        def relayauth_validate_config(self, config):  # type: ignore[no-untyped-def]
            return [
                ConfigProblem(config.source, f"connector {c.name!r}", "bindings", "port 2525 is reserved")
                for c in config.connectors
                if any(b.port == 2525 for b in c.bindings)
            ]

    path = tmp_path / "relay.toml"
    path.write_text(
        '[[connectors]]\nname = "Relay"\nbindings = ["0.0.0.0:2525"]\n'
        'remote_ip_ranges = ["192.168.5.10"]\npermission_groups = ["AnonymousUsers"]\n'
    )
    manager = make_plugin_manager(plugins=[("no2525", NoPort2525())], load_entrypoints=False)
    with pytest.raises(ConfigError) as caught:
        load_policy(path, manager)
    assert f"{path}: connector 'Relay': bindings: port 2525 is reserved" in str(caught.value)
