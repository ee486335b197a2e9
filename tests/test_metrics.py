"""Metrics: the registry and its text format, thread safety, the relay's metric set, the scrape endpoint."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pytest

from salmon_relayauth import metrics as metrics_module
from salmon_relayauth.metrics import (
    CONTENT_TYPE,
    MetricsRegistry,
    MetricsServer,
    QueueStats,
    RelayMetrics,
    check_loopback,
    format_value,
)

# -- a strict reader of the text format 0.0.4, to check what we render ---------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\\\|\\"|\\n)*"'
_SAMPLE = re.compile(rf"({_NAME})(?:\{{({_LABEL}(?:,{_LABEL})*)\}})? (\S+)")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Samples by (name, labels); fails the test on any line outside the format, or a sample whose
    family has no TYPE line before it."""
    assert text.endswith("\n")
    samples: Samples = {}
    types: dict[str, str] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            assert re.fullmatch(rf"# HELP {_NAME} .*", line), line
        elif line.startswith("# TYPE "):
            match = re.fullmatch(rf"# TYPE ({_NAME}) (counter|gauge)", line)
            assert match, line
            types[match[1]] = match[2]
        else:
            match = _SAMPLE.fullmatch(line)
            assert match, line
            name, labels, value = match[1], match[2] or "", match[3]
            assert name in types, f"{name} has no TYPE line"
            pairs = frozenset(
                (key, re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m[0]], raw)) for key, raw in _LABEL_PAIR.findall(labels)
            )
            samples[name, pairs] = float(value)
    return samples


def value(text: str, name: str, **labels: str) -> float:
    return parse(text)[name, frozenset(labels.items())]


# -- the registry and the format -----------------------------------------------------------------------


def test_render_counters_and_gauges() -> None:
    registry = MetricsRegistry()
    sessions = registry.counter("relayauth_sessions", "Sessions opened.", ["connector"])
    depth = registry.gauge("a_depth", "Depth.")
    sessions.labels(connector="Default").inc()
    sessions.labels(connector="Anonymous Relay").inc(2)
    depth.set(7)
    depth.dec(2)
    depth.inc(0.5)
    assert registry.render() == (
        "# HELP a_depth Depth.\n"
        "# TYPE a_depth gauge\n"
        "a_depth 5.5\n"
        "# HELP relayauth_sessions_total Sessions opened.\n"
        "# TYPE relayauth_sessions_total counter\n"
        'relayauth_sessions_total{connector="Anonymous Relay"} 2\n'
        'relayauth_sessions_total{connector="Default"} 1\n'
    )
    assert sessions.labels(connector="Default").value == 1
    assert depth.value == 5.5


def test_empty_registry_renders_nothing() -> None:
    assert MetricsRegistry().render() == ""


def test_labels_keep_their_declared_order_and_series_sort_by_values() -> None:
    registry = MetricsRegistry()
    decisions = registry.counter("d", "D.", ["connector", "command", "outcome"])
    decisions.labels(outcome="refused", command="RCPT", connector="b").inc()
    decisions.labels(outcome="accepted", command="MAIL", connector="a").inc()
    decisions.labels(outcome="accepted", command="EHLO", connector="a").inc()
    lines = registry.render().splitlines()[2:]
    assert lines == [
        'd_total{connector="a",command="EHLO",outcome="accepted"} 1',
        'd_total{connector="a",command="MAIL",outcome="accepted"} 1',
        'd_total{connector="b",command="RCPT",outcome="refused"} 1',
    ]
    assert registry.render() == registry.render()


def test_label_values_and_help_are_escaped() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c", 'Help with \\ backslash, "quotes"\nand a newline.', ["connector"])
    awkward = 'Relay "A"\\B\nC'
    counter.labels(connector=awkward).inc()
    text = registry.render()
    assert '# HELP c_total Help with \\\\ backslash, "quotes"\\nand a newline.\n' in text
    assert 'c_total{connector="Relay \\"A\\"\\\\B\\nC"} 1\n' in text
    assert value(text, "c_total", connector=awkward) == 1


def test_counter_names_and_rules() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("x_total", "X.")
    assert registry.counter("x", "X.") is counter  # exposed as x_total either way, never x_total_total
    assert registry.get("x_total") is counter and registry.get("x") is None
    counter.inc()
    counter.inc(2.5)
    assert counter.value == 3.5
    with pytest.raises(ValueError, match="can only increase"):
        counter.inc(-1)
    assert "x_total 3.5\n" in registry.render()
    with pytest.raises(ValueError, match="invalid metric name '_total'"):
        registry.counter("_total", "Nothing before the suffix.")


def test_labels_must_match_exactly() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c", "C.", ["connector", "outcome"])
    with pytest.raises(ValueError, match="'c_total' takes labels"):
        counter.labels(connector="a")
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels(connector="a", outcome="b", extra="c")
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc()  # a labelled counter has no unlabelled series
    with pytest.raises(TypeError, match="must be a str"):
        counter.labels(connector="a", outcome=3)  # type: ignore[arg-type]


def test_series_appear_at_zero_once_labelled() -> None:
    registry = MetricsRegistry()
    registry.counter("c", "C.", ["outcome"]).labels(outcome="failed")
    registry.counter("plain", "Plain.")
    text = registry.render()
    assert value(text, "c_total", outcome="failed") == 0
    assert value(text, "plain_total") == 0


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "a.b", "é", "a\n"])
def test_invalid_metric_names(name: str) -> None:
    registry = MetricsRegistry()
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.counter(name, "X.")
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.gauge(name, "X.")
    with pytest.raises(ValueError, match="invalid metric name"):
        registry.gauge_callback(name, "X.", lambda: [])


def test_valid_metric_names() -> None:
    registry = MetricsRegistry()
    for name in ["a", "_a", ":a", "relayauth:queue_messages", "A9_:"]:
        registry.gauge(name, "X.")


@pytest.mark.parametrize("label", ["", "1a", "a-b", "a:b", "__reserved", "é"])
def test_invalid_label_names(label: str) -> None:
    with pytest.raises(ValueError, match="invalid label name"):
        MetricsRegistry().counter("c", "C.", [label])


def test_label_name_rules() -> None:
    registry = MetricsRegistry()
    with pytest.raises(ValueError, match="duplicate label"):
        registry.counter("c", "C.", ["a", "a"])
    with pytest.raises(TypeError, match="sequence of names"):
        registry.counter("c", "C.", "connector")


def test_registering_again() -> None:
    registry = MetricsRegistry()
    counter = registry.counter("c", "C.", ["connector"])
    gauge = registry.gauge("g", "G.", ["state"])
    assert registry.counter("c", "Other help.", ("connector",)) is counter
    assert registry.gauge("g", "G.", ["state"]) is gauge
    with pytest.raises(ValueError, match="'c_total' is already registered as a counter"):
        registry.counter("c", "C.", ["connector", "command"])
    with pytest.raises(ValueError, match="'c_total' is already registered as a counter"):
        registry.gauge("c_total", "C.", ["connector"])
    assert registry.counter("g", "G.").name == "g_total"  # a different name: fine
    with pytest.raises(ValueError, match="'g' is already registered as a gauge"):
        registry.gauge("g", "G.")
    with pytest.raises(ValueError, match="'g' is already registered as a gauge"):
        registry.gauge_callback("g", "G.", lambda: [])
    registry.gauge_callback("cb", "CB.", lambda: [])
    with pytest.raises(ValueError, match="'cb' is already registered as a gauge"):
        registry.gauge("cb", "CB.")


def test_callback_gauges_are_computed_at_scrape_time() -> None:
    registry = MetricsRegistry()
    depth = {"value": 1.0}
    calls = []

    def current() -> list[tuple[Mapping[str, str], float]]:
        calls.append(1)
        return [({"state": "ready", "node": "b"}, depth["value"]), ({"state": "deferred", "node": "a"}, 2)]

    callback = registry.gauge_callback("q", "Queue.", current)
    assert calls == []  # nothing computed until a scrape
    text = registry.render()
    assert text == (
        "# HELP q Queue.\n"
        "# TYPE q gauge\n"
        'q{node="a",state="deferred"} 2\n'
        'q{node="b",state="ready"} 1\n'
    )
    depth["value"] = 42
    assert value(registry.render(), "q", state="ready", node="b") == 42
    assert len(calls) == 2
    assert registry.gauge_callback("q", "Queue.", lambda: [({}, 3)]) is callback  # a new function replaces it
    assert value(registry.render(), "q") == 3


def test_a_failing_callback_does_not_blank_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    registry = MetricsRegistry()
    registry.counter("a", "A.").inc()

    def broken() -> list[tuple[Mapping[str, str], float]]:
        raise OSError("queue directory gone")

    registry.gauge_callback("b", "B.", broken)
    registry.gauge_callback("c", "C.", lambda: [({"bad-label": "x"}, 1)])
    registry.gauge("d", "D.").set(4)
    with caplog.at_level(logging.ERROR, "salmon_relayauth.metrics"):
        text = registry.render()
    samples = parse(text)
    assert samples == {("a_total", frozenset()): 1, ("d", frozenset()): 4}
    assert "# TYPE b gauge\n" in text and "# TYPE c gauge\n" in text
    assert "metric b: callback failed" in caplog.text and "queue directory gone" in caplog.text
    assert "invalid label name 'bad-label'" in caplog.text


@pytest.mark.parametrize(
    ("number", "text"),
    [(0, "0"), (3, "3"), (3.0, "3"), (-2.0, "-2"), (2.5, "2.5"), (0.1, "0.1"), (1e20, "1e+20"),
     (float("inf"), "+Inf"), (float("-inf"), "-Inf"), (float("nan"), "NaN"), (2**53 + 2, "9007199254740994.0")],
)
def test_format_value(number: float, text: str) -> None:
    assert format_value(number) == text
    assert float(text) == number or text == "NaN"


# -- thread safety -------------------------------------------------------------------------------------


def test_many_threads_incrementing_give_the_exact_total() -> None:
    registry = MetricsRegistry()
    threads_count, per_thread = 16, 5_000
    start = threading.Barrier(threads_count + 1)
    scrapes: list[str] = []

    def work(n: int) -> None:
        counter = registry.counter("events", "Events.", ["connector"])  # concurrent registration: one metric
        gauge = registry.gauge("inflight", "In flight.")
        start.wait()
        for i in range(per_thread):
            counter.labels(connector=f"c{i % 3}").inc()
            gauge.inc()
            gauge.dec()
        registry.counter("plain", "Plain.").inc(per_thread)

    def scrape() -> None:
        start.wait()
        for _ in range(50):
            scrapes.append(registry.render())

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    threads.append(threading.Thread(target=scrape))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = parse(registry.render())
    per_connector = [samples["events_total", frozenset({("connector", f"c{k}")})] for k in range(3)]
    assert sum(per_connector) == threads_count * per_thread
    assert per_connector == [threads_count * len(range(k, per_thread, 3)) for k in range(3)]
    assert samples["inflight", frozenset()] == 0
    assert samples["plain_total", frozenset()] == threads_count * per_thread
    for text in scrapes:  # every scrape taken meanwhile is well formed and never above the final counts
        assert all(v <= threads_count * per_thread for v in parse(text).values())


# -- the relay's metrics -------------------------------------------------------------------------------


def test_relay_metrics() -> None:
    registry = MetricsRegistry()
    relay = RelayMetrics(registry)
    relay.session_opened("Anonymous Relay")
    relay.session_opened("Anonymous Relay")
    relay.session_opened("Default Frontend")
    relay.session_refused("no_connector")
    relay.decision("Anonymous Relay", "MAIL", "accepted")
    relay.decision("Anonymous Relay", "rcpt TO:<a@example.com>", "refused")
    relay.decision("Anonymous Relay", "RCPT", "refused")
    relay.decision("Anonymous Relay", "XYZZY", "refused")
    relay.decision("Anonymous Relay", "", "refused")
    relay.decision("Default Frontend", "DATA", "deferred")
    relay.throttled("Anonymous Relay", "message_rate_limit")
    relay.delivery("delivered", 3)
    relay.delivery("dsn")
    text = registry.render()
    samples = parse(text)
    expected = {
        ("relayauth_sessions_total", frozenset({("connector", "Anonymous Relay")})): 2,
        ("relayauth_sessions_total", frozenset({("connector", "Default Frontend")})): 1,
        ("relayauth_sessions_refused_total", frozenset({("reason", "no_connector")})): 1,
        ("relayauth_sessions_refused_total", frozenset({("reason", "connection_limit")})): 0,
        ("relayauth_throttled_total", frozenset({("connector", "Anonymous Relay"), ("limit", "message_rate_limit")})): 1,
        ("relayauth_deliveries_total", frozenset({("outcome", "delivered")})): 3,
        ("relayauth_deliveries_total", frozenset({("outcome", "deferred")})): 0,
        ("relayauth_deliveries_total", frozenset({("outcome", "failed")})): 0,
        ("relayauth_deliveries_total", frozenset({("outcome", "dsn")})): 1,
    }
    for (connector, command, outcome), count in {
        ("Anonymous Relay", "MAIL", "accepted"): 1,
        ("Anonymous Relay", "RCPT", "refused"): 2,
        ("Anonymous Relay", "OTHER", "refused"): 2,
        ("Default Frontend", "DATA", "deferred"): 1,
    }.items():
        expected["relayauth_decisions_total", frozenset(
            {("connector", connector), ("command", command), ("outcome", outcome)})] = count
    assert samples == expected


def test_relay_metrics_refuse_unknown_values() -> None:
    relay = RelayMetrics(MetricsRegistry())
    with pytest.raises(ValueError, match="decision outcome"):
        relay.decision("Default", "MAIL", "ok")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delivery outcome"):
        relay.delivery("bounced")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="session refusal reason"):
        relay.session_refused("busy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="can only increase"):
        relay.delivery("delivered", -1)


def test_two_relay_metric_sets_share_one_registry() -> None:
    registry = MetricsRegistry()
    RelayMetrics(registry).session_opened("Default")
    RelayMetrics(registry).session_opened("Default")
    assert value(registry.render(), "relayauth_sessions_total", connector="Default") == 2


def test_queue_gauges() -> None:
    registry = MetricsRegistry()
    now = [1_000_000.0]
    relay = RelayMetrics(registry, clock=lambda: now[0])
    assert "relayauth_queue" not in registry.render()  # not watched yet
    stats = QueueStats(0, None)
    calls = []

    def queue_stats() -> QueueStats:
        calls.append(1)
        return stats

    relay.watch_queue(queue_stats)
    text = registry.render()
    assert value(text, "relayauth_queue_messages") == 0
    assert value(text, "relayauth_queue_oldest_age_seconds") == 0
    assert len(calls) == 1  # one scrape asks the queue once
    stats = QueueStats(3, now[0] - 90)
    now[0] += 10
    text = registry.render()
    assert value(text, "relayauth_queue_messages") == 3
    assert value(text, "relayauth_queue_oldest_age_seconds") == 100
    assert len(calls) == 2
    stats = QueueStats(1, now[0] + 5)  # a clock step backwards: never a negative age
    assert value(registry.render(), "relayauth_queue_oldest_age_seconds") == 0
    relay.watch_queue(lambda: QueueStats(9, None))  # watching again replaces the function
    assert value(registry.render(), "relayauth_queue_messages") == 9


def test_every_relay_metric_is_documented() -> None:
    registry = MetricsRegistry()
    RelayMetrics(registry).watch_queue(lambda: QueueStats(0, None))
    names = set(re.findall(r"^# TYPE (\S+) (\S+)$", registry.render(), re.MULTILINE))
    doc = metrics_module.__doc__ or ""
    documented = set(re.findall(r"^(relayauth_\w+)\s+(counter|gauge)\s", doc, re.MULTILINE))
    assert names == documented
    assert len(names) == 7


# -- the scrape endpoint -------------------------------------------------------------------------------


def run_with_server(
    registry: MetricsRegistry, body: Callable[[MetricsServer, str], Awaitable[None]], **options: Any
) -> None:
    async def main() -> None:
        server = MetricsServer(registry, "127.0.0.1", 0, **options)
        port = await server.start()
        assert port == server.port and port > 0
        try:
            await asyncio.wait_for(body(server, f"http://127.0.0.1:{port}"), 30)
        finally:
            await server.stop()

    asyncio.run(main())


def fetch(url: str, method: str = "GET", timeout: float = 5) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def raw_exchange(port: int, data: bytes, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def relay_registry() -> MetricsRegistry:
    registry = MetricsRegistry()
    relay = RelayMetrics(registry)
    for _ in range(3):
        relay.session_opened("Anonymous Relay")
        relay.decision("Anonymous Relay", "RCPT", "accepted")
    relay.watch_queue(lambda: QueueStats(2, time.time() - 5))
    return registry


def test_scrape_returns_the_metrics() -> None:
    registry = relay_registry()

    async def body(server: MetricsServer, base: str) -> None:
        status, headers, payload = await asyncio.to_thread(fetch, base + "/metrics")
        assert status == 200
        assert headers["Content-Type"] == CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
        assert headers["Connection"] == "close"
        assert int(headers["Content-Length"]) == len(payload)
        text = payload.decode("utf-8")
        assert value(text, "relayauth_sessions_total", connector="Anonymous Relay") == 3
        assert value(text, "relayauth_decisions_total", connector="Anonymous Relay", command="RCPT",
                     outcome="accepted") == 3
        assert value(text, "relayauth_queue_messages") == 2
        assert 4 <= value(text, "relayauth_queue_oldest_age_seconds") < 60
        RelayMetrics(registry).session_opened("Anonymous Relay")  # counted at the next scrape
        _, _, payload = await asyncio.to_thread(fetch, base + "/metrics?debug=1")
        assert value(payload.decode(), "relayauth_sessions_total", connector="Anonymous Relay") == 4
        status, headers, payload = await asyncio.to_thread(fetch, base + "/metrics", "HEAD")
        assert (status, payload) == (200, b"") and int(headers["Content-Length"]) > 0

    run_with_server(registry, body)


def test_other_paths_and_methods() -> None:
    async def body(server: MetricsServer, base: str) -> None:
        for path in ["/", "/metrics/", "/metricsx", "/favicon.ico"]:
            status, headers, _ = await asyncio.to_thread(fetch, base + path)
            assert status == 404, path
            assert headers["Connection"] == "close"
        for method in ["POST", "PUT", "DELETE", "OPTIONS"]:
            status, headers, _ = await asyncio.to_thread(fetch, base + "/metrics", method)
            assert status == 405, method
            assert headers["Allow"] == "GET, HEAD"
        reply = await asyncio.to_thread(raw_exchange, server.port, b"nonsense\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 ")

    run_with_server(relay_registry(), body)


def test_oversized_request_is_refused() -> None:
    async def body(server: MetricsServer, base: str) -> None:
        request = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"a" * 4096 + b"\r\n\r\n"
        reply = await asyncio.to_thread(raw_exchange, server.port, request)
        assert reply.startswith(b"HTTP/1.1 431 ")
        status, _, _ = await asyncio.to_thread(fetch, base + "/metrics")
        assert status == 200

    run_with_server(relay_registry(), body, max_request=1024)


def test_a_render_failure_is_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = MetricsRegistry()

    def broken() -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(registry, "render", broken)

    async def body(server: MetricsServer, base: str) -> None:
        status, _, _ = await asyncio.to_thread(fetch, base + "/metrics")
        assert status == 500

    run_with_server(registry, body)


def test_a_slow_client_does_not_block_a_scrape() -> None:
    async def body(server: MetricsServer, base: str) -> None:
        silent = socket.create_connection(("127.0.0.1", server.port))  # connects, never sends a request
        dripping = socket.create_connection(("127.0.0.1", server.port))
        dripping.sendall(b"GET /metrics HTTP/1.1\r\n")  # starts one, never finishes it
        try:
            started = time.monotonic()
            status, _, payload = await asyncio.to_thread(fetch, base + "/metrics")
            assert status == 200 and b"relayauth_sessions_total" in payload
            assert time.monotonic() - started < 1  # not after the slow clients' timeout
            for sock in (silent, dripping):  # and they are dropped at the read timeout, without a reply
                sock.settimeout(10)
                assert await asyncio.to_thread(sock.recv, 1024) == b""
            assert time.monotonic() - started >= 1
        finally:
            silent.close()
            dripping.close()

    run_with_server(relay_registry(), body, read_timeout=1.5)


def test_connections_beyond_the_limit_get_503() -> None:
    async def body(server: MetricsServer, base: str) -> None:
        idle = socket.create_connection(("127.0.0.1", server.port))
        try:
            await asyncio.sleep(0.2)
            status, _, _ = await asyncio.to_thread(fetch, base + "/metrics")
            assert status == 503
        finally:
            idle.close()
        await asyncio.sleep(0.2)
        status, _, _ = await asyncio.to_thread(fetch, base + "/metrics")
        assert status == 200

    run_with_server(relay_registry(), body, max_connections=1)


def test_stop_drops_open_connections_and_frees_the_port() -> None:
    async def main() -> None:
        server = MetricsServer(MetricsRegistry(), "127.0.0.1", 0, read_timeout=30)
        port = await server.start()
        with pytest.raises(RuntimeError, match="already started"):
            await server.start()
        idle = socket.create_connection(("127.0.0.1", port))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 5
        idle.close()
        await server.stop()  # twice is fine
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        restarted = MetricsServer(MetricsRegistry(), "127.0.0.1", port)
        assert await restarted.start() == port
        await restarted.stop()

    asyncio.run(main())


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "10.0.0.1", "localhost", "", "metrics.example"])
def test_non_loopback_addresses_are_refused(host: str) -> None:
    server = MetricsServer(MetricsRegistry(), host, 0)
    with pytest.raises(ValueError, match=re.escape(repr(host))):
        asyncio.run(server.start())
    with pytest.raises(ValueError, match="loopback"):
        check_loopback(host)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_addresses_are_accepted(host: str) -> None:
    check_loopback(host)
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def main() -> None:
        server = MetricsServer(MetricsRegistry(), host, 0)
        try:
            port = await server.start()
        except OSError as error:  # e.g. IPv6 disabled, or 127.0.0.2 not configured
            pytest.skip(f"cannot listen on {host}: {error}")
        try:
            reply = await asyncio.to_thread(raw_exchange, port, b"GET /metrics HTTP/1.1\r\n\r\n", host)
            assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
        finally:
            await server.stop()

    asyncio.run(main())

