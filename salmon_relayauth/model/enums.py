"""Exchange's named values. Each member's value is the spelling Exchange uses, so configs read like cmdlets.

Every enum parses case-insensitively through :func:`parse_enum`, which also accepts the documented
alias spellings (``Anonymous`` for ``AnonymousUsers``, ``Partner`` for ``Partners``).
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

__all__ = [
    "AcceptedDomainType",
    "AuthMechanism",
    "BackendFailure",
    "MessageRateSource",
    "PermissionGroup",
    "Principal",
    "ProtocolLoggingLevel",
    "Right",
    "SizeMode",
    "TransportRole",
    "Usage",
    "parse_enum",
]


class Right(Enum):
    """Extended rights on a receive connector (reference §2.1, §3)."""

    SMTP_SUBMIT = "ms-Exch-SMTP-Submit"
    SMTP_ACCEPT_ANY_RECIPIENT = "ms-Exch-SMTP-Accept-Any-Recipient"
    SMTP_ACCEPT_ANY_SENDER = "ms-Exch-SMTP-Accept-Any-Sender"
    SMTP_ACCEPT_AUTHORITATIVE_DOMAIN_SENDER = "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender"
    SMTP_ACCEPT_AUTHENTICATION_FLAG = "ms-Exch-SMTP-Accept-Authentication-Flag"
    SMTP_ACCEPT_EXCH50 = "ms-Exch-SMTP-Accept-Exch50"
    ACCEPT_HEADERS_ROUTING = "ms-Exch-Accept-Headers-Routing"
    ACCEPT_HEADERS_ORGANIZATION = "ms-Exch-Accept-Headers-Organization"
    ACCEPT_HEADERS_FOREST = "ms-Exch-Accept-Headers-Forest"
    BYPASS_ANTI_SPAM = "ms-Exch-Bypass-Anti-Spam"
    BYPASS_MESSAGE_SIZE_LIMIT = "ms-Exch-Bypass-Message-Size-Limit"
    SMTP_ACCEPT_XSHADOW = "ms-Exch-SMTP-Accept-XShadow"
    SMTP_ACCEPT_XPROXYFROM = "ms-Exch-SMTP-Accept-XProxyFrom"
    SMTP_ACCEPT_XSESSIONPARAMS = "ms-Exch-SMTP-Accept-XSessionParams"
    SMTP_ACCEPT_XATTR = "ms-Exch-SMTP-Accept-Xattr"
    SMTP_ACCEPT_XSYSPROBE = "ms-Exch-SMTP-Accept-XSysProbe"


class PermissionGroup(Enum):
    """Permission groups (``-PermissionGroups``); a flags set in Exchange, a frozenset here."""

    NONE = "None"
    ANONYMOUS_USERS = "AnonymousUsers"
    EXCHANGE_USERS = "ExchangeUsers"
    EXCHANGE_SERVERS = "ExchangeServers"
    EXCHANGE_LEGACY_SERVERS = "ExchangeLegacyServers"
    PARTNERS = "Partners"
    CUSTOM = "Custom"


class Principal(Enum):
    """Well-known security principals a session can run as (reference §2, §4.3)."""

    ANONYMOUS_LOGON = "NT AUTHORITY\\ANONYMOUS LOGON"
    AUTHENTICATED_USERS = "NT AUTHORITY\\Authenticated Users"
    EXCHANGE_SERVERS = "Exchange Servers"
    EDGE_TRANSPORT_SERVERS = "MS Exchange\\Edge Transport Servers"
    HUB_TRANSPORT_SERVERS = "MS Exchange\\Hub Transport Servers"
    EXTERNALLY_SECURED_SERVERS = "MS Exchange\\Externally Secured Servers"
    EXCHANGE_LEGACY_INTEROP = "ExchangeLegacyInterop"
    PARTNER_SERVERS = "MS Exchange\\Partner Servers"


class AuthMechanism(Enum):
    """Authentication mechanisms (``-AuthMechanism``), validated by the rules of reference §4.2."""

    NONE = "None"
    TLS = "Tls"
    INTEGRATED = "Integrated"
    BASIC_AUTH = "BasicAuth"
    BASIC_AUTH_REQUIRE_TLS = "BasicAuthRequireTLS"
    EXCHANGE_SERVER = "ExchangeServer"
    EXTERNAL_AUTHORITATIVE = "ExternalAuthoritative"


class Usage(Enum):
    """Usage types: they only choose defaults when a connector is created (reference §5)."""

    CLIENT = "Client"
    CUSTOM = "Custom"
    INTERNAL = "Internal"
    INTERNET = "Internet"
    PARTNER = "Partner"


class TransportRole(Enum):
    FRONTEND_TRANSPORT = "FrontendTransport"
    HUB_TRANSPORT = "HubTransport"


class MessageRateSource(Enum):
    """What "one source" of messages is for ``message_rate_limit``.

    ``User`` is the authenticated user, or the envelope sender of an anonymous session (both readings
    the cmdlet reference gives); ``All`` is IPAddress and User together. ``Sender`` (the envelope
    sender, always) is not an Exchange value.
    """

    NONE = "None"
    USER = "User"
    IP_ADDRESS = "IPAddress"
    ALL = "All"
    SENDER = "Sender"


class BackendFailure(Enum):
    """What a connector does while the shared throttling store (Redis) cannot be reached."""

    LOCAL_LIMITS = "LocalLimits"  # keep serving, counting in this process only (fail open to local limits)
    REFUSE = "Refuse"  # refuse new messages with a temporary 451 (fail closed)


class SizeMode(Enum):
    """How ``SIZE`` is advertised in the EHLO reply."""

    ENABLED = "Enabled"
    DISABLED = "Disabled"
    ENABLED_WITHOUT_VALUE = "EnabledWithoutValue"


class ProtocolLoggingLevel(Enum):
    NONE = "None"
    VERBOSE = "Verbose"


class AcceptedDomainType(Enum):
    AUTHORITATIVE = "Authoritative"
    INTERNAL_RELAY = "InternalRelay"
    EXTERNAL_RELAY = "ExternalRelay"


_ALIASES: dict[type[Enum], dict[str, str]] = {
    PermissionGroup: {"anonymous": "AnonymousUsers", "partner": "Partners"},
    # RC13 spells the EXCH50 right without "SMTP"; accept it.
    Right: {"ms-exch-accept-exch50": "ms-Exch-SMTP-Accept-Exch50"},
    AcceptedDomainType: {"internal relay": "InternalRelay", "external relay": "ExternalRelay"},
}

E = TypeVar("E", bound=Enum)


def parse_enum(kind: type[E], value: object) -> E:
    """Parse an Exchange spelling case-insensitively; the error lists the valid values."""
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        wanted = value.strip().lower()
        wanted = _ALIASES.get(kind, {}).get(wanted, wanted).lower()
        for member in kind:
            if str(member.value).lower() == wanted:
                return member
    valid = ", ".join(str(member.value) for member in kind)
    raise ValueError(f"{value!r} is not one of: {valid}")
