"""Exchange value spellings: byte sizes, timespans, Unlimited (reference §7.3) and enum parsing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from salmon_relayauth import (
    AcceptedDomainType,
    AuthMechanism,
    PermissionGroup,
    Right,
    Usage,
    parse_enum,
)
from salmon_relayauth.model.units import (
    format_byte_size,
    format_timespan,
    parse_byte_size,
    parse_limit,
    parse_timespan,
)

PROPERTY = settings(max_examples=200, deadline=None)
KB, MB, GB, TB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


# --------------------------------------------------------------------------- byte sizes

@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("36MB", 37748736),
        ("36 MB", 37748736),
        ("36 MB (37,748,736 bytes)", 37748736),
        ("36mb", 37748736),
        ("36Mb", 37748736),
        ("256KB", 262144),
        ("256 kb", 262144),
        ("1GB", 1073741824),
        ("1gb", 1073741824),
        ("2TB", 2 * TB),
        ("65536", 65536),
        ("65536B", 65536),
        ("65536 b", 65536),
        ("  64KB  ", 65536),
        ("0", 0),
        ("0.5KB", 512),
        ("1.5MB", 1572864),
        ("2147483647", 2147483647),
        ("2147483647 B (2,147,483,647 bytes)", 2147483647),
        (65536, 65536),
        (0, 0),
        (2147483647, 2147483647),
    ],
)
def test_parse_byte_size(value: object, size: int) -> None:
    result = parse_byte_size(value)
    assert result == size
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (-1, "-1"),
        ("-1", "'-1'"),
        ("-36MB", "'-36MB'"),
        ("12XB", "'12XB'"),
        ("12 PB", "'12 PB'"),
        ("MB", "'MB'"),
        ("", "''"),
        ("thirty-six MB", "'thirty-six MB'"),
        ("1e3", "'1e3'"),
        ("36MB extra", "'36MB extra'"),
        ("1.5B", "'1.5B'"),
        ("0.1KB", "'0.1KB'"),
        ("1.0000001KB", "'1.0000001KB'"),
        (True, "True"),
        (False, "False"),
        (36.0, "36.0"),
        (None, "None"),
        ([36], "[36]"),
    ],
)
def test_parse_byte_size_errors(value: object, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_byte_size(value)
    assert named in str(caught.value)


def test_fraction_of_a_byte_message() -> None:
    with pytest.raises(ValueError, match="whole number of bytes"):
        parse_byte_size("1.5B")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        # 2**53 + 1 bytes: a float cannot hold it; the parser must not round it
        ("9007199254740993", 9007199254740993),
        ("9007199254740993B", 9007199254740993),
        ("36028797018963971KB", 36028797018963971 * KB),
    ],
)
def test_parse_byte_size_is_exact_for_large_values(value: str, size: int) -> None:
    assert parse_byte_size(value) == size


def test_parse_byte_size_rejects_tiny_fraction_of_a_byte() -> None:
    # 1.0000000000000001 KB is 1024.0000000000001024 bytes: not whole, even though a float rounds it to 1024.
    with pytest.raises(ValueError):
        parse_byte_size("1.0000000000000001KB")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (37748736, "36MB"),
        (262144, "256KB"),
        (65536, "64KB"),
        (1073741824, "1GB"),
        (3 * TB, "3TB"),
        (1536 * KB, "1536KB"),
        (1025, "1025B"),
        (1, "1B"),
        (0, "0B"),
        (2147483647, "2147483647B"),
        (2147483648, "2GB"),
    ],
)
def test_format_byte_size(size: int, text: str) -> None:
    assert format_byte_size(size) == text
    assert parse_byte_size(text) == size


@PROPERTY
@given(
    st.one_of(
        st.integers(min_value=0, max_value=2**50),
        st.builds(lambda n, unit: n * unit, st.integers(min_value=0, max_value=2**20), st.sampled_from([KB, MB, GB, TB])),
    )
)
def test_byte_size_format_parse_round_trip(size: int) -> None:
    text = format_byte_size(size)
    assert parse_byte_size(text) == size
    # the shortest spelling: no larger unit divides the number left in front of the unit
    number = int(text.rstrip("BKMGT"))
    assert parse_byte_size(str(size)) == size
    if size:
        assert number % 1024 != 0 or text.endswith("TB")


# --------------------------------------------------------------------------- timespans

@pytest.mark.parametrize(
    ("value", "span"),
    [
        ("00:05:00", timedelta(minutes=5)),
        ("00:10:00", timedelta(minutes=10)),
        ("00:00:05", timedelta(seconds=5)),
        ("00:00:00", timedelta(0)),
        ("1.00:00:00", timedelta(days=1)),
        ("2.03:04:05", timedelta(days=2, hours=3, minutes=4, seconds=5)),
        ("23:59:59", timedelta(hours=23, minutes=59, seconds=59)),
        ("00:00:05.5", timedelta(seconds=5, milliseconds=500)),
        ("00:00:05.5000000", timedelta(seconds=5, milliseconds=500)),
        ("00:00:00.0000010", timedelta(microseconds=1)),
        ("00:00:01.1234567", timedelta(seconds=1, microseconds=123456)),
        ("0:5:0", timedelta(minutes=5)),
        ("  00:01:00  ", timedelta(minutes=1)),
        (5, timedelta(seconds=5)),
        (0, timedelta(0)),
        (300, timedelta(minutes=5)),
        (1.5, timedelta(seconds=1.5)),
        (timedelta(minutes=7), timedelta(minutes=7)),
    ],
)
def test_parse_timespan(value: object, span: timedelta) -> None:
    assert parse_timespan(value) == span


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("25:00:00", "'25:00:00'"),
        ("24:00:00", "'24:00:00'"),
        ("00:61:00", "'00:61:00'"),
        ("00:60:00", "'00:60:00'"),
        ("00:00:60", "'00:00:60'"),
        ("1.24:00:00", "'1.24:00:00'"),
        ("abc", "'abc'"),
        ("", "''"),
        ("5", "'5'"),
        ("00:05", "'00:05'"),
        ("-00:05:00", "'-00:05:00'"),
        ("00:00:05.12345678", "'00:00:05.12345678'"),
        ("100:00:00", "'100:00:00'"),
        (-1, "-1"),
        (-0.5, "-0.5"),
        (True, "True"),
        (None, "None"),
        ([5], "[5]"),
    ],
)
def test_parse_timespan_errors(value: object, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_timespan(value)
    assert named in str(caught.value)


def test_out_of_range_field_message() -> None:
    with pytest.raises(ValueError, match="hours run to 23, minutes and seconds to 59"):
        parse_timespan("00:61:00")


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (timedelta(minutes=5), "00:05:00"),
        (timedelta(seconds=5), "00:00:05"),
        (timedelta(0), "00:00:00"),
        (timedelta(days=1), "1.00:00:00"),
        (timedelta(days=2, hours=3, minutes=4, seconds=5), "2.03:04:05"),
        (timedelta(hours=23, minutes=59, seconds=59), "23:59:59"),
        (timedelta(seconds=5, milliseconds=500), "00:00:05.5000000"),
        (timedelta(microseconds=1), "00:00:00.0000010"),
    ],
)
def test_format_timespan(span: timedelta, text: str) -> None:
    assert format_timespan(span) == text
    assert parse_timespan(text) == span


def test_format_timespan_exact_for_long_spans_with_microseconds() -> None:
    span = timedelta(days=999999, hours=23, minutes=59, seconds=59, microseconds=999999)
    assert format_timespan(span) == "999999.23:59:59.9999990"


@PROPERTY
@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=10000)))
def test_timespan_format_parse_round_trip(span: timedelta) -> None:
    text = format_timespan(span)
    assert parse_timespan(text) == span


@PROPERTY
@given(
    st.integers(min_value=0, max_value=10000),
    st.integers(min_value=0, max_value=23),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=59),
    st.integers(min_value=0, max_value=999999),
)
def test_timespan_parse_format_round_trip(days: int, hours: int, minutes: int, seconds: int, micros: int) -> None:
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if micros:
        text += f".{micros * 10:07d}"
    if days:
        text = f"{days}.{text}"
    span = parse_timespan(text)
    assert span == timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds, microseconds=micros)
    assert format_timespan(span) == text


# --------------------------------------------------------------------------- Unlimited

@pytest.mark.parametrize(
    ("value", "limit"),
    [("Unlimited", None), ("unlimited", None), ("UNLIMITED", None), (" Unlimited ", None), (5, 5), (0, 0), (2147483647, 2147483647)],
)
def test_parse_limit(value: object, limit: int | None) -> None:
    assert parse_limit(value) == limit


@pytest.mark.parametrize(
    ("value", "named"),
    [("5", "'5'"), (True, "True"), (False, "False"), (5.0, "5.0"), ("Unlimit", "'Unlimit'"), (None, "None"), ("", "''")],
)
def test_parse_limit_errors(value: object, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_limit(value)
    message = str(caught.value)
    assert named in message
    assert "Unlimited" in message


# --------------------------------------------------------------------------- enums

@pytest.mark.parametrize(
    ("kind", "value", "member"),
    [
        (PermissionGroup, "AnonymousUsers", PermissionGroup.ANONYMOUS_USERS),
        (PermissionGroup, "anonymoususers", PermissionGroup.ANONYMOUS_USERS),
        (PermissionGroup, "ANONYMOUSUSERS", PermissionGroup.ANONYMOUS_USERS),
        (PermissionGroup, " ExchangeServers ", PermissionGroup.EXCHANGE_SERVERS),
        (PermissionGroup, "Anonymous", PermissionGroup.ANONYMOUS_USERS),
        (PermissionGroup, "anonymous", PermissionGroup.ANONYMOUS_USERS),
        (PermissionGroup, "Partner", PermissionGroup.PARTNERS),
        (PermissionGroup, "PARTNER", PermissionGroup.PARTNERS),
        (PermissionGroup, "Partners", PermissionGroup.PARTNERS),
        (PermissionGroup, "none", PermissionGroup.NONE),
        (PermissionGroup, PermissionGroup.CUSTOM, PermissionGroup.CUSTOM),
        (Right, "ms-Exch-SMTP-Accept-Exch50", Right.SMTP_ACCEPT_EXCH50),
        (Right, "ms-Exch-Accept-Exch50", Right.SMTP_ACCEPT_EXCH50),
        (Right, "MS-EXCH-ACCEPT-EXCH50", Right.SMTP_ACCEPT_EXCH50),
        (Right, "ms-exch-smtp-accept-any-recipient", Right.SMTP_ACCEPT_ANY_RECIPIENT),
        (Right, "ms-Exch-SMTP-Submit", Right.SMTP_SUBMIT),
        (AuthMechanism, "basicauthrequiretls", AuthMechanism.BASIC_AUTH_REQUIRE_TLS),
        (AuthMechanism, "TLS", AuthMechanism.TLS),
        (AuthMechanism, "ExternalAuthoritative", AuthMechanism.EXTERNAL_AUTHORITATIVE),
        (Usage, "Partner", Usage.PARTNER),
        (AcceptedDomainType, "Internal Relay", AcceptedDomainType.INTERNAL_RELAY),
    ],
)
def test_parse_enum(kind: type, value: object, member: object) -> None:
    assert parse_enum(kind, value) is member


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (PermissionGroup, "Anonymous Users"),
        (PermissionGroup, "Partnerz"),
        (PermissionGroup, ""),
        (PermissionGroup, 1),
        (PermissionGroup, None),
        (PermissionGroup, Usage.PARTNER),
        (Right, "ms-Exch-Accept-Any-Recipient"),
        (Right, "SMTPSubmit"),
        (AuthMechanism, "Basic"),
        (Usage, "Partners"),
        (Usage, "Anonymous"),
    ],
)
def test_parse_enum_errors_list_valid_values(kind: type, value: object) -> None:
    with pytest.raises(ValueError) as caught:
        parse_enum(kind, value)
    message = str(caught.value)
    assert repr(value) in message
    for member in kind:
        assert member.value in message


def test_parse_enum_error_message_exact() -> None:
    with pytest.raises(ValueError) as caught:
        parse_enum(AuthMechanism, "Kerberos")
    assert str(caught.value) == (
        "'Kerberos' is not one of: None, Tls, Integrated, BasicAuth, BasicAuthRequireTLS, "
        "ExchangeServer, ExternalAuthoritative"
    )


@pytest.mark.parametrize("kind", [PermissionGroup, Right, AuthMechanism, Usage, AcceptedDomainType])
def test_parse_enum_accepts_every_value_in_any_case(kind: type) -> None:
    for member in kind:
        assert parse_enum(kind, member.value) is member
        assert parse_enum(kind, member.value.upper()) is member
        assert parse_enum(kind, member.value.lower()) is member
