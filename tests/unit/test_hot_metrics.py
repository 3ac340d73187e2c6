"""Lock-free counters and histograms: the text Prometheus scrapes is the client library's."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from seckill.hot_metrics import HotCounter, HotHistogram

Sample = tuple[str, tuple[tuple[str, str], ...]]  # name, sorted labels


def scrape(*collectors: HotCounter | HotHistogram) -> dict[Sample, float]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_labelled_counter_counts_each_child() -> None:
    requests = HotCounter("t_requests_total", "requests", ["route", "status"], register=False)
    requests.labels("/a", "200").inc()
    requests.labels("/a", "200").inc(2)
    requests.labels("/b", "409").inc()
    assert scrape(requests) == {
        ("t_requests_total", (("route", "/a"), ("status", "200"))): 3.0,
        ("t_requests_total", (("route", "/b"), ("status", "409"))): 1.0,
    }
    assert requests.value("/a", "200") == 3.0
    assert requests.value("/c", "500") == 0.0


def test_an_unlabelled_counter() -> None:
    fast = HotCounter("t_fast_total", "fast refusals", register=False)
    fast.inc()
    fast.inc()
    assert scrape(fast) == {("t_fast_total", ()): 2.0}


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    latency = HotHistogram("t_seconds", "latency", ["route"], buckets=(0.01, 0.1, 1),
                           register=False)
    child = latency.labels("/a")
    for value in (0.0, 0.01, 0.05, 0.1, 0.5, 3.0):
        child.observe(value)
    got = scrape(latency)
    route = (("route", "/a"),)
    assert [got[("t_seconds_bucket", tuple(sorted((*route, ("le", le)))))]
            for le in ("0.01", "0.1", "1.0", "+Inf")] == [2.0, 4.0, 5.0, 6.0]
    assert got[("t_seconds_count", route)] == 6.0
    assert got[("t_seconds_sum", route)] == pytest.approx(3.66)


def test_wrong_label_count_is_refused() -> None:
    counter = HotCounter("t_x_total", "x", ["a"], register=False)
    with pytest.raises(ValueError):
        counter.labels("1", "2")
