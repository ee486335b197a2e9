"""Most-specific connector selection: reference §6.4 worked example, bindings, families, no match."""

from __future__ import annotations

import random

import pytest

from salmon_relayauth import ConnectionInfo, ConnectorIndex, RelayPolicy, config_from_mapping, rank_candidates


def connector(name: str, ranges: list[str], bindings: list[str] | None = None, **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "bindings": bindings or ["0.0.0.0:25"],
        "remote_ip_ranges": ranges,
        "permission_groups": ["AnonymousUsers"],
        **extra,
    }


def select(policy: RelayPolicy, client: str, local: str = "10.0.0.1", port: int = 25) -> str | None:
    selection = policy.select_connector(ConnectionInfo(local, port, client))
    return None if selection is None else selection.connector.name


@pytest.fixture
def exchange_example() -> RelayPolicy:
    """The worked example of reference §6.4, all on 'All available IPv4' port 25."""
    return RelayPolicy(
        config_from_mapping(
            {
                "connectors": [
                    connector("Client Frontend Exchange01", ["0.0.0.0-255.255.255.255"]),
                    connector("Custom Connector A", ["192.168.1.0-192.168.1.255"]),
                    connector("Custom Connector B", ["192.168.1.75"]),
                ]
            }
        )
    )


@pytest.mark.parametrize(
    "client, expected",
    [
        ("192.168.1.75", "Custom Connector B"),
        ("192.168.1.100", "Custom Connector A"),
        ("192.168.1.0", "Custom Connector A"),
        ("192.168.1.255", "Custom Connector A"),
        ("192.168.2.1", "Client Frontend Exchange01"),
        ("8.8.8.8", "Client Frontend Exchange01"),
        ("::ffff:192.168.1.75", "Custom Connector B"),
        ("::ffff:192.168.1.76", "Custom Connector A"),
    ],
)
def test_exchange_worked_example(exchange_example: RelayPolicy, client: str, expected: str) -> None:
    assert select(exchange_example, client) == expected


def test_selection_reports_matched_range_binding_and_source(exchange_example: RelayPolicy) -> None:
    selection = exchange_example.select_connector(ConnectionInfo("10.0.0.1", 25, "192.168.1.100"))
    assert selection is not None
    assert str(selection.matched_range) == "192.168.1.0-192.168.1.255"
    assert selection.specific_binding is False
    assert selection.source == "relayauth.selection"


def test_no_connector_on_other_port_or_family(exchange_example: RelayPolicy) -> None:
    assert select(exchange_example, "192.168.1.75", port=2525) is None
    assert select(exchange_example, "2001:db8::1", local="2001:db8::53") is None
    decision = exchange_example.no_connector(ConnectionInfo("10.0.0.1", 2525, "192.168.1.75"))
    assert decision.render() == "421 4.3.2 Service not available, closing transmission channel"
    assert "10.0.0.1:2525" in decision.reason and "192.168.1.75" in decision.reason


def test_specific_binding_beats_wildcard_at_equal_range() -> None:
    policy = RelayPolicy(
        config_from_mapping(
            {
                "connectors": [
                    connector("Wildcard", ["10.0.0.0/8"], ["0.0.0.0:25"]),
                    connector("Internal NIC", ["10.0.0.0/8"], ["127.0.0.2:25"]),
                ]
            }
        )
    )
    assert select(policy, "10.1.2.3", local="127.0.0.2") == "Internal NIC"
    assert select(policy, "10.1.2.3", local="127.0.0.3") == "Wildcard"


def test_smaller_range_on_wildcard_beats_larger_range_on_specific_binding() -> None:
    policy = RelayPolicy(
        config_from_mapping(
            {
                "connectors": [
                    connector("Specific all", ["0.0.0.0-255.255.255.255"], ["127.0.0.2:25"]),
                    connector("Wildcard printers", ["10.9.9.0/28"], ["0.0.0.0:25"]),
                ]
            }
        )
    )
    assert select(policy, "10.9.9.3", local="127.0.0.2") == "Wildcard printers"
    assert select(policy, "10.9.9.30", local="127.0.0.2") == "Specific all"
    assert select(policy, "10.9.9.30", local="127.0.0.3") is None


def test_disabled_connector_is_never_selected() -> None:
    policy = RelayPolicy(
        config_from_mapping(
            {
                "connectors": [
                    connector("Everyone", ["0.0.0.0-255.255.255.255"]),
                    connector("Relay", ["192.168.5.10"], enabled=False),
                ]
            }
        )
    )
    assert select(policy, "192.168.5.10") == "Everyone"


def test_ipv6_ranges_and_bindings() -> None:
    policy = RelayPolicy(
        config_from_mapping(
            {
                "connectors": [
                    connector("All v6", ["::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"], ["[::]:25"]),
                    connector("Site", ["2001:db8::/48"], ["[::]:25"]),
                    connector("Host", ["2001:db8::10"], ["[::]:25"]),
                    connector("V4 only", ["0.0.0.0-255.255.255.255"], ["0.0.0.0:25"]),
                ]
            }
        )
    )
    assert select(policy, "2001:db8::10", local="::1") == "Host"
    assert select(policy, "2001:db8:0:5::1", local="::1") == "Site"
    assert select(policy, "2001:db9::1", local="::1") == "All v6"
    assert select(policy, "192.0.2.1", local="127.0.0.1") == "V4 only"
    # An IPv4 client mapped into IPv6 is an IPv4 client: IPv6 ranges never match it.
    assert select(policy, "::ffff:192.0.2.1", local="::ffff:127.0.0.1") == "V4 only"


def test_index_agrees_with_plain_scan_on_random_nested_ranges() -> None:
    """Random valid configs: the index and the ranked scan pick the same connector everywhere."""
    generator = random.Random(7)
    blocks = []
    for position in range(60):
        base = generator.randrange(0, 1 << 24) << 8
        prefix = generator.choice([24, 26, 28, 30, 32])
        blocks.append((position, base, prefix))
    connectors = [connector("Catch-all", ["0.0.0.0-255.255.255.255"], ["0.0.0.0:25"])]
    used: list[tuple[int, int]] = []
    for position, base, prefix in blocks:
        first, last = base, base + (1 << (32 - prefix)) - 1
        if any(not (last < a or b < first) for a, b in used):
            continue  # keep ranges disjoint across connectors so the config is valid
        used.append((first, last))
        address = ".".join(str((base >> shift) & 255) for shift in (24, 16, 8, 0))
        binding = "127.0.0.2:25" if position % 3 == 0 else "0.0.0.0:25"
        connectors.append(connector(f"C{position}", [f"{address}/{prefix}"], [binding]))
    config = config_from_mapping({"connectors": connectors})
    index = ConnectorIndex.build(config.connectors)
    probes = [generator.randrange(0, 1 << 32) for _ in range(2000)]
    probes += [first for first, _ in used] + [last for _, last in used] + [last + 1 for _, last in used]
    for value in probes:
        client = ".".join(str((value >> shift) & 255) for shift in (24, 16, 8, 0)) if value < 1 << 32 else "0.0.0.0"
        for local in ("127.0.0.2", "127.0.0.3"):
            connection = ConnectionInfo(local, 25, client)
            fast = index.lookup(connection)
            slow = rank_candidates(config.connectors, connection)
            assert (fast.connector.name if fast else None) == (slow[0].connector.name if slow else None), client


def test_rank_candidates_lists_runners_up_best_first(exchange_example: RelayPolicy) -> None:
    ranked = rank_candidates(exchange_example.config.connectors, ConnectionInfo("10.0.0.1", 25, "192.168.1.75"))
    assert [selection.connector.name for selection in ranked] == [
        "Custom Connector B",
        "Custom Connector A",
        "Client Frontend Exchange01",
    ]
