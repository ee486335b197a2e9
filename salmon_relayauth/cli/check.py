"""``salmon-relayauth check CONFIG``: load and validate a configuration, list every problem."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..config.loader import read_config
from ..config.problems import ConfigProblem, Severity
from ..model.connector import Connector, RelayConfig
from ..plugins import PluginLoadError, UnknownPluginError
from ..policy import RelayPolicy

__all__ = ["register", "run"]


def register(verbs: Any) -> None:
    parser = verbs.add_parser("check", help="validate a configuration file", description=__doc__)
    parser.add_argument("config", metavar="CONFIG", help="path to the TOML configuration")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = read_config(args.config)
    problems = list(result.problems)
    if result.config is not None:
        try:
            problems += RelayPolicy(result.config).plugin_problems()
        except PluginLoadError as error:
            field = "disabled" if isinstance(error, UnknownPluginError) else ""
            problems.append(ConfigProblem(str(args.config), "[plugins]", field, str(error)))
    errors = [problem for problem in problems if problem.severity is Severity.ERROR]
    config = result.config if not errors else None
    if args.json:
        print(json.dumps(_as_json(config, problems), indent=2))
    else:
        for problem in problems:
            print(problem, file=sys.stderr if problem.severity is Severity.ERROR else sys.stdout)
        if config is not None:
            _print_summary(config)
        else:
            print(f"{args.config}: {len(errors)} error(s); the relay will not start with this file", file=sys.stderr)
    return 1 if errors else 0


def _as_json(config: RelayConfig | None, problems: list[ConfigProblem]) -> dict[str, Any]:
    return {
        "valid": config is not None,
        "problems": [problem.as_dict() for problem in problems],
        "connectors": [_connector_summary(connector) for connector in config.connectors] if config else [],
    }


def _connector_summary(connector: Connector) -> dict[str, Any]:
    return {
        "name": connector.name,
        "enabled": connector.enabled,
        "bindings": [str(binding) for binding in connector.bindings],
        "remote_ip_ranges": [str(remote) for remote in connector.remote_ip_ranges],
        "permission_groups": sorted(group.value for group in connector.permission_groups),
        "auth_mechanism": sorted(mechanism.value for mechanism in connector.auth_mechanism),
        "permissions": [
            {
                "user": entry.user,
                "extended_rights": sorted(right.value for right in entry.extended_rights),
                "deny": entry.deny,
            }
            for entry in connector.permissions
        ],
    }


def _print_summary(config: RelayConfig) -> None:
    print(f"{config.source}: valid, {len(config.connectors)} connector(s), server fqdn {config.server.fqdn}")
    for connector in config.connectors:
        summary = _connector_summary(connector)
        state = "enabled" if connector.enabled else "disabled"
        print(f"\n  {connector.name} ({state})")
        for key in ("bindings", "remote_ip_ranges", "permission_groups", "auth_mechanism"):
            print(f"    {key:<18} {', '.join(summary[key])}")
        for entry in summary["permissions"]:
            verb = "deny" if entry["deny"] else "allow"
            print(f"    {'permission':<18} {verb} {entry['user']}: {', '.join(entry['extended_rights'])}")
    if config.smarthost is not None:
        print(f"\n  smarthost {config.smarthost.host}:{config.smarthost.port}")
