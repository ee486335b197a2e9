"""Strict parser for the path argument of ``MAIL FROM:`` and ``RCPT TO:`` (RFC 5321 §4.1.2).

The relay treats a recipient as local only if *every* domain it could be routed to is an accepted
domain, so this parser must report every such domain (``MailPath.routing_domains``) and refuse the
forms whose destination cannot be stated with certainty. Decisions, one a line:

- Angle brackets are optional (``MAIL FROM:chris@contoso.com`` as typed over telnet); spaces around the path are ignored.
- An unbalanced ``<`` or ``>`` (one without the other at the ends of the path) is refused.
- ``<>`` is the null path: accepted only with ``allow_null=True`` (MAIL FROM), refused for RCPT TO; its ``routing_domains`` is empty.
- Source route ``<@a.example,@b.example:user@dom>``: accepted and ignored (RFC 5321 §4.1.1.3, App. C): dropped, ``route_dropped`` set, only ``user@dom`` is judged and forwarded.
- A malformed source route (missing ``:``, ``@``, empty or invalid hop, address literal as hop) is refused.
- Percent hack ``u%b%c@dom``: accepted, every hop (``c``, then ``b``) is added to ``routing_domains``.
- Bang path ``x!y!u@dom``: accepted, every hop (``x``, then ``y``) is added to ``routing_domains``.
- A hidden hop that is not a valid domain name, an empty user beside ``%``/``!``, or ``%`` mixed with ``!`` (MTAs disagree on precedence) is refused.
- A bang path without ``@`` (``dom!user``) is refused: there is no domain.
- Quoted local part (RFC 5321 Quoted-string, backslash escapes): accepted and forwarded as written.
- A quoted local part whose content contains ``@``, ``%`` or ``!``, or is empty, is refused outright.
- An unquoted local part must be an RFC 5321 Dot-string (atext atoms; no leading, trailing or double dot).
- A control character (0x00-0x1F, 0x7F, so also CR, LF and TAB) anywhere is refused.
- A non-ASCII character anywhere is refused (SMTPUTF8 is not offered).
- More than one unquoted ``@``, an empty local part or an empty domain is refused.
- Domain: LDH labels of 1-63 characters without leading/trailing hyphen, at most 253 characters; lower-cased.
- One trailing dot is removed from the domain (``contoso.com.`` is ``contoso.com``); two are refused.
- A domain whose last label is all digits or ``0x`` hex (``192.0.2.1``, ``127.1``, ``0x7f000001``: inet_aton would read an IP) is refused.
- Underscores and any other non-LDH character in a domain are refused.
- A-labels (``xn--...``) are ordinary LDH labels: accepted and not decoded (non-ASCII input never gets here).
- IP literals ``[192.0.2.1]`` and ``[IPv6:2001:db8::1]``: accepted with ``is_ip_literal=True``; the caller never treats them as accepted domains.
- IPv4 literal octets with leading zeros (octal on some stacks), other General-address-literal tags and malformed literals are refused.
- IPv6 literals follow the RFC 5321 grammar exactly (``::`` stands for at least two groups); the tag is rendered ``IPv6:``, hex lower-cased.
- Local part at most 64 octets as written; whole path at most 256 octets counted with its angle brackets and route (RFC 5321 §4.5.3.1).
- ``<Postmaster>`` without a domain (RFC 5321 §4.1.1.3) is refused here; a caller that wants it must special-case it before parsing.

No I/O, no DNS: the parser only states what the text says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["AddressSyntaxError", "MailPath", "parse_path"]

MAX_LOCAL_PART = 64
MAX_PATH = 256
MAX_DOMAIN = 253
MAX_LABEL = 63

_SHOWN_LIMIT = 200  # characters of the path shown in a message, so that it fits an SMTP reply line

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_SNUM = re.compile(r"0|[1-9][0-9]{0,2}")
_HEX16 = re.compile(r"[0-9A-Fa-f]{1,4}")


class AddressSyntaxError(ValueError):
    """A MAIL FROM / RCPT TO path that is refused; ``str()`` names the path and says why.

    The path is shown with ``ascii()`` (``repr`` with non-ASCII escaped) and cut to about 200
    characters, so ``str()`` is printable ASCII of bounded length, fit for a 501 reply line.
    ``reason`` alone (also ASCII, at most a 63-character label of the client's text) omits the path.
    """

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(text, reason)
        self.text = text
        self.reason = reason

    def __str__(self) -> str:
        shown = ascii(self.text)
        if len(shown) > _SHOWN_LIMIT:
            cut = self.text[:_SHOWN_LIMIT]
            while len(ascii(cut)) > _SHOWN_LIMIT:
                cut = cut[:-8]
            shown = f"{ascii(cut)}... ({len(self.text)} characters)"
        return f"refused path {shown}: {self.reason}"


@dataclass(frozen=True, slots=True)
class MailPath:
    """A parsed reverse-path or forward-path.

    ``routing_domains`` is every destination the address could be routed to: ``domain`` first, then
    the hops hidden in the local part in the order a downstream MTA would visit them. Treat the
    address as local only if it is not null, not an IP literal and every entry is accepted.
    """

    local_part: str
    domain: str
    is_null: bool
    is_ip_literal: bool
    route_dropped: bool
    routing_domains: tuple[str, ...]

    @property
    def address(self) -> str:
        """``local@domain`` as it is forwarded downstream (never with the source route); ``""`` if null."""
        return "" if self.is_null else f"{self.local_part}@{self.domain}"


def parse_path(text: str, *, allow_null: bool) -> MailPath:
    """Parse the argument of MAIL FROM:/RCPT TO: after the colon, e.g. '<chris@contoso.com>' or 'chris@contoso.com' (bare, as telnet users type), possibly followed by ESMTP parameters which the caller has already split off.

    ``allow_null`` permits ``<>`` (pass True for MAIL FROM, False for RCPT TO). Raises
    ``AddressSyntaxError`` for anything refused; see the module docstring for the decisions.
    """
    for char in text:
        if not " " <= char <= "~":
            if char > "\x7f":
                raise AddressSyntaxError(text, f"non-ASCII character U+{ord(char):04X}")
            raise AddressSyntaxError(text, f"control character {char!r}")
    path = text.strip(" ")
    if not path:
        raise AddressSyntaxError(text, "empty path")
    bracketed = path.startswith("<")
    if bracketed != path.endswith(">") or path in ("<", ">"):
        raise AddressSyntaxError(text, "unbalanced angle brackets")
    inner = path[1:-1] if bracketed else path
    if len(inner) + 2 > MAX_PATH:
        raise AddressSyntaxError(text, f"path longer than {MAX_PATH} octets")
    if not inner:
        if not allow_null:
            raise AddressSyntaxError(text, "null path <> is not allowed here")
        return MailPath("", "", is_null=True, is_ip_literal=False, route_dropped=False, routing_domains=())

    route_dropped = inner.startswith("@")
    mailbox = _drop_route(inner, text) if route_dropped else inner

    hops: tuple[str, ...] = ()
    if mailbox.startswith('"'):
        local_part, rest = _split_quoted(mailbox, text)
        if len(local_part) > MAX_LOCAL_PART:
            raise AddressSyntaxError(text, f"local part longer than {MAX_LOCAL_PART} octets")
        if not rest.startswith("@"):
            raise AddressSyntaxError(text, "quoted local part not followed by '@domain'")
        domain_text = rest[1:]
    else:
        local_part, at, domain_text = mailbox.partition("@")
        if not at:
            raise AddressSyntaxError(text, "no '@domain'")
        if not local_part:
            raise AddressSyntaxError(text, "empty local part")
        if len(local_part) > MAX_LOCAL_PART:
            raise AddressSyntaxError(text, f"local part longer than {MAX_LOCAL_PART} octets")
        if not _DOT_STRING.fullmatch(local_part):
            raise AddressSyntaxError(text, "unquoted local part is not a dot-atom")
        hops = _hidden_hops(local_part, text)
    if "@" in domain_text:
        raise AddressSyntaxError(text, "more than one unquoted '@'")

    is_ip_literal = domain_text.startswith("[")
    if is_ip_literal:
        domain = _address_literal(domain_text, text)
    else:
        domain = _domain_name(domain_text, text, "domain")
    routing = tuple(dict.fromkeys((domain, *hops)))
    return MailPath(local_part, domain, False, is_ip_literal, route_dropped, routing)


def _drop_route(inner: str, text: str) -> str:
    """Validate ``@a,@b:`` (RFC 5321 A-d-l) and return what follows the colon."""
    route, colon, mailbox = inner.partition(":")
    if not colon:
        raise AddressSyntaxError(text, "source route without ':'")
    for hop in route.split(","):
        if not hop.startswith("@"):
            raise AddressSyntaxError(text, "source route hop does not start with '@'")
        _domain_name(hop[1:], text, "source route domain")
    return mailbox


def _split_quoted(mailbox: str, text: str) -> tuple[str, str]:
    """Split ``"..."rest`` into the quoted local part as written and ``rest``; check its content."""
    content: list[str] = []
    index = 1
    while True:
        if index >= len(mailbox):
            raise AddressSyntaxError(text, "unterminated quoted local part")
        char = mailbox[index]
        if char == '"':
            break
        if char == "\\":
            if index + 1 >= len(mailbox):
                raise AddressSyntaxError(text, "unterminated quoted local part")
            content.append(mailbox[index + 1])
            index += 2
        else:
            content.append(char)
            index += 1
    if not content:
        raise AddressSyntaxError(text, "empty quoted local part")
    for char in "@%!":
        if char in content:
            raise AddressSyntaxError(text, f"quoted local part contains {char!r}")
    return mailbox[: index + 1], mailbox[index + 1 :]


def _hidden_hops(local_part: str, text: str) -> tuple[str, ...]:
    """Domains hidden in an unquoted local part by the percent hack or a bang path, in visiting order."""
    percent, bang = "%" in local_part, "!" in local_part
    if not (percent or bang):
        return ()
    if percent and bang:
        raise AddressSyntaxError(text, "local part mixes '%' and '!' routing")
    if percent:
        user, *hops = local_part.split("%")
        hops.reverse()  # the rightmost '%' names the next hop
    else:
        *hops, user = local_part.split("!")
    if not user:
        raise AddressSyntaxError(text, "empty user in a '%' or '!' routed local part")
    return tuple(_domain_name(hop, text, "hidden routing domain") for hop in hops)


def _domain_name(raw: str, text: str, what: str) -> str:
    """Validate an RFC 1035 LDH domain; return it lower-cased without one trailing dot."""
    name = (raw[:-1] if raw.endswith(".") else raw).lower()
    if not name:
        raise AddressSyntaxError(text, f"empty {what}")
    if len(name) > MAX_DOMAIN:
        raise AddressSyntaxError(text, f"{what} longer than {MAX_DOMAIN} characters")
    labels = name.split(".")
    for label in labels:
        if not label:
            raise AddressSyntaxError(text, f"empty label in {what}")
        if len(label) > MAX_LABEL:
            raise AddressSyntaxError(text, f"label longer than {MAX_LABEL} characters in {what}")
        if not _LABEL.fullmatch(label):
            raise AddressSyntaxError(text, f"invalid label {label!r} in {what}")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise AddressSyntaxError(text, f"{what} is numeric (an IP address must be a [literal])")
    return name


def _address_literal(raw: str, text: str) -> str:
    """Validate ``[IPv4]`` or ``[IPv6:...]``; return it in canonical text form."""
    body = raw[1:-1] if raw.endswith("]") else None
    if body is not None and _is_ipv4(body):
        return f"[{body}]"
    if body is not None:
        tag, colon, address = body.partition(":")
        if colon and tag.lower() == "ipv6" and _is_ipv6(address):
            return f"[IPv6:{address.lower()}]"
    raise AddressSyntaxError(text, "malformed address literal")


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(_SNUM.fullmatch(part) and int(part) <= 255 for part in parts)


def _is_ipv6(text: str) -> bool:
    """RFC 5321 IPv6-addr: full (8 groups) or with one ``::`` and at most 6 groups; an IPv4 tail counts as 2."""
    if "." in text:
        head, colon, tail = text.rpartition(":")
        if not colon or not _is_ipv4(tail):
            return False
        text = f"{head}:0:0"
    if "::" in text:
        if text.count("::") > 1:
            return False
        left, right = text.split("::")
        groups = (left.split(":") if left else []) + (right.split(":") if right else [])
        if len(groups) > 6:
            return False
    else:
        groups = text.split(":")
        if len(groups) != 8:
            return False
    return all(_HEX16.fullmatch(group) for group in groups)
