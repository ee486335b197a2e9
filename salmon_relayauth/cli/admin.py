"""The operators' admin verbs, after the Exchange cmdlets: ``new-connector``, ``set-connector``,
``get-connector``, ``remove-connector``, ``add-permission``, ``remove-permission`` and ``get-permission``.

Verbs that change the file edit it in place (comments and layout kept), then load the edited text
and run the plugins' checks; any error refuses the change and leaves the file byte for byte as it
was. Otherwise the file is replaced atomically. Exit status: 0 done, 1 refused or not found, 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from tomlkit.items import InlineTable, Table
from tomlkit.toml_document import TOMLDocument

from ..config import editor
from ..config.dump import connector_to_mapping
from ..config.fields import CONNECTOR_FIELDS
from ..config.loader import canonical_principal, read_config_text
from ..config.problems import ConfigProblem, Severity
from ..config.usage_defaults import USAGE_DEFAULTS
from ..engine.permissions import GROUP_GRANTS
from ..model.connector import Connector, RelayConfig
from ..model.enums import PermissionGroup, Right, Usage, parse_enum
from ..model.units import format_byte_size, format_timespan, parse_byte_size, parse_limit
from ..plugins import PluginLoadError
from ..policy import RelayPolicy

__all__ = ["PermissionRow", "exchange_name", "permission_rows", "register"]

NULL = "$null"  # ``--FIELD '$null'`` removes the key, so the default applies again
_USAGE_KEYS = ("permission_groups", "auth_mechanism", "bindings", "remote_ip_ranges")
_ACRONYMS = {"ip": "IP", "tls": "TLS", "ehlo": "EHLO"}

Change = Callable[[TOMLDocument, RelayConfig | None], list[str]]


class _UsageError(Exception):
    """A bad command-line value: reported naming the option, exit status 2."""


def exchange_name(key: str) -> str:
    """The Exchange property name of a config key: ``remote_ip_ranges`` -> ``RemoteIPRanges``."""
    return "".join(_ACRONYMS.get(word, word.capitalize()) for word in key.split("_"))


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


# -- registration --------------------------------------------------------------------------------


def register(verbs: Any) -> None:
    """Add the admin verbs to the ``salmon-relayauth`` sub-command parser."""

    def verb(name: str, help_text: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = verbs.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        parser.add_argument("config", metavar="CONFIG", help="path to the TOML configuration")
        parser.set_defaults(run=run)
        return parser

    new = verb("new-connector", "create a receive connector (New-ReceiveConnector)", _run_new)
    new.add_argument("--name", required=True, help="the connector's name (-Name)")
    usage = new.add_mutually_exclusive_group()
    usage.add_argument("--usage", metavar="USAGE", help="Custom, Client, Internal, Internet or Partner (-Usage)")
    for member in Usage:
        usage.add_argument(_option(member.value.lower()), dest="usage", action="store_const", const=member.value,
                           help=f"same as --usage {member.value}")
    _field_options(new, skip=("usage",))

    change = verb("set-connector", "change a receive connector (Set-ReceiveConnector)", _run_set)
    change.add_argument("identity", metavar="IDENTITY", help="the connector's name")
    change.add_argument("--name", dest="new_name", metavar="NAME", help="rename the connector")
    _field_options(change)

    get = verb("get-connector", "show receive connectors (Get-ReceiveConnector)", _run_get)
    get.add_argument("identity", metavar="IDENTITY", nargs="?", help="the connector's name (default: all)")
    get.add_argument("--format-list", action="store_true", help="every property as 'Name : value' lines")
    get.add_argument("--property", metavar="P1,P2", help="only these properties (implies --format-list)")
    get.add_argument("--json", action="store_true", help="print the connectors as JSON")

    remove = verb("remove-connector", "delete a receive connector (Remove-ReceiveConnector)", _run_remove)
    remove.add_argument("identity", metavar="IDENTITY", help="the connector's name")

    for name, help_text, run in (
        ("add-permission", "add an explicit permission entry (Add-ADPermission)", _run_add_permission),
        ("remove-permission", "remove rights from an explicit entry (Remove-ADPermission)", _run_remove_permission),
    ):
        parser = verb(name, help_text, run)
        parser.add_argument("identity", metavar="IDENTITY", help="the connector's name")
        parser.add_argument("--user", required=True, metavar="PRINCIPAL", help='e.g. "NT AUTHORITY\\ANONYMOUS LOGON"')
        parser.add_argument("--extended-rights", required=True, metavar="R1,R2", help="comma-separated extended rights")
        parser.add_argument("--deny", action="store_true", help="a deny entry rather than an allow entry")

    show = verb("get-permission", "list a connector's permissions (Get-ADPermission)", _run_get_permission)
    show.add_argument("identity", metavar="IDENTITY", nargs="?", help="the connector's name (default: all)")
    show.add_argument("--user", metavar="PRINCIPAL", help="only this principal's entries")
    show.add_argument("--json", action="store_true", help="print the entries as JSON")


def _field_options(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    fields = parser.add_argument_group("connector fields", f"lists are comma-separated; '{NULL}' restores the default")
    for key in CONNECTOR_FIELDS:
        if key not in skip:
            fields.add_argument(_option(key), dest=f"field_{key}", metavar="VALUE", help=f"-{exchange_name(key)}")


def _given_fields(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``(key, TOML value)`` for every field option given; the value is None for ``$null``."""
    given = []
    for key in CONNECTOR_FIELDS:
        text = getattr(args, f"field_{key}", None)
        if text is None:
            continue
        if text.strip().casefold() == NULL:
            given.append((key, None))
            continue
        try:
            given.append((key, editor.field_value(key, text)))
        except ValueError as error:
            raise _UsageError(f"{_option(key)} {text!r}: {error}") from None
    return given


def _rights(text: str) -> list[Right]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise _UsageError("--extended-rights: name at least one extended right")
    try:
        return list(dict.fromkeys(parse_enum(Right, name) for name in names))
    except ValueError as error:
        raise _UsageError(f"--extended-rights: {error}") from None


def _user(text: str) -> str:
    if not text.strip():
        raise _UsageError("--user: name a principal, e.g. 'NT AUTHORITY\\ANONYMOUS LOGON'")
    return canonical_principal(text)


def _usage_failure(args: argparse.Namespace, error: _UsageError) -> int:
    print(f"salmon-relayauth {args.verb}: error: {error}", file=sys.stderr)
    return 2


# -- verbs that change the file --------------------------------------------------------------------


def _run_new(args: argparse.Namespace) -> int:
    try:
        given = _given_fields(args)
        usage = parse_enum(Usage, args.usage).value if args.usage is not None else None
    except _UsageError as error:
        return _usage_failure(args, error)
    except ValueError as error:
        return _usage_failure(args, _UsageError(f"--usage: {error}"))
    if not args.name.strip():
        return _usage_failure(args, _UsageError("--name: a connector needs a name"))
    values = [("usage", usage)] if usage is not None else []
    values += [(key, value) for key, value in given if value is not None]

    def change(document: TOMLDocument, before: RelayConfig | None) -> list[str]:
        editor.add_connector(document, args.name.strip(), values)
        return [f"connector {args.name.strip()!r} created"]

    return _edit(args.config, change)


def _run_set(args: argparse.Namespace) -> int:
    try:
        given = _given_fields(args)
    except _UsageError as error:
        return _usage_failure(args, error)
    if not given and args.new_name is None:
        return _usage_failure(args, _UsageError("nothing to change: give --name or at least one --FIELD VALUE"))

    def change(document: TOMLDocument, before: RelayConfig | None) -> list[str]:
        table = editor.find_connector(document, args.identity)
        name = str(table["name"])
        notes = []
        if any(key == "usage" for key, _ in given):
            notes += _pin_usage_defaults(table, name, dict(given), before)
        for key, value in given:
            if value is None:
                editor.remove_field(table, key)
            else:
                editor.set_field(table, key, value)
        if args.new_name is not None:
            editor.set_field(table, "name", args.new_name.strip())
            notes.append(f"connector {name!r} renamed to {args.new_name.strip()!r}")
        if given:
            notes.append(f"connector {name!r}: set {', '.join(key for key, _ in given)}")
        return notes

    return _edit(args.config, change)


def _pin_usage_defaults(table: Table | InlineTable, name: str, given: dict[str, Any], before: RelayConfig | None) -> list[str]:
    """Usage only chooses defaults at creation (reference §5): write out the values the old usage
    supplied, so changing ``usage`` afterwards changes no permission, binding or range."""
    if before is None:
        raise editor.EditError("cannot change usage while the file has errors: the connector's current defaults are unknown")
    connector = before.connector(name)
    new_usage = parse_enum(Usage, given["usage"]) if given["usage"] is not None else Usage.CUSTOM
    current = connector_to_mapping(connector)
    pinned = []
    for key in _USAGE_KEYS:
        if key in table or key in given:
            continue
        if getattr(connector, key) != getattr(USAGE_DEFAULTS[new_usage], key):
            editor.set_field(table, key, current[key])
            pinned.append(key)
    if not pinned:
        return []
    return [f"usage only chooses defaults when a connector is created: kept the current {', '.join(pinned)} by writing them"]


def _run_remove(args: argparse.Namespace) -> int:
    def change(document: TOMLDocument, before: RelayConfig | None) -> list[str]:
        return [f"connector {editor.remove_connector(document, args.identity)!r} removed"]

    return _edit(args.config, change)


def _run_add_permission(args: argparse.Namespace) -> int:
    try:
        user, rights = _user(args.user), _rights(args.extended_rights)
    except _UsageError as error:
        return _usage_failure(args, error)
    kind = "deny" if args.deny else "allow"

    def change(document: TOMLDocument, before: RelayConfig | None) -> list[str]:
        table = editor.find_connector(document, args.identity)
        merged = editor.add_permission(table, user, rights, args.deny)
        how = "merged into the existing" if merged else "added as a new"
        return [f"connector {str(table['name'])!r}: {_names(rights)} {how} {kind} entry of {user}"]

    return _edit(args.config, change)


def _run_remove_permission(args: argparse.Namespace) -> int:
    try:
        user, rights = _user(args.user), _rights(args.extended_rights)
    except _UsageError as error:
        return _usage_failure(args, error)

    def change(document: TOMLDocument, before: RelayConfig | None) -> list[str]:
        table = editor.find_connector(document, args.identity)
        name = str(table["name"])
        connector = before.connector(name) if before is not None else None
        missing = [right for right in rights if right not in editor.explicit_rights(table, user, args.deny)]
        if missing:
            raise editor.EditError(_not_explicit(args.config, name, user, missing, args.deny, connector))
        editor.remove_permission(table, user, rights, args.deny)
        notes = [f"connector {name!r}: removed {_names(rights)} from the {'deny' if args.deny else 'allow'} entry of {user}"]
        if connector is not None and not args.deny:
            for right in rights:
                for group in _granting_groups(connector, user, right):
                    notes.append(f"{right.value} is still granted to {user} by the permission group {group.value}")
        return notes

    return _edit(args.config, change)


def _granting_groups(connector: Connector, user: str, right: Right) -> list[PermissionGroup]:
    wanted = canonical_principal(user).casefold()
    return [
        group
        for group in sorted(connector.permission_groups, key=lambda g: g.value)
        for principal, rights in GROUP_GRANTS[group].items()
        if principal.value.casefold() == wanted and right in rights
    ]


def _not_explicit(
    config: str, name: str, user: str, missing: list[Right], deny: bool, connector: Connector | None
) -> str:
    """Why rights cannot be removed: Remove-ADPermission only removes explicit entries."""
    kind = "deny" if deny else "allow"
    lines = []
    for right in missing:
        groups = [] if deny or connector is None else _granting_groups(connector, user, right)
        if groups:
            lines.append(
                f"connector {name!r}: cannot remove {right.value} from {user}: it is granted by the permission "
                f"group {', '.join(group.value for group in groups)}, not by an explicit entry, and a group's "
                "rights cannot be removed one by one (as with Remove-ADPermission)"
            )
        else:
            lines.append(f"connector {name!r}: no explicit {kind} entry of {user} holds {right.value}")
    granted = [right for right in missing if connector is not None and not deny and _granting_groups(connector, user, right)]
    if granted and connector is not None:
        granting = {group for right in granted for group in _granting_groups(connector, user, right)}
        rest = sorted(group.value for group in connector.permission_groups - granting - {PermissionGroup.NONE}) or ["None"]
        command = ["salmon-relayauth", "add-permission", config, name, "--user", user,
                   "--extended-rights", ",".join(right.value for right in granted), "--deny"]
        lines.append(f"  to take the right away, deny it explicitly:  {shlex.join(command)}")
        command = ["salmon-relayauth", "set-connector", config, name, "--permission-groups", ",".join(rest)]
        lines.append(f"  or change the permission groups:  {shlex.join(command)}")
    return "\n".join(lines)


def _names(rights: Iterable[Right]) -> str:
    return ", ".join(right.value for right in rights)


# -- the edit transaction --------------------------------------------------------------------------


def _edit(path_text: str, change: Change) -> int:
    """Apply ``change`` to the file; write it only if the result has no error. Returns the exit status."""
    path = Path(path_text)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as error:
        print(f"{path}: cannot read the file: {error.strerror}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as error:
        print(f"{path}: the file is not UTF-8 text: {error.reason}", file=sys.stderr)
        return 1
    try:
        document = editor.parse_document(text)
        notes = change(document, read_config_text(text, str(path), path.parent).config)
    except editor.EditError as error:
        print(f"{path}: {error}", file=sys.stderr)
        return 1
    edited = editor.render(document)
    if "\r\n" in text:
        edited = edited.replace("\r\n", "\n").replace("\n", "\r\n")
    problems = _problems(edited, path)
    errors = [problem for problem in problems if problem.severity is Severity.ERROR]
    if errors:
        for problem in errors:
            print(problem, file=sys.stderr)
        print(f"{path}: change refused ({len(errors)} error(s)); the file is unchanged", file=sys.stderr)
        return 1
    if edited != text:
        try:
            _replace_file(path, raw, edited.encode("utf-8"))
        except OSError as error:
            print(f"{path}: cannot write the file: {error}", file=sys.stderr)
            return 1
    for note in notes if edited != text else ["nothing to change"]:
        print(f"{path}: {note}")
    for problem in problems:
        print(problem)
    return 0


def _problems(text: str, path: Path) -> list[ConfigProblem]:
    """Every problem of the edited text: the loader's checks, then the plugins' checks."""
    result = read_config_text(text, str(path), path.parent)
    problems = list(result.problems)
    if result.config is not None:
        try:
            problems += RelayPolicy(result.config).plugin_problems()
        except PluginLoadError as error:
            problems.append(ConfigProblem(str(path), "[plugins]", "", str(error)))
    return problems


def _replace_file(path: Path, original: bytes, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    target = Path(os.path.realpath(path))
    if target.read_bytes() != original:
        raise OSError(f"{path} changed while it was being edited; run the command again")
    mode = target.stat().st_mode & 0o7777
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


# -- verbs that read the file ----------------------------------------------------------------------


def _load(args: argparse.Namespace) -> RelayConfig | None:
    path = Path(args.config)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"{path}: cannot read the file: {error}", file=sys.stderr)
        return None
    result = read_config_text(text, str(path), path.parent)
    for problem in result.errors:
        print(problem, file=sys.stderr)
    return result.config


def _select(args: argparse.Namespace, config: RelayConfig) -> list[Connector] | None:
    if args.identity is None:
        return list(config.connectors)
    try:
        return [config.connector(args.identity)]
    except KeyError:
        error = editor.UnknownConnector(args.identity, [connector.name for connector in config.connectors])
        print(f"{args.config}: {error}", file=sys.stderr)
        return None


def _run_get(args: argparse.Namespace) -> int:
    config = _load(args)
    connectors = _select(args, config) if config is not None else None
    if connectors is None:
        return 1
    if args.json:
        print(json.dumps([connector_to_mapping(connector) for connector in connectors], indent=2))
        return 0
    if not (args.format_list or args.property):
        rows = [[c.name, _display("bindings", c.bindings), _display("enabled", c.enabled)] for c in connectors]
        print(_table(["Name", "Bindings", "Enabled"], rows))
        return 0
    keys = ["name", *CONNECTOR_FIELDS]
    if args.property:
        known = {exchange_name(key).casefold(): key for key in keys} | {key: key for key in keys}
        wanted = [part.strip() for part in args.property.split(",") if part.strip()]
        unknown = [name for name in wanted if name.casefold() not in known]
        if unknown:
            valid = ", ".join(exchange_name(key) for key in keys)
            return _usage_failure(args, _UsageError(f"--property: unknown {', '.join(map(repr, unknown))}; properties: {valid}"))
        keys = [known[name.casefold()] for name in wanted]
    print("\n\n".join(_format_list(connector, keys) for connector in connectors))
    return 0


def _format_list(connector: Connector, keys: Sequence[str]) -> str:
    names = [exchange_name(key) for key in keys]
    width = max(map(len, names))
    lines = (f"{name:<{width}} : {_display(key, getattr(connector, key))}" for name, key in zip(names, keys))
    return "\n".join(line.rstrip() for line in lines)


def _display(key: str, value: Any) -> str:
    """A value the way Get-ReceiveConnector shows it."""
    parse = CONNECTOR_FIELDS.get(key)
    if parse is parse_byte_size:
        text = format_byte_size(value)  # "36MB", "100B"
        number = text.rstrip("KMGTB")
        return f"{number} {text[len(number):]} ({value:,} bytes)"
    if parse is parse_limit and value is None:
        return "Unlimited"
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, timedelta):
        return format_timespan(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, frozenset):
        members = sorted(value, key=lambda member: list(type(member).__members__.values()).index(member))
        return ", ".join(str(member.value) for member in members)
    if isinstance(value, tuple):
        return "{" + ", ".join(str(item) for item in value) + "}"
    return str(value)


@dataclass(frozen=True)
class PermissionRow:
    """One line of ``get-permission``: who holds which rights on a connector, and from where."""

    identity: str
    user: str
    deny: bool
    extended_rights: tuple[Right, ...]
    source: str
    inherited: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "user": self.user,
            "deny": self.deny,
            "inherited": self.inherited,
            "extended_rights": [right.value for right in self.extended_rights],
            "source": self.source,
        }


def permission_rows(connector: Connector) -> list[PermissionRow]:
    """The grants of the connector's permission groups, then its explicit entries in file order."""
    rows = [
        PermissionRow(connector.name, principal.value, False, _sorted(rights), f"PermissionGroup {group.value}")
        for group in sorted(connector.permission_groups, key=lambda g: g.value)
        for principal, rights in GROUP_GRANTS[group].items()
    ]
    rows += [
        PermissionRow(connector.name, entry.user, entry.deny, _sorted(entry.extended_rights), "explicit")
        for entry in connector.permissions
    ]
    return rows


def _sorted(rights: Iterable[Right]) -> tuple[Right, ...]:
    return tuple(sorted(rights, key=lambda right: right.value.casefold()))


def _run_get_permission(args: argparse.Namespace) -> int:
    config = _load(args)
    connectors = _select(args, config) if config is not None else None
    if connectors is None:
        return 1
    rows = [row for connector in connectors for row in permission_rows(connector)]
    if args.user is not None:
        wanted = canonical_principal(args.user).casefold()
        rows = [row for row in rows if row.user.casefold() == wanted]
    if args.json:
        print(json.dumps([row.as_dict() for row in rows], indent=2))
        return 0
    if not rows:
        print("no permissions match")
        return 0
    headers = ["Identity", "User", "Deny", "Inherited", "ExtendedRights", "Source"]
    lines = [
        [row.identity, row.user, str(row.deny), str(row.inherited), "{" + _names(row.extended_rights) + "}", row.source]
        for row in rows
    ]
    print(_table(headers, lines))
    return 0


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A PowerShell-style table: left-aligned columns, headers underlined with dashes."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return " ".join(f"{cell:<{width}}" for cell, width in zip(cells, widths)).rstrip()

    underline = ["-" * len(header) for header in headers]
    return "\n".join([line(headers), line(underline), *map(line, rows)])
