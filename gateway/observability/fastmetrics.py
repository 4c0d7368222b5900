"""Counters and histograms without a lock per update, exposed as prometheus-client's are.

prometheus-client's children take a lock per ``inc`` and per bucket and sum of an
``observe``, and walk a histogram's buckets in Python; the request path's metrics are
updated only on the event loop's thread, so these keep plain numbers (a bucket found by
``bisect``) and are read by the scrape on that same thread. A family is a registry
``Collector`` whose samples are those prometheus-client's ``Counter`` and ``Histogram``
write for the same observations: the same names, labels, ``le`` values, HELP and TYPE, the
``_created`` series when it does (``tests/test_fastmetrics.py`` checks the exposition).

Not for a metric updated from another thread (``+=`` on an attribute is not atomic there):
those stay prometheus-client's.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, metrics
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import INF, floatToGoString

_Child = TypeVar("_Child", "CounterChild", "HistogramChild")


def _use_created() -> bool:
    # prometheus-client's own switch (``disable_created_metrics``,
    # ``PROMETHEUS_DISABLE_CREATED_SERIES``), read at each scrape as its metrics do.
    return bool(getattr(metrics, "_use_created", True))


class CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        if amount == amount:  # NaN falls in no bucket (as prometheus-client's)
            self.counts[bisect_left(self.bounds, amount)] += 1.0


class _Family(Collector, Generic[_Child]):
    kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], _Child] = {}
        if not self.labelnames:
            self.children[()] = self._make()
        if registry is not None:
            registry.register(self)

    def _make(self) -> _Child:
        raise NotImplementedError

    def labels(self, *values: str) -> _Child:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: labels {self.labelnames}, got {values!r}")
        key = tuple(str(v) for v in values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = self._make()
        return child

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, self.kind)]

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        created = _use_created()
        for values, child in list(self.children.items()):
            self._add(metric, dict(zip(self.labelnames, values, strict=True)), child, created)
        return [metric]

    def _add(self, metric: Metric, labels: dict[str, str], child: _Child, created: bool) -> None:
        raise NotImplementedError


class Counter(_Family[CounterChild]):
    """``prometheus_client.Counter``'s exposition (``name`` without ``_total``)."""

    kind = "counter"

    def _make(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1.0) -> None:
        self.children[()].inc(amount)

    def _add(
        self, metric: Metric, labels: dict[str, str], child: CounterChild, created: bool
    ) -> None:
        metric.add_sample(self.name + "_total", labels, child.value)
        if created:
            metric.add_sample(self.name + "_created", labels, child.created)


class Histogram(_Family[HistogramChild]):
    """``prometheus_client.Histogram``'s exposition (``+Inf`` added to the buckets)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds):
            raise ValueError("Buckets not in sorted order")
        if bounds and bounds[-1] != INF:
            bounds.append(INF)
        if len(bounds) < 2:
            raise ValueError("Must have at least two buckets")
        self.bounds = tuple(bounds)
        self._le = tuple(floatToGoString(b) for b in bounds)  # type: ignore[no-untyped-call]
        super().__init__(name, documentation, labelnames, registry=registry)

    def _make(self) -> HistogramChild:
        return HistogramChild(self.bounds)

    def observe(self, amount: float) -> None:
        self.children[()].observe(amount)

    def _add(
        self, metric: Metric, labels: dict[str, str], child: HistogramChild, created: bool
    ) -> None:
        acc = 0.0
        for le, count in zip(self._le, list(child.counts), strict=True):
            acc += count
            metric.add_sample(self.name + "_bucket", {**labels, "le": le}, acc)
        metric.add_sample(self.name + "_count", labels, acc)
        if self.bounds[0] >= 0:
            metric.add_sample(self.name + "_sum", labels, child.sum)
        if created:
            metric.add_sample(self.name + "_created", labels, child.created)
