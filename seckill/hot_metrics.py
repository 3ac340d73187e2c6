"""Counters and histograms for the hottest lines, read by Prometheus' client at scrape time.

prometheus-client takes a lock on every `inc` and `observe`: about a microsecond each, and
the purchase path updates three. An event loop is one thread, so these keep plain numbers
and hand them to the client library as metric families when `/metrics` is scraped — same
names, labels and text format as the client's own metrics.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector


class Count:
    """One labelled child of a counter."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class Observations:
    """One labelled child of a histogram: counts per bucket (not yet cumulative) and a sum."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1
        self.total += value


C = TypeVar("C", Count, Observations)


class _Family(Collector, Generic[C]):
    """A metric's labelled children, created on first use and registered for scraping."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 register: bool) -> None:
        self._name = name
        self._doc = documentation
        self._labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], C] = {}
        if register:
            REGISTRY.register(self)

    def _new_child(self) -> C:
        raise NotImplementedError

    def labels(self, *values: str) -> C:
        if len(values) != len(self._labelnames):
            raise ValueError(f"{self._name} takes labels {self._labelnames}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._new_child()
        return child


class HotCounter(_Family[Count]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = (), *,
                 register: bool = True) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, register)

    def _new_child(self) -> Count:
        return Count()

    def inc(self, amount: float = 1.0) -> None:
        self.labels().inc(amount)

    def value(self, *values: str) -> float:
        child = self._children.get(values)
        return 0.0 if child is None else child.value

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value)
        yield family


class HotHistogram(_Family[Observations]):
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], *, register: bool = True) -> None:
        self._bounds = tuple(float(b) for b in buckets)
        super().__init__(name, documentation, labelnames, register)

    def _new_child(self) -> Observations:
        return Observations(self._bounds)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._labelnames)
        for values, child in list(self._children.items()):
            counts, running, buckets = list(child.counts), 0, []
            for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
                running += count
                buckets.append((_le(bound), float(running)))
            family.add_metric(list(values), buckets, child.total)
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
