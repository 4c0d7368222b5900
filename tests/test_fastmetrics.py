"""The lock-free counters and histograms expose what prometheus-client's would: for the same
observations, the same text and OpenMetrics exposition (names, labels, buckets, HELP, TYPE,
``_created`` series)."""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence

import prometheus_client
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from gateway.observability import fastmetrics as fast
from gateway.observability.metrics import OVERHEAD_BUCKETS, REQUEST_BUCKETS

#: A sample's value on a ``_created`` line (the creation times differ by microseconds).
CREATED = re.compile(r"^(\S+_created(?:\{[^}]*\})?) (\S+)$", re.M)

Observation = tuple[tuple[str, ...], float]
LABELS = st.tuples(st.sampled_from(["a", "b", 'q"uo\\te\n']), st.sampled_from(["x", "y"]))
AMOUNTS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [*REQUEST_BUCKETS, *OVERHEAD_BUCKETS, 0.0, -0.0, -1.0]
)


def both(
    build: Callable[[CollectorRegistry, bool], object],
) -> tuple[CollectorRegistry, CollectorRegistry]:
    """A registry with prometheus-client's metrics and one with ours, built alike."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    build(theirs, False)
    build(ours, True)
    return theirs, ours


def exposed(registry: CollectorRegistry, started: float) -> tuple[str, str]:
    """Both expositions with each ``_created`` value checked (made since ``started``) and
    blanked out."""
    texts = []
    for generate in (generate_latest, generate_openmetrics):
        text = generate(registry).decode()
        for _, stamp in CREATED.findall(text):
            assert started <= float(stamp) <= time.time()
        texts.append(CREATED.sub(r"\1 CREATED", text))
    return texts[0], texts[1]


def build_pair(
    counts: Sequence[Observation], observations: Sequence[Observation], plain: Sequence[float]
) -> Callable[[CollectorRegistry, bool], object]:
    def build(registry: CollectorRegistry, ours: bool) -> None:
        counter_t = fast.Counter if ours else prometheus_client.Counter
        histogram_t = fast.Histogram if ours else prometheus_client.Histogram
        requests = counter_t("demo_requests", "By a and b.", ["a", "b"], registry=registry)
        requests.labels("b", "y")  # a series made before any observation starts at 0
        labelled = histogram_t(
            "demo_duration_seconds",
            "Durations, by a and b.",
            ["a", "b"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        single = histogram_t(
            "demo_overhead_seconds", "Overhead.", buckets=OVERHEAD_BUCKETS, registry=registry
        )
        total = counter_t("demo_reloads", "Reloads.", registry=registry)
        for labels, amount in counts:
            requests.labels(*labels).inc(abs(amount) if math.isfinite(amount) else 1)
        for labels, amount in observations:
            labelled.labels(*labels).observe(amount)
        for amount in plain:
            single.observe(amount)
            total.inc()

    return build


@contextlib.contextmanager
def created_series(shown: bool) -> Iterator[None]:
    """prometheus-client's ``_created`` switch, for both kinds of metric; then back on."""
    if shown:
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
    else:
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("created", [True, False], ids=["created", "no-created"])
@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.tuples(LABELS, AMOUNTS), max_size=8),
    observations=st.lists(st.tuples(LABELS, AMOUNTS), max_size=30),
    plain=st.lists(AMOUNTS, max_size=30),
)
def test_the_exposition_is_prometheus_clients(
    created: bool,
    counts: list[Observation],
    observations: list[Observation],
    plain: list[float],
) -> None:
    with created_series(created):
        started = time.time()
        theirs, ours = both(build_pair(counts, observations, plain))
        assert exposed(ours, started) == exposed(theirs, started)
        assert ("_created" in exposed(ours, started)[0]) is created


def test_a_value_on_a_bound_is_in_that_bucket_nan_in_none() -> None:
    registry = CollectorRegistry()
    h = fast.Histogram("h_seconds", "H.", buckets=(0.1, 1), registry=registry)
    for amount in (0.1, 1.0, 1.0000001, -5.0, math.nan):
        h.observe(amount)
    get = registry.get_sample_value
    buckets = [get("h_seconds_bucket", {"le": le}) for le in ("0.1", "1.0", "+Inf")]
    assert buckets == [2.0, 3.0, 4.0]  # -5 and 0.1 in the first, NaN in none
    assert get("h_seconds_count") == 4.0 and math.isnan(get("h_seconds_sum") or 0.0)


def test_the_same_checks_as_prometheus_clients() -> None:
    registry = CollectorRegistry()
    c = fast.Counter("c", "C.", ["a"], registry=registry)
    with pytest.raises(ValueError, match="non-negative"):
        c.labels("x").inc(-1)
    with pytest.raises(ValueError, match="labels"):
        c.labels("x", "y")
    with pytest.raises(ValueError, match="sorted"):
        fast.Histogram("h", "H.", buckets=(1, 0.5), registry=None)
    with pytest.raises(ValueError, match="Duplicated"):  # the same name twice in one registry
        fast.Counter("c", "C.", registry=registry)
