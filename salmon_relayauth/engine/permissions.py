"""Permission groups, grants and the fold that turns them into a session's effective rights.

Reference §2 (groups and their principals), §10.2/§10.4 (an explicit deny beats any allow; group
grants act as allows; nothing granted means not granted). The fold is pure and order-independent:
the same set of grants always gives the same rights, whatever order plugins returned them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..model.connector import Connector
from ..model.rights import EffectiveRights, Grant, RightTrace
from ..model.enums import PermissionGroup as G
from ..model.enums import Principal as P
from ..model.enums import Right as R

__all__ = ["GROUP_GRANTS", "connector_grants", "fold_grants"]

_EXTERNALLY_SECURED_RIGHTS = frozenset(
    {
        R.ACCEPT_HEADERS_ROUTING,
        R.BYPASS_ANTI_SPAM,
        R.BYPASS_MESSAGE_SIZE_LIMIT,
        R.SMTP_ACCEPT_ANY_RECIPIENT,
        R.SMTP_ACCEPT_ANY_SENDER,
        R.SMTP_ACCEPT_AUTHENTICATION_FLAG,
        R.SMTP_ACCEPT_AUTHORITATIVE_DOMAIN_SENDER,
        R.SMTP_ACCEPT_EXCH50,
        R.SMTP_SUBMIT,
    }
)
_EXCHANGE_SERVER_RIGHTS = _EXTERNALLY_SECURED_RIGHTS | {
    R.ACCEPT_HEADERS_FOREST,
    R.ACCEPT_HEADERS_ORGANIZATION,
    R.SMTP_ACCEPT_XSHADOW,
    R.SMTP_ACCEPT_XPROXYFROM,
    R.SMTP_ACCEPT_XSESSIONPARAMS,
    R.SMTP_ACCEPT_XATTR,
    R.SMTP_ACCEPT_XSYSPROBE,
}

# Permission group -> principal -> rights, exactly as the table of reference §2.
GROUP_GRANTS: Mapping[G, Mapping[P, frozenset[R]]] = {
    G.ANONYMOUS_USERS: {
        P.ANONYMOUS_LOGON: frozenset(
            {
                R.ACCEPT_HEADERS_ROUTING,
                R.SMTP_ACCEPT_ANY_SENDER,
                R.SMTP_ACCEPT_AUTHORITATIVE_DOMAIN_SENDER,
                R.SMTP_SUBMIT,
            }
        )
    },
    G.EXCHANGE_USERS: {
        P.AUTHENTICATED_USERS: frozenset(
            {R.ACCEPT_HEADERS_ROUTING, R.BYPASS_ANTI_SPAM, R.SMTP_ACCEPT_ANY_RECIPIENT, R.SMTP_SUBMIT}
        )
    },
    G.EXCHANGE_SERVERS: {
        P.EXCHANGE_SERVERS: _EXCHANGE_SERVER_RIGHTS,
        P.EDGE_TRANSPORT_SERVERS: _EXCHANGE_SERVER_RIGHTS,
        P.HUB_TRANSPORT_SERVERS: _EXCHANGE_SERVER_RIGHTS,
        P.EXTERNALLY_SECURED_SERVERS: _EXTERNALLY_SECURED_RIGHTS,
    },
    G.EXCHANGE_LEGACY_SERVERS: {P.EXCHANGE_LEGACY_INTEROP: _EXTERNALLY_SECURED_RIGHTS},
    G.PARTNERS: {P.PARTNER_SERVERS: frozenset({R.ACCEPT_HEADERS_ROUTING, R.SMTP_SUBMIT})},
    G.CUSTOM: {},
    G.NONE: {},
}


def connector_grants(connector: Connector) -> list[Grant]:
    """The grants a connector's configuration makes: its permission groups and explicit entries."""
    grants = [
        Grant(principal.value, right, False, f"permission group {group.value}")
        for group in sorted(connector.permission_groups, key=lambda g: g.value)
        for principal, rights in GROUP_GRANTS[group].items()
        for right in sorted(rights, key=lambda r: r.value)
    ]
    for number, entry in enumerate(connector.permissions, start=1):
        kind = "deny" if entry.deny else "allow"
        for right in sorted(entry.extended_rights, key=lambda r: r.value):
            grants.append(Grant(entry.user, right, entry.deny, f"permission entry {number} ({kind} {entry.user})"))
    return grants


def fold_grants(grants: Iterable[Grant], principals: Iterable[str]) -> EffectiveRights:
    """Effective rights of a session running as ``principals``: a deny wins, else any allow grants.

    Principals compare case-insensitively (Windows account names do).
    """
    session = {principal.casefold() for principal in principals}
    allowed: dict[R, list[Grant]] = {}
    denied: dict[R, list[Grant]] = {}
    for grant in grants:
        if grant.principal.casefold() in session:
            (denied if grant.deny else allowed).setdefault(grant.right, []).append(grant)
    traces = []
    for right in R:
        allow = tuple(sorted(allowed.get(right, ()), key=_grant_order))
        deny = tuple(sorted(denied.get(right, ()), key=_grant_order))
        traces.append(RightTrace(right, bool(allow) and not deny, allow, deny))
    return EffectiveRights(frozenset(trace.right for trace in traces if trace.granted), tuple(traces))


def _grant_order(grant: Grant) -> tuple[str, str]:
    return grant.origin, grant.principal
