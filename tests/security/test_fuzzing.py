"""Property-based fuzzing of what an attacker or a careless operator controls.

- the connector address syntax (``parse_remote_ip_range``, ``parse_binding``): any text is refused
  with ``AddressError`` and nothing else, and whatever is accepted renders back to itself;
- the configuration reader (``config_from_mapping``) on generated connectors with random values:
  only ``ConfigError`` ever comes out;
- the MAIL FROM / RCPT TO argument pipeline (``split_path_argument`` then ``parse_path``): only their
  own errors;
- ``RelaySession`` driven by random command sequences over a sample-like policy: every reply is a
  well-formed ``Decision``, no exception escapes, and a recipient outside contoso.com is never
  accepted unless the client may relay.

The number of examples comes from ``RELAYAUTH_FUZZ_EXAMPLES`` (default 200: a few seconds, for CI).
For a longer run: ``RELAYAUTH_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/security/test_fuzzing.py``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from salmon_relayauth import (
    AddressError,
    AddressSyntaxError,
    ConfigError,
    ConfigProblem,
    ConnectionInfo,
    Decision,
    RelayConfig,
    RelayPolicy,
    RelaySession,
    config_from_mapping,
    load_policy,
    make_plugin_manager,
    parse_binding,
    parse_path,
    parse_remote_ip_range,
)
from salmon_relayauth.config.fields import CONNECTOR_FIELDS
from salmon_relayauth.listener.arguments import ArgumentError, split_path_argument

# --------------------------------------------------------------------------- settings profile

EXAMPLES = int(os.environ.get("RELAYAUTH_FUZZ_EXAMPLES", "200"))
settings.register_profile(
    "relayauth-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("relayauth-fuzz")

SAMPLE = Path(__file__).resolve().parent.parent / "configs" / "exchange_example.toml"

# --------------------------------------------------------------------------- text strategies

IP_ALPHABET = "0123456789abcdefABCDEFxX:.-/%[]  \t,"


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    """Apply (operation, position, character) edits: 0 replace, 1 insert, 2 delete."""
    chars = list(text)
    for operation, position, char in edits:
        if not chars:
            chars.append(char)
            continue
        index = position % len(chars)
        if operation == 0:
            chars[index] = char
        elif operation == 1:
            chars.insert(index, char)
        else:
            del chars[index]
    return "".join(chars)


edits = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 200), st.one_of(st.sampled_from(IP_ALPHABET), st.characters())),
    max_size=4,
)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
any_ip = st.one_of(ipv4, ipv6, st.sampled_from(["0.0.0.0", "::", "::1", "::ffff:192.168.5.10", "fe80::1%11"]))
valid_ranges = st.one_of(
    any_ip,
    st.builds(lambda a, p: f"{a}/{p}", any_ip, st.integers(0, 128)),
    st.builds(lambda a, b: f"{a}-{b}", any_ip, any_ip),
)
range_texts = st.one_of(
    st.text(),
    st.text(alphabet=IP_ALPHABET, max_size=45),
    valid_ranges,
    st.builds(_mutate, valid_ranges, edits),
    st.builds(lambda r: f"  {r}\t", valid_ranges),
    st.builds(lambda a, p: f"{a}/{p}", any_ip, st.text(max_size=4)),
)
valid_bindings = st.one_of(
    st.builds(lambda a, p: f"{a}:{p}", ipv4, st.integers(-1, 70000)),
    st.builds(lambda a, p: f"[{a}]:{p}", st.one_of(ipv6, ipv4), st.integers(-1, 70000)),
    st.sampled_from(["0.0.0.0:25", "[::]:25", "[::1]:2525", "[fe80::1%eth0]:25", "127.0.0.1:0"]),
)
binding_texts = st.one_of(
    st.text(),
    st.text(alphabet=IP_ALPHABET, max_size=45),
    valid_bindings,
    st.builds(_mutate, valid_bindings, edits),
)
non_text = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.binary(max_size=8), st.lists(st.text(max_size=5), max_size=2))


def _bits(version: int) -> int:
    return 32 if version == 4 else 128


# --------------------------------------------------------------------------- remote ranges and bindings


@FUZZ
@given(text=st.one_of(range_texts, non_text))
@example(text="::ffff:10.0.0.0/104")
@example(text="1.2.3.4-1.2.3.4")
@example(text="10.0.0.0/٨")
def test_remote_ip_range_any_input_raises_only_address_error_and_round_trips(text: object) -> None:
    try:
        parsed = parse_remote_ip_range(text)  # type: ignore[arg-type]
    except AddressError as error:
        assert type(error) is AddressError
        assert str(error), "a refusal must say what is wrong"
        return
    assert isinstance(text, str)
    assert parsed.version in (4, 6)
    assert 0 <= parsed.first <= parsed.last < 2 ** _bits(parsed.version)
    rendered = str(parsed)
    assert rendered == rendered.strip() and rendered.isascii()
    again = parse_remote_ip_range(rendered)
    assert again == parsed, f"{text!r} -> {rendered!r} -> {again}"
    assert str(again) == rendered
    # the range contains exactly its own ends
    assert parsed.contains(parsed.version, parsed.first) and parsed.contains(parsed.version, parsed.last)
    assert not parsed.contains(parsed.version, parsed.last + 1)


@FUZZ
@given(text=st.one_of(binding_texts, non_text))
@example(text="[[::1]]:25")
@example(text="[1.2.3.4]:25")
@example(text="0.0.0.0:0025")
def test_binding_any_input_raises_only_address_error_and_round_trips(text: object) -> None:
    try:
        binding = parse_binding(text)  # type: ignore[arg-type]
    except AddressError as error:
        assert type(error) is AddressError
        assert str(error)
        return
    assert isinstance(text, str)
    assert 1 <= binding.port <= 65535
    assert binding.version in (4, 6)
    if binding.address is not None:
        assert 0 < binding.address < 2 ** _bits(binding.version)
    rendered = str(binding)
    again = parse_binding(rendered)
    assert again == binding, f"{text!r} -> {rendered!r} -> {again}"
    assert str(again) == rendered
    # what a socket would be bound to is a plain address of the binding's family
    assert ipaddress.ip_address(binding.host).version == binding.version


# --------------------------------------------------------------------------- config_from_mapping

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.text(max_size=30),
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=8,
)
# what a Python caller may also pass: the mapping is not necessarily from TOML
python_values = st.one_of(toml_values, st.none(), st.just(timedelta(minutes=5)), st.just(timedelta(days=-1)))

timespan_texts = st.one_of(
    st.builds(
        lambda d, h, m, s, f: (f"{d}." if d is not None else "") + f"{h:02d}:{m:02d}:{s:02d}" + (f".{f}" if f else ""),
        st.one_of(st.none(), st.integers(0, 10**12)),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.one_of(st.none(), st.integers(0, 9999999)),
    ),
    st.sampled_from(["00:10:00", "1.00:00:00", "Unlimited", "-00:00:01", "00:00:00"]),
)
size_texts = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.one_of(st.integers(0, 10**15), st.floats(0, 1e6)), st.sampled_from(["", "B", "KB", "MB", "GB", "TB", " mb", "PB"])),
    st.builds(lambda n: f"36 MB ({n} bytes)", st.text(alphabet="0123456789,", max_size=14)),
)
limits = st.one_of(st.integers(-10, 2**40), st.sampled_from(["Unlimited", "unlimited", " UNLIMITED ", "none"]))
booleans = st.one_of(st.booleans(), st.sampled_from(["true", "$false", "yes", "0", "1"]))


def _enum_values(*names: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(names), st.text(max_size=12))


FIELD_VALUES: dict[str, st.SearchStrategy[object]] = {
    "usage": _enum_values("Custom", "Internet", "Client", "Internal", "Partner"),
    "transport_role": _enum_values("FrontendTransport", "HubTransport"),
    "bindings": st.one_of(st.lists(binding_texts, max_size=3), binding_texts),
    "remote_ip_ranges": st.one_of(st.lists(range_texts, max_size=4), range_texts),
    "throttling_exemptions": st.one_of(st.lists(range_texts, max_size=2), range_texts),
    "auth_mechanism": st.one_of(
        st.lists(_enum_values("None", "Tls", "BasicAuth", "BasicAuthRequireTLS", "ExternalAuthoritative", "Integrated"), max_size=3),
        st.just("Tls,BasicAuth"),
    ),
    "permission_groups": st.one_of(
        st.lists(_enum_values("None", "AnonymousUsers", "ExchangeUsers", "ExchangeServers", "Partners", "Custom"), max_size=3),
        st.just("AnonymousUsers, ExchangeUsers"),
    ),
    "banner": st.one_of(st.just("220 relay.contoso.com"), st.text(max_size=20).map(lambda t: "220 " + t)),
    "fqdn": st.one_of(st.just("relay.contoso.com"), st.text(max_size=20)),
}
for _field in CONNECTOR_FIELDS:
    if _field in FIELD_VALUES:
        continue
    if _field.endswith(("_interval", "_timeout")):
        FIELD_VALUES[_field] = st.one_of(timespan_texts, st.integers(-5, 10**13), st.floats())
    elif _field.endswith("_size"):
        FIELD_VALUES[_field] = st.one_of(size_texts, st.integers(-5, 2**40))
    elif _field.startswith("max_") or _field.endswith(("_limit", "_prefix")):
        FIELD_VALUES[_field] = limits
    elif _field.endswith(("_enabled", "_domains")) or _field in ("enabled", "require_tls", "require_ehlo_domain", "throttling_shadow", "acknowledge_open_relay"):
        FIELD_VALUES[_field] = booleans
for _field in CONNECTOR_FIELDS:  # every field may also get a value of the wrong kind
    FIELD_VALUES[_field] = st.one_of(FIELD_VALUES.get(_field, st.nothing()), python_values)

permission_entries = st.fixed_dictionaries(
    {},
    optional={
        "user": st.one_of(st.sampled_from(["NT AUTHORITY\\ANONYMOUS LOGON", "nt authority\\anonymous logon", "alice"]), python_values),
        "extended_rights": st.one_of(
            st.lists(st.sampled_from(["ms-Exch-SMTP-Accept-Any-Recipient", "ms-Exch-SMTP-Submit", "ms-Exch-Accept-Exch50"]), max_size=2),
            python_values,
        ),
        "deny": st.one_of(st.booleans(), python_values),
        "rights": python_values,
    },
)
# wild connectors: any subset of the keys, each with a plausible or a random value, plus unknown keys
wild_connectors = st.builds(
    lambda fixed, extra: {**extra, **fixed},
    st.fixed_dictionaries(
        {"name": st.one_of(st.sampled_from(["Relay", "relay", "Default Frontend", ""]), st.text(max_size=70), python_values)},
        optional={
            **FIELD_VALUES,
            "permissions": st.one_of(st.lists(st.one_of(permission_entries, python_values), max_size=2), python_values),
        },
    ),
    st.dictionaries(st.text(max_size=10), python_values, max_size=2),
)
# near-valid connectors: a working connector with a few keys replaced, so that many configurations
# get through the reader and on to validation and the plugins' checks
near_valid_connectors = st.builds(
    lambda name, port, ranges, changes, relay: {
        "name": name,
        "bindings": [f"0.0.0.0:{port}"],
        "remote_ip_ranges": ranges,
        "permission_groups": ["AnonymousUsers"],
        **({"permissions": [{"user": "NT AUTHORITY\\ANONYMOUS LOGON", "extended_rights": ["ms-Exch-SMTP-Accept-Any-Recipient"]}]} if relay else {}),
        **changes,
    },
    st.one_of(st.sampled_from(["Relay", "Printers", "Apps"]), st.text(min_size=1, max_size=12)),
    st.sampled_from([25, 2525, 2526]),
    st.lists(
        st.one_of(*[st.sampled_from(["192.168.5.10", "10.1.0.0/16", "192.168.6.1-192.168.6.20", "fd00::/64", "0.0.0.0/0"])] * 3, range_texts),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({key: FIELD_VALUES[key] for key in keys})
    ),
    st.booleans(),
)
connector_mappings = st.one_of(near_valid_connectors, wild_connectors)


def _table(keys: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[object]:
    """A server-wide table: some of its keys with plausible or random values, or not a table at all."""
    return st.one_of(st.fixed_dictionaries({}, optional={k: st.one_of(v, python_values) for k, v in keys.items()}), python_values)


top_level_mappings = st.fixed_dictionaries(
    {
        "connectors": st.one_of(
            st.lists(near_valid_connectors, min_size=1, max_size=3),
            st.lists(connector_mappings, min_size=1, max_size=3),
            python_values,
        )
    },
    optional={
        "server": _table({"fqdn": st.just("relay.contoso.com")}),
        "accepted_domains": st.one_of(
            st.lists(_table({"domain": st.sampled_from(["contoso.com", "*.contoso.com", "*"]), "type": st.sampled_from(["Authoritative", "InternalRelay"])}), max_size=2),
            python_values,
        ),
        "smarthost": _table({"host": st.just("127.0.0.1"), "port": st.integers(-1, 70000), "starttls": st.booleans()}),
        "queue": _table({key: timespan_texts for key in ("retry_interval", "max_retry_interval", "message_expiration")} | {"fsync": st.booleans(), "directory": st.text(max_size=5)}),
        "proxy_protocol": _table({"trusted_proxies": st.lists(range_texts, max_size=2), "timeout": timespan_texts}),
        "throttling": _table({"backend": st.sampled_from(["memory", "redis"]), "redis_url": st.just("redis://localhost"), "key_prefix": st.text(max_size=5)}),
        "plugins": _table({"disabled": st.lists(st.sampled_from(["relayauth.open_relay", "relayauth.nothing"]), max_size=1)}),
        "tls": _table({"certificate": st.text(max_size=5), "key": st.text(max_size=5)}),
        "authentication": _table({"users_file": st.text(max_size=5)}),
    },
)
BASE_DIR = Path(tempfile.gettempdir()) / "relayauth-fuzz-never-created"
PLUGINS = make_plugin_manager(load_entrypoints=False)


@FUZZ
@given(data=top_level_mappings)
@example(data={"connectors": [{"name": "Relay", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["10.0.0.1"], "connection_timeout": "1000000000.00:00:00"}]})
@example(data={"connectors": [{"name": "Relay", "bindings": ["0.0.0.0:25"], "remote_ip_ranges": ["10.0.0.1"]}], "queue": {"retry_interval": "99999999999.00:00:00"}})
def test_config_from_mapping_raises_only_config_error(data: dict[str, object]) -> None:
    try:
        config = config_from_mapping(data, source="<fuzz>", base_dir=BASE_DIR)
    except ConfigError as error:
        assert error.errors, "a refused configuration lists at least one error"
        for problem in error.problems:
            assert isinstance(problem, ConfigProblem)
            assert problem.source == "<fuzz>"
            assert problem.message
        return
    assert isinstance(config, RelayConfig)
    assert config.connectors
    # what was accepted goes on through the plugins' checks (open relay, users file) without crashing
    problems = RelayPolicy(config, PLUGINS).plugin_problems()
    assert all(isinstance(problem, ConfigProblem) for problem in problems)
    assert not BASE_DIR.exists(), "reading a configuration must not create directories"


# --------------------------------------------------------------------------- MAIL / RCPT arguments

local_parts = st.one_of(
    st.sampled_from(["chris", "a.b", "user%fabrikam.com", "fabrikam.com!user", '"john doe"', '"a@b"', '"x\\"y"', "", ".x", "x..y"]),
    st.text(alphabet="abcxyz.%!\"\\@ -_+", max_size=12),
)
domains = st.one_of(
    st.sampled_from(
        [
            "contoso.com", "CONTOSO.COM", "contoso.com.", "contoso.com..", "sub.contoso.com", "contoso.com.evil.example",
            "fabrikam.com", "[192.0.2.1]", "[IPv6:2001:db8::1]", "192.0.2.1", "localhost", "xn--contoso-9la.com", "",
        ]
    ),
    st.text(alphabet="abc.-[]:0123456789", max_size=15),
)
addresses = st.builds(
    lambda route, local, domain, bracket, pad: pad + ("<" if bracket else "") + route + f"{local}@{domain}" + (">" if bracket else "") + pad,
    st.sampled_from(["", "", "@relay.example:", "@a.example,@b.example:", "@[1.2.3.4]:", "@:"]),
    local_parts,
    domains,
    st.booleans(),
    st.sampled_from(["", " "]),
)
well_formed = st.sampled_from(
    [
        "<>", "<app@contoso.com>", "printer@fabrikam.com", "<kate@contoso.com>", "<Kate@CONTOSO.com.>",
        "<u@fabrikam.com>", "<u@sub.contoso.com>", "<u%fabrikam.com@contoso.com>", "<fabrikam.com!u@contoso.com>",
        "<@contoso.com:u@fabrikam.com>", "<@fabrikam.com:u@contoso.com>", '<"u@fabrikam.com"@contoso.com>',
        '<"john doe"@contoso.com>', "<u@[192.0.2.1]>", "<u@contoso.com.fabrikam.com>", "<u@xn--contoso-9la.com>",
    ]
)
path_texts = st.one_of(
    well_formed, addresses, st.text(max_size=60), st.sampled_from(["<", ">", "<<>>", "Postmaster", "<postmaster>"])
)
parameters = st.one_of(
    st.just(""),
    st.builds(lambda n: f" SIZE={n}", st.one_of(st.integers(0, 10**12).map(str), st.text(max_size=5))),
    st.sampled_from([" BODY=8BITMIME", " BODY=BINARY", " SMTPUTF8", " =x", " X-Y=", "SIZE=1"]),
    st.text(max_size=15),
)
command_lines = st.one_of(
    st.builds(lambda kw, sep, path, params: f"{kw}{sep}{path}{params}", st.sampled_from(["FROM", "from", "TO", " To", "FRM"]), st.sampled_from([":", ": ", ":  ", "", " :"]), path_texts, parameters),
    st.text(max_size=80),
    st.none(),
)


@FUZZ
@given(line=command_lines, keyword=st.sampled_from(["FROM", "TO"]), allow_null=st.booleans())
@example(line='FROM:<"a>b"@contoso.com> SIZE=10', keyword="FROM", allow_null=True)
@example(line="TO:<a@contoso.com>SIZE=1", keyword="TO", allow_null=False)
def test_mail_and_rcpt_arguments_raise_only_their_own_errors(line: str | None, keyword: str, allow_null: bool) -> None:
    try:
        argument = split_path_argument(line, keyword)
    except ArgumentError as error:
        assert type(error) is ArgumentError
        assert str(error)
        return
    assert line is not None
    assert argument.path and argument.path in line
    assert not argument.path.startswith(" ")
    for name in argument.parameters:
        assert name == name.upper() and name and " " not in name
    try:
        path = parse_path(argument.path, allow_null=allow_null)
    except AddressSyntaxError as error:
        message = str(error)
        assert message and message.isascii() and message.isprintable()
        return
    assert path.is_null or "@" in path.address
    assert "\r" not in path.address and "\n" not in path.address


# --------------------------------------------------------------------------- RelaySession

# The relay connector of the sample: these clients may relay anonymously, nobody else.
RELAY_CLIENTS = [
    ipaddress.ip_network("192.168.5.10/32"),
    ipaddress.ip_network("192.168.5.11/32"),
    ipaddress.ip_network("10.1.0.0/16"),
    *ipaddress.summarize_address_range(ipaddress.ip_address("192.168.6.1"), ipaddress.ip_address("192.168.6.20")),
]
USER, PASSWORD = "alice", "correct horse battery staple"


def may_relay(client: str) -> bool:
    address = ipaddress.ip_address(client)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in RELAY_CLIENTS)


def clearly_in_contoso(address: str) -> bool:
    """Independent of the relay's parser: the forwarded address can only reach contoso.com."""
    local, at, domain = address.rpartition("@")
    if not at or domain.lower() != "contoso.com":
        return False
    if local.startswith('"') and local.endswith('"') and len(local) >= 2:
        return not any(char in local[1:-1] for char in "@%!")
    return not any(char in local for char in '@%!"')


def _users_file_line(name: str, password: str) -> str:
    """A users-file entry with a cheap scrypt cost, so that AUTH can run hundreds of times."""
    salt = b"relayauth-fuzz-salt"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=16, r=1, p=1, dklen=32)
    return f"{name}:scrypt$16$1$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n"


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RelayPolicy]:
    """The sample configuration as shipped, and the same with AUTH on the default connector
    (authenticated users may relay there: ExchangeUsers)."""
    directory = tmp_path_factory.mktemp("fuzz-policy")
    (directory / "users").write_text(_users_file_line(USER, PASSWORD))
    text = SAMPLE.read_text(encoding="utf-8")
    frontend = 'remote_ip_ranges = ["0.0.0.0-255.255.255.255"]\npermission_groups = ["AnonymousUsers"]\n'
    assert text.count(frontend) == 1, "the sample's Default Frontend changed: update this fixture"
    with_auth = text.replace(
        frontend,
        'remote_ip_ranges = ["0.0.0.0-255.255.255.255"]\n'
        'permission_groups = ["AnonymousUsers", "ExchangeUsers"]\nauth_mechanism = ["Tls", "BasicAuth"]\n',
    )
    with_auth += '\n[authentication]\nusers_file = "users"\n'
    (directory / "relay.toml").write_text(with_auth, encoding="utf-8")
    return {"sample": load_policy(SAMPLE), "sample+auth": load_policy(directory / "relay.toml")}


clients = st.one_of(
    st.sampled_from(["192.168.5.10", "192.168.5.11", "10.1.200.3", "192.168.6.1", "192.168.6.20", "::ffff:192.168.5.10"]),
    st.sampled_from(["192.168.5.12", "192.168.6.21", "10.2.0.1", "8.8.8.8", "203.0.113.7", "::ffff:8.8.8.8", "127.0.0.1"]),
    st.sampled_from(["2001:db8::5", "::1", "::ffff:0:0"]),  # no connector takes IPv6 clients
    st.ip_addresses(v=4).map(str),
)
messages = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda headers, body: ("".join(headers) + "\r\n" + body).encode("utf-8"),
        st.lists(
            st.sampled_from(
                [
                    "Subject: hi\r\n", "Received: from a\r\n", "X-MS-Exchange-Organization-AuthAs: Internal\r\n",
                    "X-MS-Exchange-Forest-RulesExecuted: x\r\n", "From: a@contoso.com\r\n", "Bcc: x@fabrikam.com\r\n",
                    "Header-Without-Colon\r\n", " folded continuation\r\n",
                ]
            ),
            max_size=30,
        ),
        st.text(max_size=50),
    ),
)
hello = st.tuples(st.sampled_from(["HELO", "EHLO"]), st.one_of(st.text(max_size=20), st.just("client.example")))
mail = st.tuples(st.just("MAIL"), st.one_of(well_formed, path_texts), st.one_of(st.just(""), parameters), st.booleans())
rcpt = st.tuples(st.just("RCPT"), st.one_of(well_formed, well_formed, path_texts), st.one_of(st.just(""), st.just(""), parameters), st.booleans())
data = st.tuples(st.just("DATA"), messages)
rset = st.tuples(st.just("RSET"))
auth = st.tuples(
    st.just("AUTH"),
    st.one_of(st.sampled_from([USER, USER.upper(), "bob", "NT AUTHORITY\\ANONYMOUS LOGON"]), st.text(max_size=10)),
    st.one_of(st.sampled_from([PASSWORD, "wrong"]), st.text(max_size=10)),
)
any_command = st.one_of(hello, mail, rcpt, data, rset, auth)
# a transaction in the usual order (with a well-formed sender), so that random sessions get past
# MAIL and spend their time on RCPT
transaction = st.builds(
    lambda start, first, recipients, end: [*start, first, *recipients, *end],
    st.sampled_from([[], [("RSET",)]]),
    st.tuples(st.just("MAIL"), well_formed, st.sampled_from(["", " SIZE=1000", " BODY=8BITMIME"]), st.booleans()),
    st.lists(rcpt, min_size=1, max_size=6),
    st.one_of(data.map(lambda d: [d]), rset.map(lambda r: [r]), st.just([])),
)
scripts = st.lists(st.one_of(transaction, any_command.map(lambda c: [c])), max_size=8).map(
    lambda parts: [command for part in parts for command in part]
)


def check_reply(decision: object) -> Decision:
    assert isinstance(decision, Decision), decision
    assert 200 <= decision.code <= 599
    for text in (decision.text, decision.status, decision.render(), decision.render(False)):
        assert "\r" not in text and "\n" not in text, repr(text)
    return decision


def run_command(session: RelaySession, command: tuple[Any, ...]) -> Decision | None:
    """One command, split the way the listener splits it (or handed over raw)."""
    verb = command[0]
    if verb in ("HELO", "EHLO"):
        return session.helo(command[1], extended=verb == "EHLO")
    if verb in ("MAIL", "RCPT"):
        _, path_text, params, through_listener = command
        keyword = "FROM" if verb == "MAIL" else "TO"
        path, size = path_text, None
        if through_listener:
            try:
                argument = split_path_argument(f"{keyword}:{path_text}{params}", keyword)
            except ArgumentError:
                return None  # the listener answers this itself, the session never sees it
            path = argument.path
            raw_size = argument.parameters.get("SIZE")
            if raw_size is not None and raw_size.isascii() and raw_size.isdigit():
                size = int(raw_size)
        return session.mail(path, size) if verb == "MAIL" else session.rcpt(path)
    if verb == "DATA":
        decision = check_reply(session.data())
        if decision.code != 354:
            return decision
        verdict = session.message(command[1])
        session.reset()  # the listener starts a new transaction after the end of data
        return verdict.decision
    if verb == "RSET":
        session.reset()
        assert session.sender is None and session.recipients == []
        return None
    return session.authenticate(command[1], command[2])


@FUZZ
@given(
    which=st.sampled_from(["sample", "sample+auth"]),
    client=clients,
    local_port=st.sampled_from([2525] * 7 + [25]),
    greet=st.sampled_from([True] * 7 + [False]),
    script=scripts,
)
@example(
    which="sample", client="8.8.8.8", local_port=2525, greet=True,
    script=[("MAIL", "<>", "", False), ("RCPT", "<user%fabrikam.com@contoso.com>", "", False), ("RCPT", "<@contoso.com:u@fabrikam.com>", "", True)],
)
@example(
    which="sample+auth", client="8.8.8.8", local_port=2525, greet=True,
    script=[("AUTH", USER, PASSWORD), ("MAIL", "<>", "", False), ("RCPT", "<u@fabrikam.com>", "", False)],
)
def test_relay_session_under_random_commands(
    policies: dict[str, RelayPolicy], which: str, client: str, local_port: int, greet: bool, script: list[tuple[Any, ...]]
) -> None:
    policy = policies[which]
    session = RelaySession(policy, ConnectionInfo("10.1.1.1", local_port, client, 40000))
    opened = check_reply(session.open())
    if opened.code != 220:
        assert opened.code == 421
        address = ipaddress.ip_address(client)
        no_connector = local_port != 2525 or (address.version == 6 and address.ipv4_mapped is None)
        assert no_connector, f"{client} on port {local_port} was refused: {opened}"
        return  # the listener closes the connection after 421
    assert local_port == 2525
    if greet:
        script = [("EHLO", "client.example"), *script]
    authenticated = False
    for command in script:
        before = list(session.recipients)
        decision = run_command(session, command)
        if decision is not None:
            check_reply(decision)
        if command[0] == "AUTH" and decision is not None and decision.code == 235:
            authenticated = True
        if decision is not None:
            event(f"{command[0]} {decision.code}")
        if command[0] == "RCPT" and decision is not None:
            if decision.accepted:
                assert len(session.recipients) == len(before) + 1
            else:
                assert session.recipients == before, "a refused recipient must not be kept"
        if session.recipients:
            assert session.sender is not None, "recipients without a sender"
        allowed = may_relay(client) or (which == "sample+auth" and authenticated)
        if not allowed:
            for recipient in session.recipients:
                assert clearly_in_contoso(recipient.address), (
                    f"client {client} (may not relay) got {recipient.address!r} accepted after {command!r}"
                )
