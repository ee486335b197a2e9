"""Counters and gauges, thread-safe, rendered in the Prometheus text exposition format 0.0.4.

The listener updates metrics on its event loop, the delivery worker and Salmon routing from their
threads, and the metrics server renders from a worker thread: every update and every render takes the
metric's lock, so no increment is lost and a scrape sees each metric in one consistent state.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypeVar

__all__ = [
    "CallbackGauge",
    "Counter",
    "Gauge",
    "GaugeCallback",
    "MetricsRegistry",
    "format_value",
]

log = logging.getLogger("salmon_relayauth.metrics")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

GaugeCallback = Callable[[], Iterable[tuple[Mapping[str, str], float]]]
"""What :meth:`MetricsRegistry.gauge_callback` calls at each scrape: ``(labels, value)`` pairs."""


def format_value(value: float) -> str:
    """A sample value as the format wants it: integral values without a fraction, ``+Inf``, ``-Inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _check_label_name(metric: str, label: str) -> None:
    if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
        raise ValueError(f"metric {metric!r}: invalid label name {label!r}")


def _series(name: str, labels: Sequence[tuple[str, str]], value: float) -> str:
    if not labels:
        return f"{name} {format_value(value)}"
    inner = ",".join(f'{key}="{_escape_label_value(val)}"' for key, val in labels)
    return f"{name}{{{inner}}} {format_value(value)}"


class _Metric:
    """One metric family: a name, help text, label names, and a value per combination of label values."""

    kind = ""

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.help = help
        self.labelnames = labelnames
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], float] = {}
        if not labelnames:
            self._values[()] = 0

    def _key(self, values: Mapping[str, str]) -> tuple[str, ...]:
        if set(values) != set(self.labelnames):
            raise ValueError(
                f"metric {self.name!r} takes labels {list(self.labelnames)}, not {sorted(values)}"
            )
        key = tuple(values[label] for label in self.labelnames)
        for label, value in zip(self.labelnames, key):
            if not isinstance(value, str):
                raise TypeError(f"metric {self.name!r}: label {label!r} must be a str, not {type(value).__name__}")
        return key

    def _add(self, key: tuple[str, ...], amount: float) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def _set(self, key: tuple[str, ...], value: float) -> None:
        with self._lock:
            self._values[key] = value

    def _get(self, key: tuple[str, ...]) -> float:
        with self._lock:
            return self._values.get(key, 0)

    def _ensure(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._values.setdefault(key, 0)

    def samples(self) -> list[tuple[list[tuple[str, str]], float]]:
        """The current ``(labels, value)`` pairs, sorted by label values."""
        with self._lock:
            items = sorted(self._values.items())
        return [(list(zip(self.labelnames, key)), value) for key, value in items]


class _CounterChild:
    __slots__ = ("_metric", "_key")

    def __init__(self, metric: Counter, key: tuple[str, ...]) -> None:
        self._metric = metric
        self._key = key

    def inc(self, amount: float = 1) -> None:
        """Add ``amount`` (not negative: a counter only goes up)."""
        if amount < 0:
            raise ValueError(f"counter {self._metric.name!r} can only increase, not by {amount}")
        self._metric._add(self._key, amount)

    @property
    def value(self) -> float:
        return self._metric._get(self._key)


class Counter(_Metric):
    """A count that only goes up; exposed as ``<name>_total``."""

    kind = "counter"

    def labels(self, **values: str) -> _CounterChild:
        """The series for these label values (all of the counter's labels, no others); starts at 0."""
        key = self._key(values)
        self._ensure(key)
        return _CounterChild(self, key)

    def inc(self, amount: float = 1) -> None:
        """Increment a counter without labels."""
        self.labels().inc(amount)

    @property
    def value(self) -> float:
        """The value of a counter without labels."""
        return self.labels().value


class _GaugeChild:
    __slots__ = ("_metric", "_key")

    def __init__(self, metric: Gauge, key: tuple[str, ...]) -> None:
        self._metric = metric
        self._key = key

    def set(self, value: float) -> None:
        self._metric._set(self._key, value)

    def inc(self, amount: float = 1) -> None:
        self._metric._add(self._key, amount)

    def dec(self, amount: float = 1) -> None:
        self._metric._add(self._key, -amount)

    @property
    def value(self) -> float:
        return self._metric._get(self._key)


class Gauge(_Metric):
    """A value that goes up and down."""

    kind = "gauge"

    def labels(self, **values: str) -> _GaugeChild:
        """The series for these label values (all of the gauge's labels, no others); starts at 0."""
        key = self._key(values)
        self._ensure(key)
        return _GaugeChild(self, key)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self.labels().dec(amount)

    @property
    def value(self) -> float:
        return self.labels().value


class CallbackGauge:
    """A gauge whose series are computed by a function at each scrape."""

    kind = "gauge"
    labelnames: tuple[str, ...] = ()

    def __init__(self, name: str, help: str, fn: GaugeCallback) -> None:
        self.name = name
        self.help = help
        self.fn = fn

    def samples(self) -> list[tuple[list[tuple[str, str]], float]]:
        """Calls the function (without holding any lock); label names are checked, series sorted."""
        result: list[tuple[list[tuple[str, str]], float]] = []
        for labels, value in self.fn():
            for label in labels:
                _check_label_name(self.name, label)
            result.append((sorted(labels.items()), float(value)))
        result.sort()
        return result


_M = TypeVar("_M", Counter, Gauge)


class MetricsRegistry:
    """The metrics of one process, by the name they are exposed under."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Counter | Gauge | CallbackGauge] = {}

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter ``name`` (exposed as ``name_total``; a trailing ``_total`` is not doubled)."""
        base = name.removesuffix("_total")
        if not _METRIC_NAME.fullmatch(base):
            raise ValueError(f"invalid metric name {name!r}")
        return self._register(Counter, base + "_total", help, labelnames)

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge, name, help, labelnames)

    def gauge_callback(self, name: str, help: str, fn: GaugeCallback) -> CallbackGauge:
        """A gauge computed by ``fn()`` at each scrape, from the scraping thread: ``fn`` returns
        ``(labels, value)`` pairs and must be thread-safe. Registering the name again replaces ``fn``
        (a restarted component watches anew); a non-callback metric of that name is a ValueError."""
        self._check_name(name)
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                existing = self._metrics[name] = CallbackGauge(name, help, fn)
            elif not isinstance(existing, CallbackGauge):
                raise ValueError(f"metric {name!r} is already registered as a {existing.kind} with labels "
                                 f"{list(existing.labelnames)}")
            existing.fn = fn
            return existing

    def get(self, name: str) -> Counter | Gauge | CallbackGauge | None:
        """The metric exposed as ``name`` (counters with their ``_total``), or None."""
        with self._lock:
            return self._metrics.get(name)

    def render(self) -> str:
        """Every metric in the text exposition format 0.0.4, sorted by name. A callback that raises is
        logged and its gauge exposed without samples, so one broken callback does not blank the scrape."""
        with self._lock:
            metrics = sorted(self._metrics.items())
        lines: list[str] = []
        for name, metric in metrics:
            lines.append(f"# HELP {name} {_escape_help(metric.help)}")
            lines.append(f"# TYPE {name} {metric.kind}")
            try:
                samples = metric.samples()
            except Exception:
                log.exception("metric %s: callback failed", name)
                continue
            lines.extend(_series(name, labels, value) for labels, value in samples)
        return "\n".join(lines) + "\n" if lines else ""

    def _register(self, cls: type[_M], name: str, help: str, labelnames: Sequence[str]) -> _M:
        if isinstance(labelnames, str):
            raise TypeError(f"metric {name!r}: labelnames must be a sequence of names, not a str")
        self._check_name(name)
        labels = tuple(labelnames)
        for label in labels:
            _check_label_name(name, label)
        if len(set(labels)) != len(labels):
            raise ValueError(f"metric {name!r}: duplicate label names in {list(labels)}")
        with self._lock:
            existing = self._metrics.get(name)
            if existing is None:
                metric = cls(name, help, labels)
                self._metrics[name] = metric
                return metric
            if isinstance(existing, cls) and existing.labelnames == labels:
                return existing
            raise ValueError(
                f"metric {name!r} is already registered as a {existing.kind} with labels "
                f"{list(existing.labelnames)}, not a {cls.kind} with labels {list(labels)}"
            )

    @staticmethod
    def _check_name(name: str) -> None:
        if not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
