"""Remote IP ranges, local bindings and client addresses (reference §6.1, §6.2)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salmon_relayauth import AddressError, Binding, RemoteIPRange, parse_binding, parse_remote_ip_range
from salmon_relayauth.model.addresses import client_address

ALL_V6 = "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
PROPERTY = settings(max_examples=200, deadline=None)


def ip(text: str) -> int:
    return int(ipaddress.ip_address(text))


# --------------------------------------------------------------------------- remote ranges: valid forms

@pytest.mark.parametrize(
    ("text", "version", "first", "last", "rendered"),
    [
        # single addresses
        ("192.168.1.1", 4, ip("192.168.1.1"), ip("192.168.1.1"), "192.168.1.1"),
        ("  10.0.0.7  ", 4, ip("10.0.0.7"), ip("10.0.0.7"), "10.0.0.7"),
        ("2001:DB8::1", 6, ip("2001:db8::1"), ip("2001:db8::1"), "2001:db8::1"),
        ("::", 6, 0, 0, "::"),
        # IPv6 with a zone index: the zone is dropped
        ("fe80::39bd:88f7:6969:d223%11", 6, ip("fe80::39bd:88f7:6969:d223"), ip("fe80::39bd:88f7:6969:d223"),
         "fe80::39bd:88f7:6969:d223"),
        # IPv4-mapped IPv6 single address becomes IPv4
        ("::ffff:192.168.5.10", 4, ip("192.168.5.10"), ip("192.168.5.10"), "192.168.5.10"),
        # a-b ranges
        ("192.168.1.1-192.168.1.254", 4, ip("192.168.1.1"), ip("192.168.1.254"), "192.168.1.1-192.168.1.254"),
        ("0.0.0.0-255.255.255.255", 4, 0, 2**32 - 1, "0.0.0.0-255.255.255.255"),
        ("10.0.0.5 - 10.0.0.5", 4, ip("10.0.0.5"), ip("10.0.0.5"), "10.0.0.5-10.0.0.5"),
        (ALL_V6, 6, 0, 2**128 - 1, ALL_V6),
        ("2001:db8::10-2001:db8::1:0", 6, ip("2001:db8::10"), ip("2001:db8::1:0"), "2001:db8::10-2001:db8::1:0"),
        # CIDR, host bits set, normalised to the network
        ("192.168.1.1/24", 4, ip("192.168.1.0"), ip("192.168.1.255"), "192.168.1.0/24"),
        ("17.17.17.1/24", 4, ip("17.17.17.0"), ip("17.17.17.255"), "17.17.17.0/24"),
        ("2001:0DB8::CD3/60", 6, ip("2001:db8::"), ip("2001:db8:0:f:ffff:ffff:ffff:ffff"), "2001:db8::/60"),
        ("10.1.2.3/0", 4, 0, 2**32 - 1, "0.0.0.0/0"),
        ("10.1.2.3/32", 4, ip("10.1.2.3"), ip("10.1.2.3"), "10.1.2.3/32"),
        ("10.1.2.3/ 8", 4, ip("10.0.0.0"), ip("10.255.255.255"), "10.0.0.0/8"),
        ("2001:db8::1/0", 6, 0, 2**128 - 1, "::/0"),
        ("2001:db8::1/128", 6, ip("2001:db8::1"), ip("2001:db8::1"), "2001:db8::1/128"),
        ("::1/127", 6, 0, 1, "::/127"),
    ],
)
def test_remote_range_forms(text: str, version: int, first: int, last: int, rendered: str) -> None:
    parsed = parse_remote_ip_range(text)
    assert isinstance(parsed, RemoteIPRange)
    assert (parsed.version, parsed.first, parsed.last) == (version, first, last)
    assert parsed.size == last - first + 1
    assert str(parsed) == rendered
    # the rendered form parses back to the same range
    assert parse_remote_ip_range(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("192.168.1.75", 1),
        ("192.168.1.1/24", 256),
        ("192.168.1.0-192.168.1.255", 256),
        ("192.168.1.1-192.168.1.254", 254),
        ("0.0.0.0/0", 2**32),
        ("0.0.0.0-255.255.255.255", 2**32),
        ("10.0.0.0/32", 1),
        ("2001:0DB8::CD3/60", 2**68),
        (ALL_V6, 2**128),
        ("::/0", 2**128),
        ("::1/128", 1),
        ("fe80::39bd:88f7:6969:d223%11", 1),
    ],
)
def test_remote_range_size(text: str, size: int) -> None:
    assert parse_remote_ip_range(text).size == size


def test_zone_index_does_not_change_the_address() -> None:
    with_zone = parse_remote_ip_range("fe80::39bd:88f7:6969:d223%11")
    without_zone = parse_remote_ip_range("fe80::39bd:88f7:6969:d223")
    assert with_zone == without_zone
    assert "%" not in str(with_zone)


def test_ipv4_mapped_single_matches_ipv4_clients() -> None:
    mapped = parse_remote_ip_range("::ffff:192.168.5.10")
    assert mapped == parse_remote_ip_range("192.168.5.10")
    assert mapped.contains(4, ip("192.168.5.10"))
    assert not mapped.contains(6, ip("::ffff:192.168.5.10"))


@pytest.mark.parametrize(
    ("text", "client", "inside"),
    [
        ("192.168.1.1/24", "192.168.1.0", True),
        ("192.168.1.1/24", "192.168.1.255", True),
        ("192.168.1.1/24", "192.168.1.100", True),
        ("192.168.1.1/24", "192.168.0.255", False),
        ("192.168.1.1/24", "192.168.2.0", False),
        ("192.168.1.1-192.168.1.254", "192.168.1.1", True),
        ("192.168.1.1-192.168.1.254", "192.168.1.254", True),
        ("192.168.1.1-192.168.1.254", "192.168.1.0", False),
        ("192.168.1.1-192.168.1.254", "192.168.1.255", False),
        ("192.168.1.75", "192.168.1.75", True),
        ("192.168.1.75", "192.168.1.76", False),
        ("0.0.0.0-255.255.255.255", "255.255.255.255", True),
        ("0.0.0.0/0", "0.0.0.0", True),
        # IPv4 ranges contain IPv4-mapped IPv6 clients (dual-stack sockets)
        ("192.168.5.0/24", "::ffff:192.168.5.10", True),
        ("192.168.5.0/24", "::ffff:192.168.6.10", False),
        # families are disjoint: same integer, other family
        ("0.0.0.0-255.255.255.255", "::1", False),
        (ALL_V6, "10.0.0.1", False),
        (ALL_V6, "2001:db8::1", True),
        ("2001:0DB8::CD3/60", "2001:db8:0:f:ffff:ffff:ffff:ffff", True),
        ("2001:0DB8::CD3/60", "2001:db8:0:10::", False),
        ("fe80::39bd:88f7:6969:d223%11", "fe80::39bd:88f7:6969:d223%4", True),
    ],
)
def test_remote_range_contains(text: str, client: str, inside: bool) -> None:
    version, value = client_address(client)
    assert parse_remote_ip_range(text).contains(version, value) is inside


def test_contains_checks_the_family_not_just_the_integer() -> None:
    v4 = parse_remote_ip_range("0.0.0.0/24")
    v6 = parse_remote_ip_range("::/120")
    assert (v4.first, v4.last) == (v6.first, v6.last)
    assert v4.contains(4, 5)
    assert not v4.contains(6, 5)
    assert v6.contains(6, 5)
    assert not v6.contains(4, 5)


# --------------------------------------------------------------------------- remote ranges: errors

@pytest.mark.parametrize(
    ("text", "named"),
    [
        # reversed ranges
        ("192.168.1.254-192.168.1.1", "192.168.1.254-192.168.1.1"),
        ("2001:db8::2-2001:db8::1", "2001:db8::2-2001:db8::1"),
        # mixed families
        ("10.0.0.1-::1", "10.0.0.1-::1"),
        ("::-255.255.255.255", "::-255.255.255.255"),
        # prefix length out of range
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("2001:db8::/129", "2001:db8::/129"),
        ("10.0.0.0/-1", "10.0.0.0/-1"),
        # prefix length that is not a number
        ("10.0.0.0/abc", "10.0.0.0/abc"),
        ("10.0.0.0/", "10.0.0.0/"),
        ("10.0.0.0/24/8", "10.0.0.0/24/8"),
        ("10.0.0.0/255.255.255.0", "10.0.0.0/255.255.255.0"),
        # malformed addresses
        ("192.168.1.300", "192.168.1.300"),
        ("not-an-address", "not"),
        ("10.0.0", "10.0.0"),
        ("2001:db8:::1", "2001:db8:::1"),
        ("10.0.0.1%11", "10.0.0.1%11"),
        ("fe80::1%", "fe80::1%"),
        ("10.0.0.1-10.0.0.999", "10.0.0.999"),
        ("10.0.0.1-", ""),
        ("300.1.1.1/24", "300.1.1.1"),
    ],
)
def test_remote_range_errors_name_the_value(text: str, named: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_remote_ip_range(text)
    assert repr(named) in str(caught.value)


def test_reversed_range_message_says_reversed() -> None:
    with pytest.raises(AddressError, match="reversed") as caught:
        parse_remote_ip_range("10.0.0.9-10.0.0.1")
    assert "'10.0.0.9-10.0.0.1'" in str(caught.value)


def test_mixed_family_message_names_both_families() -> None:
    with pytest.raises(AddressError, match="IPv4 and IPv6") as caught:
        parse_remote_ip_range("10.0.0.1-::1")
    assert "'10.0.0.1-::1'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "prefix", "limit"),
    [("10.0.0.0/33", 33, "0 to 32"), ("2001:db8::/129", 129, "0 to 128"), ("::/200", 200, "0 to 128")],
)
def test_prefix_out_of_range_message(text: str, prefix: int, limit: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_remote_ip_range(text)
    message = str(caught.value)
    assert repr(text) in message
    assert f"prefix length {prefix}" in message
    assert limit in message


def test_non_numeric_prefix_message() -> None:
    with pytest.raises(AddressError, match="not a number") as caught:
        parse_remote_ip_range("192.168.1.0/twenty")
    assert "'192.168.1.0/twenty'" in str(caught.value)


@pytest.mark.parametrize("text", ["10.0.0.0/2_4", "2001:db8::/6_4"])
def test_prefix_with_digit_separator_is_not_a_number(text: str) -> None:
    # "2_4" is not how a prefix length is written; Python's int() accepts it, the parser must not.
    with pytest.raises(AddressError) as caught:
        parse_remote_ip_range(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_empty_remote_range(text: str) -> None:
    with pytest.raises(AddressError, match="empty"):
        parse_remote_ip_range(text)


@pytest.mark.parametrize("value", [None, 42, 3.5, b"10.0.0.1", ["10.0.0.1"]])
def test_remote_range_must_be_a_string(value: object) -> None:
    with pytest.raises(AddressError) as caught:
        parse_remote_ip_range(value)  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)
    assert "not a string" in str(caught.value)


def test_address_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_remote_ip_range("nonsense")


# --------------------------------------------------------------------------- remote ranges: properties

@PROPERTY
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_any_single_address_round_trips(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    parsed = parse_remote_ip_range(str(address))
    mapped = getattr(address, "ipv4_mapped", None)
    expected = (4, int(mapped)) if mapped is not None else (address.version, int(address))
    assert (parsed.version, parsed.first) == expected
    assert parsed.first == parsed.last
    assert parsed.size == 1
    assert parse_remote_ip_range(str(parsed)) == parsed


@PROPERTY
@given(st.data())
def test_any_cidr_normalises_to_its_network(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    address = data.draw(st.ip_addresses(v=version))
    prefix = data.draw(st.integers(min_value=0, max_value=bits))
    parsed = parse_remote_ip_range(f"{address}/{prefix}")
    block = 2 ** (bits - prefix)
    assert parsed.version == version
    assert parsed.size == block
    assert parsed.first % block == 0
    assert parsed.last == parsed.first + block - 1
    assert parsed.contains(version, int(address))
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    assert (parsed.first, parsed.last) == (int(network.network_address), int(network.broadcast_address))
    assert str(parsed).endswith(f"/{prefix}")
    assert parse_remote_ip_range(str(parsed)) == parsed


MAPPED = int(ipaddress.IPv6Address("::ffff:0.0.0.0"))


@PROPERTY
@given(st.data())
def test_any_ordered_range_round_trips(data: st.DataObject) -> None:
    version = data.draw(st.sampled_from([4, 6]))
    top = 2**32 - 1 if version == 4 else 2**128 - 1
    a = data.draw(st.integers(min_value=0, max_value=top))
    b = data.draw(st.integers(min_value=a, max_value=top))
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    text = f"{cls(a)}-{cls(b)}"
    parsed = parse_remote_ip_range(text)
    if version == 6 and all(cls(end).ipv4_mapped is not None for end in (a, b)):
        # Both ends IPv4-mapped: the IPv4 range dual-stack sockets report those clients in.
        assert (parsed.version, parsed.first, parsed.last) == (4, a - MAPPED, b - MAPPED)
        return
    assert (parsed.version, parsed.first, parsed.last) == (version, a, b)
    assert parsed.size == b - a + 1
    assert str(parsed) == text
    assert parse_remote_ip_range(str(parsed)) == parsed
    if a < b:
        with pytest.raises(AddressError):
            parse_remote_ip_range(f"{cls(b)}-{cls(a)}")


# --------------------------------------------------------------------------- bindings

@pytest.mark.parametrize(
    ("text", "version", "address", "port", "wildcard", "host"),
    [
        ("0.0.0.0:25", 4, None, 25, True, "0.0.0.0"),
        ("192.168.1.1:2525", 4, ip("192.168.1.1"), 2525, False, "192.168.1.1"),
        ("[::]:25", 6, None, 25, True, "::"),
        ("[2001:db8::1]:587", 6, ip("2001:db8::1"), 587, False, "2001:db8::1"),
        ("10.0.0.1:1", 4, ip("10.0.0.1"), 1, False, "10.0.0.1"),
        ("10.0.0.1:65535", 4, ip("10.0.0.1"), 65535, False, "10.0.0.1"),
    ],
)
def test_binding_forms(
    text: str, version: int, address: int | None, port: int, wildcard: bool, host: str
) -> None:
    binding = parse_binding(text)
    assert binding == Binding(version, address, port)
    assert binding.is_wildcard is wildcard
    assert binding.host == host
    assert str(binding) == text
    assert parse_binding(str(binding)) == binding


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("  0.0.0.0:25  ", "0.0.0.0:25"),
        ("[2001:DB8:0::1]:587", "[2001:db8::1]:587"),
        ("[0:0:0:0:0:0:0:0]:25", "[::]:25"),
    ],
)
def test_binding_renders_normalised(text: str, rendered: str) -> None:
    assert str(parse_binding(text)) == rendered


def test_wildcard_bindings_are_per_family() -> None:
    v4, v6 = parse_binding("0.0.0.0:25"), parse_binding("[::]:25")
    assert (v4.version, v6.version) == (4, 6)
    assert v4 != v6
    assert v4.covers(4, ip("10.0.0.1"), 25)
    assert not v4.covers(6, ip("2001:db8::1"), 25)
    assert v6.covers(6, ip("2001:db8::1"), 25)
    assert not v4.covers(4, ip("10.0.0.1"), 587)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("0.0.0.0:0", "0.0.0.0:0"),
        ("192.168.1.1:65536", "192.168.1.1:65536"),
        ("[::]:0", "[::]:0"),
        ("[2001:db8::1]:70000", "[2001:db8::1]:70000"),
        ("192.168.1.1:-1", "192.168.1.1:-1"),
        ("192.168.1.1:smtp", "192.168.1.1:smtp"),
        ("192.168.1.1:", "192.168.1.1:"),
        ("[::]:", "[::]:"),
        ("192.168.1.1", "192.168.1.1"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        ("[2001:db8::1]587", "[2001:db8::1]587"),
        ("2001:db8::1:25", "2001:db8::1:25"),
        (":::25", ":::25"),
        ("[::ffff:192.168.1.1]:25", "[::ffff:192.168.1.1]:25"),
        ("300.1.1.1:25", "300.1.1.1"),
        ("mail.example.com:25", "mail.example.com"),
        ("[2001:db8:::1]:25", "2001:db8:::1"),
    ],
)
def test_binding_errors_name_the_value(text: str, named: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_binding(text)
    assert repr(named) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0.0.0.0:0", "ports run from 1 to 65535"),
        ("0.0.0.0:65536", "ports run from 1 to 65535"),
        ("0.0.0.0:smtp", "not a number"),
        ("2001:db8::1:25", "[IPv6]:port"),
        ("[2001:db8::1]", "[IPv6]:port"),
        ("[::ffff:10.0.0.1]:25", "IPv4-mapped"),
    ],
)
def test_binding_error_says_what_is_wrong(text: str, fragment: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_binding(text)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("text", ["0.0.0.0:2_5", "[::]:5_87"])
def test_binding_port_with_digit_separator_is_not_a_number(text: str) -> None:
    # "2_5" is not a TCP port; Python's int() accepts it, the parser must not.
    with pytest.raises(AddressError) as caught:
        parse_binding(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize("value", [None, 25, ("0.0.0.0", 25)])
def test_binding_must_be_a_string(value: object) -> None:
    with pytest.raises(AddressError) as caught:
        parse_binding(value)  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)


# --------------------------------------------------------------------------- client addresses

@pytest.mark.parametrize(
    ("text", "version", "value"),
    [
        ("192.168.5.10", 4, ip("192.168.5.10")),
        ("::ffff:192.168.5.10", 4, ip("192.168.5.10")),
        ("::FFFF:c0a8:050a", 4, ip("192.168.5.10")),
        ("::ffff:0.0.0.0", 4, 0),
        ("2001:db8::1", 6, ip("2001:db8::1")),
        ("::1", 6, 1),
        ("::192.168.5.10", 6, ip("::192.168.5.10")),  # IPv4-compatible, not mapped: stays IPv6
        ("fe80::1%eth0", 6, ip("fe80::1")),
        ("[2001:db8::1]", 6, ip("2001:db8::1")),
    ],
)
def test_client_address(text: str, version: int, value: int) -> None:
    assert client_address(text) == (version, value)


def test_mapped_client_equals_plain_ipv4_client() -> None:
    assert client_address("::ffff:10.1.2.3") == client_address("10.1.2.3")
    assert client_address("::ffff:10.1.2.3") != (6, ip("::ffff:10.1.2.3"))


@pytest.mark.parametrize("text", ["", "10.0.0.256", "host.example", "10.0.0.1%11"])
def test_client_address_errors(text: str) -> None:
    with pytest.raises(AddressError) as caught:
        client_address(text)
    assert repr(text) in str(caught.value)


@PROPERTY
@given(st.ip_addresses(v=4))
def test_any_mapped_client_counts_as_ipv4(address: ipaddress.IPv4Address) -> None:
    assert client_address(f"::ffff:{address}") == (4, int(address))
    assert client_address(str(address)) == (4, int(address))


def test_ranges_touching_the_ipv4_mapped_block() -> None:
    """Found by the property above: both ends IPv4-mapped is an IPv4 range (how dual-stack sockets
    report those clients); one end inside the block and one outside is an IPv6 range as written."""
    both = parse_remote_ip_range("::ffff:10.0.0.1-::ffff:10.0.0.5")
    assert (both.version, str(both)) == (4, "10.0.0.1-10.0.0.5")
    across = parse_remote_ip_range("::-::ffff:0:0")
    assert (across.version, across.first, across.last) == (6, 0, MAPPED)
    assert parse_remote_ip_range(str(across)) == across
    with pytest.raises(AddressError, match="mixes IPv4 and IPv6 ends"):
        parse_remote_ip_range("10.0.0.1-::1")
