"""The MAIL FROM / RCPT TO path parser: every address form the relay check must not be fooled by."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from salmon_relayauth.engine.smtp_address import AddressSyntaxError, MailPath, _domain_name, parse_path

PROPERTY = settings(max_examples=300, deadline=None)
ACCEPTED = frozenset({"contoso.com"})


def judged_local(path: MailPath, accepted: frozenset[str] = ACCEPTED) -> bool:
    """The caller's rule: local only if not null, not an IP literal and every routing domain accepted."""
    return (
        not path.is_null
        and not path.is_ip_literal
        and all(domain in accepted for domain in path.routing_domains)
    )


def refused(text: str, *, allow_null: bool = False, reason: str = "") -> AddressSyntaxError:
    with pytest.raises(AddressSyntaxError) as info:
        parse_path(text, allow_null=allow_null)
    error = info.value
    shown = ascii(text)
    assert (shown if len(shown) <= 200 else shown[1:100]) in str(error), str(error)
    assert reason in error.reason, error.reason
    assert error.text == text
    return error


# --------------------------------------------------------------------------- accepted forms

@pytest.mark.parametrize(
    ("text", "local", "domain", "routing", "address"),
    [
        # brackets optional, surrounding spaces tolerated
        ("<chris@contoso.com>", "chris", "contoso.com", ("contoso.com",), "chris@contoso.com"),
        ("chris@contoso.com", "chris", "contoso.com", ("contoso.com",), "chris@contoso.com"),
        ("  <chris@contoso.com>  ", "chris", "contoso.com", ("contoso.com",), "chris@contoso.com"),
        (" chris@contoso.com ", "chris", "contoso.com", ("contoso.com",), "chris@contoso.com"),
        # case and trailing dot: the local part keeps its case, the domain does not
        ("<Chris.Smith@CoNtOsO.CoM>", "Chris.Smith", "contoso.com", ("contoso.com",), "Chris.Smith@contoso.com"),
        ("<chris@contoso.com.>", "chris", "contoso.com", ("contoso.com",), "chris@contoso.com"),
        ("<chris@mail.sub.contoso.com>", "chris", "mail.sub.contoso.com", ("mail.sub.contoso.com",),
         "chris@mail.sub.contoso.com"),
        ("<postmaster@localhost>", "postmaster", "localhost", ("localhost",), "postmaster@localhost"),
        ("<a@xn--bcher-kva.example>", "a", "xn--bcher-kva.example", ("xn--bcher-kva.example",),
         "a@xn--bcher-kva.example"),
        ("<a@a-b.c0.example>", "a", "a-b.c0.example", ("a-b.c0.example",), "a@a-b.c0.example"),
        ("<a@0.example>", "a", "0.example", ("0.example",), "a@0.example"),
        ("<a@example.x0>", "a", "example.x0", ("example.x0",), "a@example.x0"),
        # all of atext in a dot-atom (without % and !, which route)
        ("<a#$&'*+/=?^_`{|}~-z@contoso.com>", "a#$&'*+/=?^_`{|}~-z", "contoso.com", ("contoso.com",),
         "a#$&'*+/=?^_`{|}~-z@contoso.com"),
        # quoted local parts are forwarded as written
        ('<"john smith"@contoso.com>', '"john smith"', "contoso.com", ("contoso.com",), '"john smith"@contoso.com'),
        ('<"a\\"b\\\\c"@contoso.com>', '"a\\"b\\\\c"', "contoso.com", ("contoso.com",), '"a\\"b\\\\c"@contoso.com'),
        ('<"chris"@CONTOSO.COM>', '"chris"', "contoso.com", ("contoso.com",), '"chris"@contoso.com'),
        ('<"a.b..c."@contoso.com>', '"a.b..c."', "contoso.com", ("contoso.com",), '"a.b..c."@contoso.com'),
        ('<"<x>,:;[]"@contoso.com>', '"<x>,:;[]"', "contoso.com", ("contoso.com",), '"<x>,:;[]"@contoso.com'),
        # percent hack: every hop, the next one (rightmost) first
        ("<victim%external.example@contoso.com>", "victim%external.example", "contoso.com",
         ("contoso.com", "external.example"), "victim%external.example@contoso.com"),
        ("<u%b.example%c.example@d.example>", "u%b.example%c.example", "d.example",
         ("d.example", "c.example", "b.example"), "u%b.example%c.example@d.example"),
        ("<u%EXTERNAL.Example@contoso.com>", "u%EXTERNAL.Example", "contoso.com",
         ("contoso.com", "external.example"), "u%EXTERNAL.Example@contoso.com"),
        ("<u%contoso.com@contoso.com>", "u%contoso.com", "contoso.com", ("contoso.com",), "u%contoso.com@contoso.com"),
        ("<u%external.example.%contoso.com@contoso.com>", "u%external.example.%contoso.com", "contoso.com",
         ("contoso.com", "external.example"), "u%external.example.%contoso.com@contoso.com"),
        ("<50%off@contoso.com>", "50%off", "contoso.com", ("contoso.com", "off"), "50%off@contoso.com"),
        # bang path: every hop, the first one first
        ("<external.example!victim@contoso.com>", "external.example!victim", "contoso.com",
         ("contoso.com", "external.example"), "external.example!victim@contoso.com"),
        ("<x.example!y.example!u@d.example>", "x.example!y.example!u", "d.example",
         ("d.example", "x.example", "y.example"), "x.example!y.example!u@d.example"),
        ("<uucp!u@contoso.com>", "uucp!u", "contoso.com", ("contoso.com", "uucp"), "uucp!u@contoso.com"),
    ],
)
def test_accepted_forms(text: str, local: str, domain: str, routing: tuple[str, ...], address: str) -> None:
    for allow_null in (False, True):
        path = parse_path(text, allow_null=allow_null)
        assert path == MailPath(local, domain, False, False, False, routing)
        assert path.local_part == local
        assert path.domain == domain
        assert path.routing_domains == routing
        assert path.address == address
        assert not (path.is_null or path.is_ip_literal or path.route_dropped)


def test_null_path_only_where_allowed() -> None:
    path = parse_path("<>", allow_null=True)
    assert path == MailPath("", "", is_null=True, is_ip_literal=False, route_dropped=False, routing_domains=())
    assert path.address == ""
    assert parse_path("  <>  ", allow_null=True).is_null
    refused("<>", allow_null=False, reason="null path")
    # the null path must be written <>: nothing else stands for it
    for text in ("", "   ", "< >", "<<>>", '<"">', "<@>"):
        refused(text, allow_null=True)


@pytest.mark.parametrize(
    ("text", "local", "domain", "routing"),
    [
        ("<@contoso.com:victim@external.example>", "victim", "external.example", ("external.example",)),
        ("<@a.example,@b.example:user@contoso.com>", "user", "contoso.com", ("contoso.com",)),
        ("<@contoso.com,@external.example:victim@contoso.com>", "victim", "contoso.com", ("contoso.com",)),
        ("@a.example:user@contoso.com", "user", "contoso.com", ("contoso.com",)),
        ("<@A.Example.:u%x.example@CONTOSO.com.>", "u%x.example", "contoso.com", ("contoso.com", "x.example")),
        ('<@a.example:"q u"@contoso.com>', '"q u"', "contoso.com", ("contoso.com",)),
        ("<@a.example:user@[192.0.2.1]>", "user", "[192.0.2.1]", ("[192.0.2.1]",)),
    ],
)
def test_source_route_is_dropped(text: str, local: str, domain: str, routing: tuple[str, ...]) -> None:
    path = parse_path(text, allow_null=True)
    assert path.route_dropped
    assert (path.local_part, path.domain, path.routing_domains) == (local, domain, routing)
    assert path.address == f"{local}@{domain}"
    # the route never reaches the forwarded address
    assert ":" not in path.address.partition("@")[0] or path.local_part.startswith('"')
    assert "," not in path.address


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<@a.example user@contoso.com>", "source route without ':'"),
        ("<@a.example>", "source route without ':'"),
        ("<@:user@contoso.com>", "empty source route domain"),
        ("<@a.example,:user@contoso.com>", "does not start with '@'"),
        ("<@a.example,,@b.example:user@contoso.com>", "does not start with '@'"),
        ("<@a.example,b.example:user@contoso.com>", "does not start with '@'"),
        ("<@a.example;@b.example:user@contoso.com>", "invalid label"),
        ("<@a_b.example:user@contoso.com>", "invalid label"),
        ("<@[192.0.2.1]:user@contoso.com>", "invalid label"),
        ("<@192.0.2.1:user@contoso.com>", "numeric"),
        ("<@a.example:>", "no '@domain'"),
        ("<@a.example:@b.example:user@contoso.com>", "empty local part"),
        ("<@a.example:user>", "no '@domain'"),
    ],
)
def test_malformed_source_route_refused(text: str, reason: str) -> None:
    refused(text, reason=reason)


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("<victim@[192.0.2.1]>", "[192.0.2.1]"),
        ("<victim@[0.0.0.0]>", "[0.0.0.0]"),
        ("<victim@[255.255.255.255]>", "[255.255.255.255]"),
        ("<victim@[IPv6:2001:db8::1]>", "[IPv6:2001:db8::1]"),
        ("<victim@[ipv6:2001:DB8::1]>", "[IPv6:2001:db8::1]"),
        ("<victim@[IPv6:2001:db8:0:0:0:0:0:1]>", "[IPv6:2001:db8:0:0:0:0:0:1]"),
        ("<victim@[IPv6:::1]>", "[IPv6:::1]"),
        ("<victim@[IPv6:::]>", "[IPv6:::]"),
        ("<victim@[IPv6:1:2:3:4:5:6::]>", "[IPv6:1:2:3:4:5:6::]"),
        ("<victim@[IPv6:::ffff:192.0.2.1]>", "[IPv6:::ffff:192.0.2.1]"),
        ("<victim@[IPv6:1:2:3:4:5:6:192.0.2.1]>", "[IPv6:1:2:3:4:5:6:192.0.2.1]"),
        ("<victim@[IPv6:1:2:3:4::192.0.2.1]>", "[IPv6:1:2:3:4::192.0.2.1]"),
    ],
)
def test_ip_literals_accepted_and_flagged(text: str, domain: str) -> None:
    path = parse_path(text, allow_null=False)
    assert path.is_ip_literal
    assert path.domain == domain
    assert path.routing_domains == (domain,)
    assert path.address == f"victim@{domain}"
    # the caller never treats a literal as local, even if someone listed it as accepted
    assert not judged_local(path, ACCEPTED | {domain})


@pytest.mark.parametrize(
    "literal",
    [
        "[]", "[192.0.2]", "[192.0.2.1.5]", "[192.0.2.256]", "[192.0.2.01]", "[010.0.0.1]", "[192.0.2.-1]",
        "[192.0.2.1", "192.0.2.1]", "[[192.0.2.1]]", "[ 192.0.2.1]", "[192.0.2.1]x", "[192.0.2.1].example",
        "[0x7f.0.0.1]", "[contoso.com]", "[2001:db8::1]", "[IPv6:2001:db8::g]", "[IPv6:12345::1]",
        "[IPv6:1::2::3]", "[IPv6::::]", "[IPv6:1:2:3:4:5:6:7:8:9]", "[IPv6:1:2:3:4:5:6:7]",
        "[IPv6:1:2:3:4:5:6:7::]", "[IPv6:1:2:3:4:5::7:8]", "[IPv6:fe80::1%eth0]", "[IPv6:]", "[IPv6:192.0.2.1]",
        "[IPv6:1:2:3:4:5:192.0.2.1]", "[IPv6:1:2:3:4:5::192.0.2.1]", "[IPv6:::ffff:192.0.2.256]",
        "[IPv4:192.0.2.1]", "[x400:c=us]", "[tcp:192.0.2.1]",
    ],
)
def test_malformed_ip_literals_refused(literal: str) -> None:
    refused(f"<victim@{literal}>")


# --------------------------------------------------------------------------- refused forms

@pytest.mark.parametrize(
    ("text", "reason"),
    [
        # brackets
        ("<chris@contoso.com", "unbalanced"),
        ("chris@contoso.com>", "unbalanced"),
        ("<", "unbalanced"),
        (">", "unbalanced"),
        ("<chris@contoso.com> SIZE=100", "unbalanced"),
        ("<<chris@contoso.com>>", "dot-atom"),
        ("<chris@contoso.com>>", "invalid label"),
        ("<chris@contoso.com>,<x@external.example>", "more than one unquoted '@'"),
        ("< chris@contoso.com>", "dot-atom"),
        ("<chris@contoso.com >", "invalid label"),
        ("<chris @contoso.com>", "dot-atom"),
        # empty parts and @ counts
        ("", "empty path"),
        ("<@contoso.com>", "source route without ':'"),
        ("<chris@>", "empty domain"),
        ("<chris@.>", "empty domain"),
        ("<chris>", "no '@domain'"),
        ("<Postmaster>", "no '@domain'"),
        ("<a@b@contoso.com>", "more than one unquoted '@'"),
        ("<a@@contoso.com>", "more than one unquoted '@'"),
        # dot-atom
        ("<.chris@contoso.com>", "dot-atom"),
        ("<chris.@contoso.com>", "dot-atom"),
        ("<chr..is@contoso.com>", "dot-atom"),
        ("<chr(is)@contoso.com>", "dot-atom"),
        ("<chr,is@contoso.com>", "dot-atom"),
        ("<chr;is@contoso.com>", "dot-atom"),
        ("<chr\\is@contoso.com>", "dot-atom"),
        ('<chr"is"@contoso.com>', "dot-atom"),
        # quoted local parts
        ('<"">', "empty quoted local part"),
        ('<""@contoso.com>', "empty quoted local part"),
        ('<"chris@contoso.com>', "unterminated"),
        ('<"chris\\">', "unterminated"),
        ('<"chris\\', "unbalanced"),
        ('"chris\\', "unterminated"),
        ('<"chris"contoso.com>', "not followed by '@domain'"),
        ('<"chris".smith@contoso.com>', "not followed by '@domain'"),
        ('<"a"@"b"@contoso.com>', "more than one unquoted '@'"),
        ('<"a%b"@contoso.com>', "contains '%'"),
        ('<"a!b"@contoso.com>', "contains '!'"),
        ('<"a@b"@contoso.com>', "contains '@'"),
        ('<"a\\@b"@contoso.com>', "contains '@'"),
        ('<"a\\%b"@contoso.com>', "contains '%'"),
        # domains
        ("<chris@contoso.com..>", "empty label"),
        ("<chris@contoso..com>", "empty label"),
        ("<chris@.contoso.com>", "empty label"),
        ("<chris@-contoso.com>", "invalid label"),
        ("<chris@contoso-.com>", "invalid label"),
        ("<chris@con_toso.com>", "invalid label"),
        ("<chris@contoso.com:25>", "invalid label"),
        ("<chris@contoso.com,external.example>", "invalid label"),
        ("<chris@contoso.com%external.example>", "invalid label"),
        ("<chris@contoso.com!external.example>", "invalid label"),
        ("<chris@192.0.2.1>", "numeric"),
        ("<chris@192.0.2.1.>", "numeric"),
        ("<chris@127.1>", "numeric"),
        ("<chris@2130706433>", "numeric"),
        ("<chris@0x7f000001>", "numeric"),
        ("<chris@0x7F.0.0.1>", "numeric"),
        ("<chris@contoso.123>", "numeric"),
        # percent hack and bang path that cannot be judged
        ("<external.example!victim>", "no '@domain'"),
        ("external.example!victim", "no '@domain'"),
        ("<victim%external.example>", "no '@domain'"),
        ("<a!b%c@contoso.com>", "mixes '%' and '!'"),
        ("<a%b!c@contoso.com>", "mixes '%' and '!'"),
        ("<victim%@contoso.com>", "empty hidden routing domain"),
        ("<victim%%x.example@contoso.com>", "empty hidden routing domain"),
        ("<%external.example@contoso.com>", "empty user"),
        ("<!victim@contoso.com>", "empty hidden routing domain"),
        ("<external.example!@contoso.com>", "empty user"),
        ("<victim%192.0.2.1@contoso.com>", "numeric"),
        ("<192.0.2.1!victim@contoso.com>", "numeric"),
        ("<victim%ext_ernal.example@contoso.com>", "invalid label"),
        ("<victim%external..example@contoso.com>", "dot-atom"),
        ("<victim%.external.example@contoso.com>", "empty label"),
        ("<victim%-x.example@contoso.com>", "invalid label"),
    ],
)
def test_refused_forms(text: str, reason: str) -> None:
    refused(text, allow_null=True, reason=reason)


@pytest.mark.parametrize("char", [chr(code) for code in (*range(0x20), 0x7F)])
def test_every_control_character_refused(char: str) -> None:
    for text in (f"<vic{char}tim@contoso.com>", f"<victim@contoso.com{char}>", f"{char}<victim@contoso.com>",
                 f'<"vic{char}tim"@contoso.com>', f"<@a.example{char}:victim@contoso.com>"):
        refused(text, allow_null=True, reason="control character")


@pytest.mark.parametrize(
    "text",
    [
        "<vïctim@contoso.com>",
        "<victim@contosо.com>",  # Cyrillic o
        "<victim@bücher.example>",
        '<"vïctim"@contoso.com>',
        "<victim@contoso.com\u200b>",
        "<victim@contoso.com\u00a0>",
        "\u00a0<victim@contoso.com>",
        "<victim@contoso\uff0ecom>",  # fullwidth full stop
        "<victim\udc80@contoso.com>",  # lone surrogate (surrogateescape'd byte)
    ],
)
def test_non_ascii_refused(text: str) -> None:
    refused(text, allow_null=True, reason="non-ASCII character")


def test_message_is_ascii_and_short_whatever_the_text() -> None:
    for text in ("\U0010ffff" * 300, "\x00" * 1000, "<" + "é" * 250 + "@contoso.com>", "\u200b<a@contoso.com>"):
        with pytest.raises(AddressSyntaxError) as info:
            parse_path(text, allow_null=True)
        message = str(info.value)
        assert all(" " <= char <= "~" for char in message)
        assert len(message) < 300
    assert info.value.reason == "non-ASCII character U+200B"
    assert str(info.value) == "refused path '\\u200b<a@contoso.com>': non-ASCII character U+200B"


def test_length_limits() -> None:
    # local part: 64 octets as written
    assert parse_path(f"<{'a' * 64}@contoso.com>", allow_null=False).local_part == "a" * 64
    refused(f"<{'a' * 65}@contoso.com>", reason="local part longer than 64")
    assert parse_path(f'<"{"a" * 62}"@contoso.com>', allow_null=False).local_part == f'"{"a" * 62}"'
    refused(f'<"{"a" * 63}"@contoso.com>', reason="local part longer than 64")
    # label: 63
    assert parse_path(f"<a@{'b' * 63}.example>", allow_null=False).domain == f"{'b' * 63}.example"
    refused(f"<a@{'b' * 64}.example>", reason="label longer than 63")
    # domain: the 256-octet path leaves at most 252 characters for it ("<a@" ... ">")
    domain_252 = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 60])
    assert parse_path(f"a@{domain_252}", allow_null=False).domain == domain_252
    refused(f"a@{domain_252}.", reason="longer than 256")
    # so the 253-character rule of the domain check itself is defence in depth: test it directly
    domain_253 = domain_252 + "d"
    assert _domain_name(domain_253, "t", "domain") == domain_253
    assert _domain_name(domain_253 + ".", "t", "domain") == domain_253
    with pytest.raises(AddressSyntaxError, match="longer than 253"):
        _domain_name(domain_253 + "d", "t", "domain")
    # whole path: 256 octets including the brackets (and any route)
    local = "l" * 64
    domain = ".".join(["a" * 63, "b" * 63, "c" * 61])  # 189 characters
    assert len(f"<{local}@{domain}>") == 256
    assert parse_path(f"<{local}@{domain}>", allow_null=False).domain == domain
    assert parse_path(f"{local}@{domain}", allow_null=False).domain == domain
    refused(f"<{local}@{domain}x>", reason="longer than 256")
    refused(f"{local}@{domain}x", reason="longer than 256")
    assert parse_path(f"<@r.example:{local}@{domain[:-11]}>", allow_null=False).route_dropped
    refused(f"<@r.example:{local}@{domain[:-10]}>", reason="longer than 256")
    # surrounding spaces do not count
    assert parse_path(f"   <{local}@{domain}>   ", allow_null=False).domain == domain
    # and the message of an enormous path stays short
    huge = "<" + "a" * 100_000 + "@contoso.com>"
    with pytest.raises(AddressSyntaxError) as info:
        parse_path(huge, allow_null=False)
    assert info.value.reason == "path longer than 256 octets"
    assert len(str(info.value)) < 300
    assert str(info.value).startswith("refused path '<aaaa")
    assert "(100014 characters)" in str(info.value)


def test_error_is_a_value_error_and_pickles() -> None:
    with pytest.raises(ValueError) as info:
        parse_path("<a@b@c.example>", allow_null=False)
    error = info.value
    assert isinstance(error, AddressSyntaxError)
    assert str(error) == "refused path '<a@b@c.example>': more than one unquoted '@'"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.text, copy.reason, str(copy)) == (error.text, error.reason, str(error))


def test_mail_path_is_frozen() -> None:
    path = parse_path("<a@contoso.com>", allow_null=False)
    with pytest.raises(AttributeError):
        path.domain = "external.example"  # type: ignore[misc]


# --------------------------------------------------------------------------- open-relay tester forms

# Forms that public open-relay testers send to a relay whose accepted domain is contoso.com, with the
# mailbox at external.example as the real target. None may be judged local.
RELAY_TESTS = [
    "<victim@external.example>",
    "victim@external.example",
    "<victim@EXTERNAL.example.>",
    '<"victim@external.example">',
    '"victim@external.example"',
    "<victim%external.example@contoso.com>",
    "<victim%external.example%contoso.com@contoso.com>",
    "<victim%contoso.com%external.example@contoso.com>",
    "<victim%external.example@[192.0.2.1]>",
    "<victim%external.example.@contoso.com>",
    "<victim%192.0.2.1@contoso.com>",
    "<victim%[192.0.2.1]@contoso.com>",
    "<external.example!victim@contoso.com>",
    "<contoso.com!external.example!victim@contoso.com>",
    "<external.example!victim%contoso.com@contoso.com>",
    "<external.example!victim>",
    "external.example!victim",
    "<contoso.com!victim@external.example>",
    "<@contoso.com:victim@external.example>",
    "<@contoso.com,@contoso.com:victim@external.example>",
    "<@contoso.com:victim%external.example@contoso.com>",
    "<@[192.0.2.1]:victim@contoso.com>",
    "<victim@external.example@contoso.com>",
    "<victim@contoso.com@external.example>",
    '<"victim@external.example"@contoso.com>',
    '<"victim%external.example"@contoso.com>',
    '<"external.example!victim"@contoso.com>',
    '<"victim\\@external.example"@contoso.com>',
    '<"victim"@external.example>',
    "<victim@[192.0.2.1]>",
    "<victim@[IPv6:2001:db8::1]>",
    "<victim@[contoso.com]>",
    "<victim@192.0.2.1>",
    "<victim@external.example%contoso.com>",
    "<victim@external.example:contoso.com>",
    "<victim@contoso.com,victim@external.example>",
    "<victim@contoso.com>,<victim@external.example>",
    "<victim@contoso.com> <victim@external.example>",
    "<victim@contoso.com\r\nRCPT TO:<x@y>>",
    "<victim@contoso.com\nRCPT TO:<victim@external.example>>",
    "<victim@contoso.com\x00.evil.example>",
    "<victim@contoso.com\x00@external.example>",
    "<victim@contoso.com.external.example>",
    "<victim@contoso.com..>",
    "<victim@contosо.com>",  # Cyrillic o: not contoso.com and refused anyway
    "<victim@contoso_com>",
    "<victim@localhost>",
]


@pytest.mark.parametrize("text", RELAY_TESTS)
def test_relay_tester_forms_are_never_local(text: str) -> None:
    for allow_null in (False, True):
        try:
            path = parse_path(text, allow_null=allow_null)
        except AddressSyntaxError as error:
            assert ascii(text) in str(error)
            continue
        assert not judged_local(path), path
        assert "contoso.com" != path.domain or len(path.routing_domains) > 1


@pytest.mark.parametrize(
    ("text", "address", "route_dropped"),
    [
        ("<victim@contoso.com.>", "victim@contoso.com", False),
        ("<VICTIM@CoNtOsO.CoM>", "VICTIM@contoso.com", False),
        ("<victim%contoso.com@contoso.com>", "victim%contoso.com@contoso.com", False),
        ("<contoso.com!victim@contoso.com>", "contoso.com!victim@contoso.com", False),
        ("<@external.example:victim@contoso.com>", "victim@contoso.com", True),
    ],
)
def test_genuinely_local_forms(text: str, address: str, route_dropped: bool) -> None:
    path = parse_path(text, allow_null=False)
    assert judged_local(path)
    assert path.address == address
    assert path.route_dropped is route_dropped


def test_refused_relay_forms_say_why() -> None:
    refused('<"victim@external.example">', reason="contains '@'")
    refused("<external.example!victim>", reason="no '@domain'")
    refused("<victim@external.example@contoso.com>", reason="more than one unquoted '@'")
    refused('<"victim@external.example"@contoso.com>', reason="contains '@'")
    refused("<victim@contoso.com\r\nRCPT TO:<x@y>>", reason="control character '\\r'")
    refused("<victim@contoso.com\x00.evil.example>", reason="control character '\\x00'")
    refused("<victim@192.0.2.1>", reason="numeric")


# --------------------------------------------------------------------------- properties

ATEXT_PLAIN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#$&'*+/=?^_`{|}~-"
LDH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"

atoms = st.text(alphabet=ATEXT_PLAIN, min_size=1, max_size=10)
dot_atoms = st.lists(atoms, min_size=1, max_size=5).map(".".join).filter(lambda s: len(s) <= 64)
labels = st.text(alphabet=LDH, min_size=1, max_size=20).filter(lambda s: s[0] != "-" and s[-1] != "-")
last_labels = labels.filter(lambda s: not re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", s))
domains = st.builds(
    lambda head, last: ".".join([*head, last]), st.lists(labels, max_size=4), last_labels
)


@PROPERTY
@given(local=dot_atoms, domain=domains, bare=st.booleans(), dot=st.booleans(), pad=st.sampled_from(["", " ", "  "]))
def test_valid_dot_atom_round_trips(local: str, domain: str, bare: bool, dot: bool, pad: str) -> None:
    address = f"{local}@{domain}"
    written = f"{address}." if dot else address
    text = pad + (written if bare else f"<{written}>") + pad
    path = parse_path(text, allow_null=False)
    assert path.address == f"{local}@{domain.lower()}"
    assert path.local_part == local
    assert path.routing_domains == (domain.lower(),)
    assert not (path.is_null or path.is_ip_literal or path.route_dropped)
    assert parse_path(f"<{path.address}>", allow_null=False) == path


@PROPERTY
@given(user=dot_atoms, hops=st.lists(domains, min_size=1, max_size=3), domain=domains, bang=st.booleans())
def test_every_hidden_hop_is_a_routing_domain(user: str, hops: list[str], domain: str, bang: bool) -> None:
    local = "!".join([*hops, user]) if bang else "%".join([user, *hops])
    assume(len(local) <= 64)
    path = parse_path(f"<{local}@{domain}>", allow_null=False)
    assert path.local_part == local
    assert set(path.routing_domains) == {domain.lower(), *(hop.lower() for hop in hops)}
    assert path.routing_domains[0] == domain.lower()
    # local only if every hop is local
    assert judged_local(path, frozenset({domain.lower()})) == all(h.lower() == domain.lower() for h in hops)


FRAGMENTS = [
    "victim", "V", "a", "1", "0", ".", "..", "-", "_", "+", "=", "'", "@", "@", "%", "%", "!", "!", ",", ":",
    '"', '"', "\\", "<", ">", "[", "]", "IPv6:", "ipv6:", "2001:db8::1", "::", "192.0.2.1", "256", "contoso.com",
    "CoNtOsO.CoM", "external.example", "EXTERNAL.example.", "xn--bcher-kva.example", "0x7f", " ", "\r\n",
    "\x00", "\t", "\x7f", "é", "\u200b", "@contoso.com:", "@a.example,", "a.example", "x" * 63, "y" * 70,
]
fragment_texts = st.lists(st.sampled_from(FRAGMENTS), max_size=14).map("".join)

# Valid paths built from the grammar's parts, then some of them damaged in one place, so that the
# properties see many successful parses (routes, hops, quotes, literals) and many near misses.
HOSTS = st.sampled_from([
    "contoso.com", "CoNtOsO.CoM", "contoso.com.", "external.example", "EXTERNAL.example.", "a", "x-y.example",
    "xn--bcher-kva.example", "localhost",
])
LITERALS = st.sampled_from(["[192.0.2.1]", "[IPv6:2001:db8::1]", "[ipv6:::FFFF:192.0.2.1]", "[IPv6:::]"])
USERS = st.one_of(
    st.sampled_from(["victim", "V.i.c", "a+b", "o'brien", "x=y", "50", "{_}"]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='@%!"\\'),
            min_size=1, max_size=8).map(lambda s: f'"{s}"'),
)


def _local(user: str, hops: list[tuple[str, str]]) -> str:
    if user.startswith('"'):
        return user
    for separator, host in hops:
        user = f"{user}%{host}" if separator == "%" else f"{host}!{user}"
    return user


def _damage(text: str, position: int, fragment: str, delete: bool) -> str:
    position %= len(text) + 1
    return text[:position] + fragment + text[position + int(delete):]


LOCALS = st.builds(
    _local, USERS, st.lists(st.tuples(st.sampled_from("%!"), HOSTS), max_size=2).map(
        lambda hops: hops if len({sep for sep, _ in hops}) < 2 else hops[:1]
    )
)
ROUTES = st.lists(HOSTS, max_size=2).map(lambda hosts: ",".join(f"@{h}" for h in hosts) + ":" if hosts else "")
valid_texts = st.builds(
    lambda wrap, route, local, domain: wrap.format(route + local + "@" + domain),
    st.sampled_from(["<{}>", "<{}>", "{}", " <{}>  "]),
    ROUTES,
    LOCALS,
    st.one_of(HOSTS, HOSTS, LITERALS),
)
damaged_texts = st.builds(
    _damage,
    valid_texts,
    st.integers(0, 300),
    st.sampled_from([*FRAGMENTS, "", "192.0.2.1", "127.1", "0x7f", "b_c", "-", "[", "@@", '"@"', "%!"]),
    st.booleans(),
)
path_texts = st.one_of(
    valid_texts,
    damaged_texts,
    damaged_texts,
    fragment_texts,
    fragment_texts.map(lambda s: f"<{s}>"),
    st.text(max_size=80),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=80),
)


def _normalised(token: str) -> str:
    token = token.lower()
    return token[:-1] if token.endswith(".") else token


def _hosts_in_text(text: str) -> set[str]:
    """Every host a downstream MTA could read in text that parsed, worked out from the text alone.

    After the source route (up to the first ':' if the path starts with '@'), the domain is what follows
    the last '@' (a quoted local part never contains '@'); in an unquoted local part every token after
    a '%' and every token before a '!' is a host.
    """
    inner = text.strip(" ")
    if inner.startswith("<"):
        inner = inner[1:-1]
    if inner.startswith("@"):
        inner = inner.split(":", 1)[1]
    local, _, domain = inner.rpartition("@")
    hosts = {_normalised(domain)}
    if not local.startswith('"'):
        hosts.update(_normalised(token) for token in local.split("%")[1:])
        hosts.update(_normalised(token) for token in local.split("!")[:-1])
    return hosts


def _naive_hosts(address: str) -> set[str]:
    """Hosts a quote-blind downstream parser could route to: after any '@' or '%', before any '!'."""
    tokens = re.split(r"([@%!])", address)
    hosts: set[str] = set()
    for index in range(0, len(tokens), 2):
        before = tokens[index - 1] if index > 0 else ""
        after = tokens[index + 1] if index + 1 < len(tokens) else ""
        if before in ("@", "%") or after == "!":
            hosts.add(_normalised(tokens[index]))
    return hosts


@PROPERTY
@given(text=path_texts, allow_null=st.booleans())
def test_arbitrary_text_only_raises_address_syntax_error(text: str, allow_null: bool) -> None:
    try:
        parse_path(text, allow_null=allow_null)
    except AddressSyntaxError as error:
        message = str(error)
        assert ascii(text) in message or len(ascii(text)) > 200
        assert error.reason and message.endswith(error.reason)
        # fit for an SMTP reply line: printable ASCII, bounded
        assert all(" " <= char <= "~" for char in message)
        assert len(message) < 400


@PROPERTY
@given(text=path_texts, allow_null=st.booleans())
def test_whatever_parses_is_safe(text: str, allow_null: bool) -> None:
    try:
        path = parse_path(text, allow_null=allow_null)
    except AddressSyntaxError:
        return
    address = path.address
    assert all(" " <= char <= "~" for char in address)
    assert "\r" not in address and "\n" not in address
    if path.is_null:
        assert allow_null and text.strip(" ") == "<>" and address == "" and path.routing_domains == ()
        return
    # the domain is normalised and comes first; nothing else is a routing domain
    assert path.routing_domains[0] == path.domain
    assert len(set(path.routing_domains)) == len(path.routing_domains)
    for domain in path.routing_domains:
        assert domain == domain.lower() or domain.startswith("[IPv6:")
        assert not domain.endswith(".") and domain
    assert path.is_ip_literal == path.domain.startswith("[")
    # every host visible in the text is a routing domain, and there is no other
    assert {d.lower() for d in path.routing_domains} == _hosts_in_text(text)
    # a quote-blind downstream parser sees no host that the relay did not judge
    assert _naive_hosts(address) <= {d.lower() for d in path.routing_domains}
    # and a path judged local can only lead to accepted domains
    if judged_local(path):
        assert _naive_hosts(address) <= ACCEPTED
    # what is forwarded parses again to the same thing, without the route
    again = parse_path(f"<{address}>", allow_null=False)
    assert again.address == address
    assert again.routing_domains == path.routing_domains
    assert not again.route_dropped
    assert len(f"<{address}>") <= 256
    assert path.route_dropped == text.strip(" ").lstrip("<").startswith("@")
