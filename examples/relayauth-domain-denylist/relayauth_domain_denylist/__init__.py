"""A salmon-relayauth plugin: refuse relay to recipient domains on a deny list.

Configured in the relay's TOML file::

    [plugins.domain_denylist]
    domains = ["gmail.com", "*.example.net"]     # exact domains and *.wildcards
    connectors = ["Anonymous Relay"]              # optional: only on these connectors (default: all)
    reply = "550 5.7.1 Recipient domain not allowed from this relay"   # optional

A wildcard ``*.example.net`` matches ``example.net`` itself and every name under it. Every domain
a recipient could be routed to is checked (``user%gmail.com@contoso.com`` hides ``gmail.com``).
The plugin only ever refuses: for any other recipient it has no opinion, so the default relay
check still decides, and a host that may not relay still may not. Without a
``[plugins.domain_denylist]`` table the plugin does nothing.

The module itself is the plugin, published through the entry point ``domain_denylist`` of the
group ``salmon_relayauth``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from salmon_relayauth import ConfigProblem, Decision, MailPath, RelayConfig, SessionState, Severity, hookimpl

__all__ = ["DEFAULT_REPLY", "PLUGIN_NAME", "DenyList", "read_settings", "relayauth_check_rcpt", "relayauth_validate_config"]

PLUGIN_NAME = "domain_denylist"
"""The entry-point name: the key of the settings table and the ``source`` of every decision."""

_DEFAULT_REFUSAL = Decision(550, "5.7.1", "Recipient domain not allowed from this relay", source=PLUGIN_NAME)
DEFAULT_REPLY = _DEFAULT_REFUSAL.render()

_SECTION = f"[plugins.{PLUGIN_NAME}]"
_KEYS = ("domains", "connectors", "reply")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# code, optional enhanced status, text (printable ASCII that does not itself start like a status)
_REPLY = re.compile(r"(?P<code>[45][0-5][0-9])(?: (?P<status>[0-9]\.[0-9]{1,3}\.[0-9]{1,3}))? (?P<text>(?![0-9]\.)[!-~][ -~]*)")


@dataclass(frozen=True, slots=True)
class DenyList:
    """The validated settings.

    :param exact: domains refused as named.
    :param wildcards: the part after ``*.`` of each wildcard entry.
    :param connectors: case-folded names of the connectors the list applies on; None for all.
    :param refusal: the reply a denied recipient gets (``reason`` is filled in per recipient).
    """

    exact: frozenset[str]
    wildcards: frozenset[str]
    connectors: frozenset[str] | None
    refusal: Decision

    def applies_on(self, connector_name: str) -> bool:
        """Whether the list is enforced on the connector of that name (names are case-insensitive)."""
        return self.connectors is None or connector_name.casefold() in self.connectors

    def match(self, domain: str) -> str | None:
        """The deny-list entry that matches ``domain`` (lower-case), or None."""
        if domain in self.exact:
            return domain
        candidate = domain
        while True:
            if candidate in self.wildcards:
                return f"*.{candidate}"
            _, dot, candidate = candidate.partition(".")
            if not dot:
                return None


@dataclass(frozen=True, slots=True)
class _Compiled:
    config: RelayConfig  # kept so the id() used as cache key cannot be reused while cached
    denylist: DenyList | None
    problems: tuple[ConfigProblem, ...]


_cache: dict[int, _Compiled] = {}
_CACHE_SIZE = 8


def _compiled(config: RelayConfig) -> _Compiled:
    """``read_settings`` once per configuration, not once per recipient."""
    entry = _cache.get(id(config))
    if entry is None or entry.config is not config:
        denylist, problems = read_settings(config)
        entry = _Compiled(config, denylist, tuple(problems))
        if len(_cache) >= _CACHE_SIZE:
            _cache.clear()
        _cache[id(config)] = entry
    return entry


def read_settings(config: RelayConfig) -> tuple[DenyList | None, list[ConfigProblem]]:
    """Read ``[plugins.domain_denylist]`` of ``config``.

    :return: the deny list (None when the table is absent or has errors) and every problem found.
    """
    table = config.plugins.options.get(PLUGIN_NAME)
    if table is None:
        return None, []
    problems: list[ConfigProblem] = []

    def problem(field: str, message: str, severity: Severity = Severity.ERROR) -> None:
        problems.append(ConfigProblem(config.source, _SECTION, field, message, severity))

    for key in table:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            shown = str(key) if str(key).isprintable() else ascii(key)  # a key must not forge output lines
            problem(shown, "unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if "domains" not in table:
        problem("domains", "is required: list the recipient domains to refuse")
    domains = _strings(table.get("domains", []), "domains", problem)
    exact: set[str] = set()
    wildcards: set[str] = set()
    for index, entry in domains:
        name = entry.lower()
        wildcard = name.startswith("*.")
        message = _domain_problem(name[2:] if wildcard else name)
        if message:
            problem(f"domains[{index}]", f"{entry!r} {message}")
        (wildcards if wildcard else exact).add(name[2:] if wildcard else name)
    if table.get("domains") == []:
        problem("domains", "is empty: the plugin refuses nothing", Severity.WARNING)

    connectors: frozenset[str] | None = None
    if "connectors" in table:
        names = _strings(table["connectors"], "connectors", problem)
        known = {connector.name.casefold(): connector.name for connector in config.connectors}
        for index, name in names:
            if name.casefold() not in known:
                close = difflib.get_close_matches(name, list(known.values()), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problem(f"connectors[{index}]", f"no connector is named {name!r}{hint}")
        if table["connectors"] == []:
            problem("connectors", "is empty: leave the key out to apply on every connector")
        connectors = frozenset(name.casefold() for _, name in names)

    refusal = _DEFAULT_REFUSAL
    if "reply" in table:
        raw = table["reply"]
        parsed = _parse_reply(raw) if isinstance(raw, str) else None
        if parsed is None:
            problem("reply", f"{raw!r} is not a 4xx or 5xx SMTP reply line such as {DEFAULT_REPLY!r}")
        else:
            refusal = parsed

    if any(p.severity is Severity.ERROR for p in problems):
        return None, problems
    return DenyList(frozenset(exact), frozenset(wildcards), connectors, refusal), problems


def _strings(value: object, key: str, problem: Callable[[str, str], None]) -> list[tuple[int, str]]:
    """The strings of an array, with their positions; a problem for anything else."""
    if not isinstance(value, list | tuple):
        problem(key, f"must be an array of strings, not {value!r}")
        return []
    items = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            items.append((index, item))
        else:
            problem(f"{key}[{index}]", f"{item!r} is not a string")
    return items


def _domain_problem(name: str) -> str:
    """Why ``name`` (lower-case, without ``*.``) is not a domain name, or ``""``."""
    if not name.isascii():
        return "is not an ASCII domain name (write an internationalised name as its xn-- A-label)"
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "is not a domain name (letters, digits and hyphens in dot-separated labels; '*.' only at the start)"
    if labels[-1].isdigit():
        return "is an IP address, not a domain name"
    return ""


def _parse_reply(line: str) -> Decision | None:
    """``550 5.7.1 text`` (enhanced status optional, of the same class as the code) as a decision."""
    found = _REPLY.fullmatch(line)
    if found is None:
        return None
    status = found["status"] or ""
    if status and status[0] != found["code"][0]:
        return None
    return Decision(int(found["code"]), status, found["text"], source=PLUGIN_NAME)


@hookimpl
def relayauth_validate_config(config: RelayConfig) -> list[ConfigProblem]:
    """Report every problem in ``[plugins.domain_denylist]``, each naming the key."""
    return list(_compiled(config).problems)


@hookimpl
def relayauth_check_rcpt(config: RelayConfig, session: SessionState, recipient: MailPath) -> Decision | None:
    """Refuse a recipient any of whose routing domains is on the deny list; no opinion otherwise."""
    compiled = _compiled(config)
    denylist = compiled.denylist
    if denylist is None:
        if not compiled.problems:
            return None  # no settings table: nothing to enforce
        # settings that never went through validation (a RelayPolicy built by hand): fail closed
        return Decision(451, "4.3.5", "System incorrectly configured", "; ".join(map(str, compiled.problems)), PLUGIN_NAME)
    if not denylist.applies_on(session.connector.name):
        return None
    for domain in recipient.routing_domains:
        entry = denylist.match(domain)
        if entry is not None:
            refusal = denylist.refusal
            reason = (
                f"recipient domain {domain} of {recipient.address} matches deny-list entry {entry!r} "
                f"on connector {session.connector.name!r}"
            )
            return Decision(refusal.code, refusal.status, refusal.text, reason, PLUGIN_NAME)
    return None
