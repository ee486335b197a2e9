"""Editing a configuration file's TOML document in place, as the Exchange cmdlets edit a connector.

Pure functions over a :mod:`tomlkit` document, so every comment and the layout of the untouched
parts survive. A changed value keeps its line and its inline comment; a new key goes after the last
key of its table. Comment lines are taken to belong to what follows them: the block that starts at
the blank line above a ``[[connectors]]`` header describes that connector, so it leaves with the
connector, and a new table is inserted before the comments that introduce the next section.

Nothing here validates a whole configuration: callers render the document and load the text.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import AoT, Array, Comment, InlineTable, Item, Key, Null, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from ..model.addresses import AddressError
from ..model.connector import Connector
from ..model.enums import Right, parse_enum
from .fields import CONNECTOR_FIELDS, FieldError
from .loader import canonical_principal

__all__ = [
    "EditError",
    "UnknownConnector",
    "add_connector",
    "add_permission",
    "connector_names",
    "explicit_rights",
    "field_value",
    "find_connector",
    "parse_document",
    "remove_connector",
    "remove_field",
    "remove_permission",
    "render",
    "set_field",
]

_HINTS = typing.get_type_hints(Connector)
_WHOLE_NUMBER = re.compile(r"^[+-]?\d+$")
_Body = list[tuple[Key | None, Item]]


class EditError(ValueError):
    """An edit that cannot be made to this document; the message says why."""


class UnknownConnector(EditError):
    """No connector has the given name; the message lists the names there are."""

    def __init__(self, identity: str, names: Sequence[str]) -> None:
        known = ", ".join(repr(name) for name in names) or "none"
        super().__init__(f"no connector named {identity!r}; the connectors are: {known}")
        self.identity = identity
        self.names = tuple(names)


# -- document, connectors, fields ---------------------------------------------------------------


def parse_document(text: str) -> TOMLDocument:
    """Parse TOML text for editing; raise :class:`EditError` if it is not TOML."""
    try:
        return tomlkit.parse(text)
    except TOMLKitError as error:
        raise EditError(f"invalid TOML: {error}") from None


def render(document: TOMLDocument) -> str:
    """The document as text, byte for byte as parsed except where it was edited."""
    return tomlkit.dumps(document)


def _connectors(document: TOMLDocument) -> list[Table | InlineTable]:
    value = document.get("connectors")
    if isinstance(value, (AoT, Array)):
        return [table for table in value if isinstance(table, (Table, InlineTable))]
    return []


def connector_names(document: TOMLDocument) -> list[str]:
    """The names of the connectors, in file order."""
    return [str(table.get("name", "")) for table in _connectors(document)]


def find_connector(document: TOMLDocument, identity: str) -> Table | InlineTable:
    """The connector table named ``identity`` (case-insensitive, as Exchange compares names)."""
    wanted = identity.strip().casefold()
    for table in _connectors(document):
        if str(table.get("name", "")).casefold() == wanted:
            return table
    raise UnknownConnector(identity, connector_names(document))


def field_value(key: str, text: str) -> Any:
    """The TOML value for a connector field given as cmdlet text (``-RemoteIPRanges a,b``).

    Lists are comma-separated, enum members take their canonical spelling, booleans accept
    ``true``/``$true``, and the result is checked with the field's own parser, so a bad value fails
    here with a message naming it.
    """
    if key not in CONNECTOR_FIELDS:
        raise EditError(f"{key!r} is not a connector field")
    value = _toml_spelling(_HINTS[key], text)
    try:
        CONNECTOR_FIELDS[key](value)
    except FieldError as error:
        where = "" if error.index is None else f"item {error.index + 1}: "
        raise ValueError(f"{where}{error}") from None
    except AddressError as error:
        raise ValueError(str(error)) from None
    return value


def _toml_spelling(hint: Any, text: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (tuple, frozenset):
        items = [part.strip() for part in text.split(",") if part.strip()]
        kind = typing.get_args(hint)[0]
        if isinstance(kind, type) and issubclass(kind, Enum):
            return list(dict.fromkeys(parse_enum(kind, item).value for item in items))
        return items
    if hint is bool:
        return CONNECTOR_FIELDS["enabled"](text)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return parse_enum(hint, text).value
    if int in (hint, *typing.get_args(hint)):
        if _WHOLE_NUMBER.match(text.strip()):
            return int(text)
        if text.strip().casefold() == "unlimited":
            return "Unlimited"
    return text


def set_field(table: Table | InlineTable, key: str, value: Any) -> None:
    """Set ``key``: in place if present (keeping its inline comment), else after the table's last key."""
    if key in table or isinstance(table, InlineTable):
        table[key] = value
        return
    last = _last_key(table)
    if last is None:
        table.add(key, value)
    else:
        # tomlkit has no public "insert after"; appending would land after the comment lines
        # that introduce the next table, or after a [[connectors.permissions]] sub-table.
        table.value._insert_after(last, key, value)


def remove_field(table: Table | InlineTable, key: str) -> bool:
    """Remove ``key`` so the default applies again; False when it was not there."""
    if key not in table:
        return False
    del table[key]
    return True


def _last_key(table: Table) -> Key | None:
    found = None
    for key, item in table.value.body:
        if key is not None and not isinstance(item, (Table, AoT, Null)):
            found = key
    return found


def add_connector(document: TOMLDocument, name: str, values: Iterable[tuple[str, Any]]) -> None:
    """Append a ``[[connectors]]`` table with ``name`` and ``values`` (already in TOML spelling)."""
    fields = {"name": name, **dict(values)}
    existing = document.get("connectors")
    if isinstance(existing, Array):  # written as an inline array: stay inline
        inline = tomlkit.inline_table()
        inline.update(fields)
        existing.append(inline)
        return
    table = tomlkit.table()
    for key, value in fields.items():
        table.add(key, value)
    _append_element(document, "connectors", table)


def remove_connector(document: TOMLDocument, identity: str) -> str:
    """Remove the connector named ``identity`` with the comments above it; returns its name."""
    table = find_connector(document, identity)
    name = str(table["name"])
    index = next(i for i, candidate in enumerate(_connectors(document)) if candidate is table)
    _remove_element(document, "connectors", index)
    return name


# -- permission entries --------------------------------------------------------------------------


def _same_principal(left: str, right: str) -> bool:
    return canonical_principal(left).casefold() == canonical_principal(right).casefold()


def _rights_of(entry: Table | InlineTable) -> list[Right]:
    raw = entry.get("extended_rights", [])
    rights = []
    for item in [raw] if isinstance(raw, str) else list(raw):
        try:
            rights.append(parse_enum(Right, item))
        except ValueError:
            continue  # the loader reports it; an edit must not hide or invent rights
    return rights


def _entries(connector: Table | InlineTable, user: str, deny: bool) -> list[tuple[int, Table | InlineTable]]:
    value = connector.get("permissions")
    if not isinstance(value, (AoT, Array)):
        return []
    return [
        (index, entry)
        for index, entry in enumerate(value)
        if isinstance(entry, (Table, InlineTable))
        and isinstance(entry.get("user"), str)
        and _same_principal(str(entry["user"]), user)
        and bool(entry.get("deny", False)) is deny
    ]


def explicit_rights(connector: Table | InlineTable, user: str, deny: bool) -> set[Right]:
    """The rights the connector's explicit entries of ``user`` allow (or deny, with ``deny``)."""
    return {right for _, entry in _entries(connector, user, deny) for right in _rights_of(entry)}


def add_permission(connector: Table | InlineTable, user: str, rights: Sequence[Right], deny: bool = False) -> bool:
    """Add an allow (or deny) entry; returns True when merged into an existing entry of that user."""
    found = _entries(connector, user, deny)
    if found:
        entry = found[0][1]
        current = _rights_of(entry)
        extra = [right.value for right in dict.fromkeys(rights) if right not in current]
        raw = entry.get("extended_rights")
        if isinstance(raw, Array):
            for value in extra:
                raw.append(value)
        else:
            entry["extended_rights"] = [str(raw), *extra] if isinstance(raw, str) else extra
        return True
    if isinstance(connector, InlineTable) or isinstance(connector.get("permissions"), Array):
        inline = tomlkit.inline_table()
        inline.update(_entry_values(user, rights, deny))
        if "permissions" in connector:
            connector["permissions"].append(inline)
        else:
            connector["permissions"] = [inline]
        return False
    table = tomlkit.table()
    for key, value in _entry_values(user, rights, deny).items():
        table.add(key, value)
    _append_element(connector, "permissions", table)
    return False


def _entry_values(user: str, rights: Sequence[Right], deny: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "user": canonical_principal(user),
        "extended_rights": list(dict.fromkeys(right.value for right in rights)),
    }
    if deny:
        values["deny"] = True
    return values


def remove_permission(connector: Table | InlineTable, user: str, rights: Iterable[Right], deny: bool = False) -> set[Right]:
    """Remove ``rights`` from the explicit entries of ``user`` (and entries left empty).

    Returns the rights actually removed; rights granted by a permission group are not entries and
    are never touched here.
    """
    wanted = set(rights)
    removed: set[Right] = set()
    emptied = []
    for index, entry in _entries(connector, user, deny):
        current = _rights_of(entry)
        keep = [right for right in current if right not in wanted]
        removed |= set(current) - set(keep)
        if not keep:
            emptied.append(index)
        elif len(keep) < len(current):
            raw = entry["extended_rights"]
            if isinstance(raw, Array):
                for position in reversed(range(len(raw))):
                    if _is_one_of(str(raw[position]), wanted):
                        del raw[position]
            else:
                entry["extended_rights"] = [right.value for right in keep]
    for index in reversed(emptied):
        _remove_element(connector, "permissions", index)
    return removed


def _is_one_of(text: str, rights: set[Right]) -> bool:
    try:
        return parse_enum(Right, text) in rights
    except ValueError:
        return False


# -- tables of an array, with the comments that introduce them ---------------------------------------


def _container(owner: TOMLDocument | Table | InlineTable) -> Container:
    return owner if isinstance(owner, Container) else owner.value


def _key_index(body: _Body, name: str) -> int:
    return next(i for i, (key, item) in enumerate(body) if key is not None and key.key == name and not isinstance(item, Null))


def _deep_last(table: Table) -> Table:
    """The table whose body holds the last lines of ``table``'s text (its last sub-table, if any)."""
    for key, item in reversed(table.value.body):
        if isinstance(item, Null) or (isinstance(item, AoT) and not len(item)):
            continue
        if key is not None and isinstance(item, Table):
            return _deep_last(item)
        if key is not None and isinstance(item, AoT):
            return _deep_last(item[-1])
        return table
    return table


def _comment_run(body: _Body, end: int) -> list[int]:
    """Positions of the comment block that ends at ``end``, which introduces what follows it.

    The block starts at its first blank line; comment lines under a key with a blank line after
    them stay with that key. A block without any blank line is taken whole.
    """
    run: list[int] = []
    for index in range(end - 1, -1, -1):
        key, item = body[index]
        if isinstance(item, Null):
            continue
        if key is None and isinstance(item, (Whitespace, Comment)):
            run.append(index)
            continue
        break
    run.reverse()
    for position, index in enumerate(run):
        item = body[index][1]
        if isinstance(item, Whitespace) and "\n" in item.as_string():
            return run[position:]
    return run


def _detach(body: _Body, positions: list[int]) -> list[Item]:
    items = [body[index][1] for index in positions]
    for index in positions:
        body[index] = (None, Null())
    return items


def _attach(table: Table, items: list[Item]) -> None:
    for item in items:
        table.value.append(None, item)


def _prefix(body: _Body, index: int, text: str) -> None:
    """Put ``text`` just before the entry at ``index`` of ``body``."""
    key, item = body[index]
    if isinstance(item, AoT):
        item = item[0]
    if isinstance(item, Table) and item.is_super_table():
        inner = item.value.body
        first = next((i for i, (_, it) in enumerate(inner) if not isinstance(it, Null)), None)
        if first is not None:
            _prefix(inner, first, text)
            return
    if isinstance(item, Whitespace):
        body[index] = (key, Whitespace(text + item.as_string()))
    else:
        item.trivia.indent = text + item.trivia.indent


def _lead_block(owner: Container, name: str, array: AoT, index: int) -> tuple[_Body, list[int]]:
    """Where the comment block introducing element ``index`` of ``owner[name]`` lives."""
    if index > 0:
        body = _deep_last(array[index - 1]).value.body
        return body, _comment_run(body, len(body))
    body = owner.body
    key_at = _key_index(body, name)
    for _, item in reversed(body[:key_at]):
        if isinstance(item, Null):
            continue
        if isinstance(item, (Table, AoT)) and (not isinstance(item, AoT) or len(item)):
            before = _deep_last(item if isinstance(item, Table) else item[-1]).value.body
            return before, _comment_run(before, len(before))
        break
    return body, _comment_run(body, key_at)


def _append_element(owner: TOMLDocument | Table, name: str, table: Table) -> None:
    """Append ``table`` to the array of tables ``owner[name]``, before the comments that introduce
    whatever follows it in the file."""
    container = _container(owner)
    array = container.get(name)
    if isinstance(array, AoT) and len(array):
        anchor: Table | None = _deep_last(array[-1])
    elif isinstance(owner, Table):
        anchor = _deep_last(owner)
    else:
        anchor = None
    moved: list[Item] = []
    if anchor is not None:
        moved = _detach(anchor.value.body, _comment_run(anchor.value.body, len(anchor.value.body)))
        _end_line(anchor)
    table.trivia.indent = "\n"
    if isinstance(array, AoT):
        array.append(table)
    else:
        new_array = tomlkit.aot()
        new_array.append(table)
        container.append(name, new_array)
    _attach(_deep_last(table), moved)


def _remove_element(owner: TOMLDocument | Table | InlineTable, name: str, index: int) -> None:
    """Remove element ``index`` of ``owner[name]`` and the comments above it; the comments that
    introduce what follows it stay where they were."""
    container = _container(owner)
    array = container[name]
    if isinstance(array, Array):
        del array[index]
        if not len(array):
            del container[name]
        return
    lead_body, lead = _lead_block(container, name, array, index)
    last = _deep_last(array[index])
    moved = _detach(last.value.body, _comment_run(last.value.body, len(last.value.body)))
    text = "".join(item.as_string() for item in moved)
    _detach(lead_body, lead)
    del array[index]
    if index < len(array):
        _prefix_table(array[index], text or ("\n" if lead else ""))
        return
    if len(array):
        _attach(_deep_last(array[-1]), moved)
        return
    body = container.body
    key_at = _key_index(body, name)
    del container[name]
    following = next((i for i in range(key_at + 1, len(body)) if not isinstance(body[i][1], Null)), None)
    if following is None:
        for item in moved:
            container.append(None, item)
    elif text:
        _prefix(body, following, text)


def _end_line(table: Table) -> None:
    """Make sure the last line of ``table`` ends (a file may lack its final newline)."""
    for key, item in reversed(table.value.body):
        if isinstance(item, Null):
            continue
        if key is not None and not isinstance(item, (Table, AoT)) and "\n" not in item.trivia.trail:
            item.trivia.trail += "\n"
        return


def _prefix_table(table: Table, text: str) -> None:
    table.trivia.indent = text + table.trivia.indent
