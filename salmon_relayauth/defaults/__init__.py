"""The built-in behaviour, registered as ordinary named plugins so it can be blocked or replaced."""

from __future__ import annotations

from .content import ContentLimits, HeaderFirewall
from .open_relay import OpenRelayCheck
from .permissions import ConnectorGrants, SessionPrincipals
from .relay import RecipientLimit, RelayCheck, SenderCheck
from .selection import MostSpecificSelection
from .throttling import ConnectionLimits, MessageRate
from .users_file import UsersFile

__all__ = ["DEFAULT_PLUGINS"]

# name -> plugin class; a plugin manager makes its own instances. The names are what
# ``[plugins] disabled`` and ``PluginManager.set_blocked`` take.
DEFAULT_PLUGINS: dict[str, type] = {
    plugin.name: plugin
    for plugin in (
        MostSpecificSelection,
        SessionPrincipals,
        ConnectorGrants,
        SenderCheck,
        RelayCheck,
        RecipientLimit,
        ContentLimits,
        HeaderFirewall,
        OpenRelayCheck,
        UsersFile,
        MessageRate,
        ConnectionLimits,
    )
}
