"""The deploy metrics' series (names, labels, buckets) and their running totals.

A Pushgateway keeps only what was pushed last, so a run that pushed only its own counts would
reset every counter to its own few events. Instead the totals live in one JSON file per
environment (``$HOMELAB_HOME/metrics/<environment>.json``): each push merges the run's new
observations into that file under a lock and pushes the totals, so counters and histograms grow
across runs as Prometheus expects. Losing the file is a counter reset, which PromQL's
``rate``/``increase`` already handle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

Kind = Literal["counter", "gauge", "histogram"]
DURATION_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
HEALTH_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
LOCK_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 90, 300)


@dataclass(frozen=True)
class Series:
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


# Low-cardinality labels only: never a commit, a release or a run id.
SERIES: dict[str, Series] = {
    "homelab_deploy_duration_seconds": Series("histogram", "Wall time of one host's part of a phase.",
                                              ("host", "phase"), DURATION_BUCKETS),
    "homelab_stack_deploy_seconds": Series("histogram", "Wall time of one stack's deploy (stage to health gate).",
                                           ("host", "stack", "action"), DURATION_BUCKETS),
    "homelab_deploys_total": Series("counter", "Finished deploy runs.", ("trigger", "result")),
    "homelab_stack_changes_total": Series("counter", "Stack changes applied, by what was done and how it ended.",
                                          ("action", "result")),
    "homelab_rollbacks_total": Series("counter", "Stacks undone, by why.", ("reason",)),
    "homelab_health_check_seconds": Series("histogram", "Time until a stack's health gate decided.",
                                           ("host", "stack"), HEALTH_BUCKETS),
    "homelab_health_check_failures_total": Series("counter", "Health gates that failed.", ("host", "stack")),
    "homelab_lock_wait_seconds": Series("histogram", "Time until the run held a host's deploy lock.", ("host",),
                                        LOCK_BUCKETS),
    "homelab_notification_failures_total": Series("counter", "Notices a channel failed to deliver.", ("channel",)),
    "homelab_agent_hook_calls_total": Series("counter", "Agent hook calls, by hook, the decision the run acted on, "
                                                        "and how the call went (answered, failed-open, "
                                                        "failed-closed).", ("hook", "decision", "outcome")),
    "homelab_agent_hook_seconds": Series("histogram", "Time an agent hook took, retry included.", ("hook",),
                                         HEALTH_BUCKETS),
    "homelab_deploy_in_progress": Series("gauge", "1 while a run of this environment runs."),
    "homelab_last_deploy_success": Series("gauge", "1 if the last finished run of this environment succeeded."),
    "homelab_last_deploy_timestamp_seconds": Series("gauge", "Unix time the last run of this environment ended."),
    "homelab_last_success_timestamp_seconds": Series("gauge", "Unix time of the last successful run."),
}

Key = tuple[str, ...]


@dataclass
class Histogram:
    counts: list[float]  # per bucket, not cumulative; the last one is +Inf
    sum: float = 0.0

    def observe(self, value: float, buckets: Sequence[float]) -> None:
        self.counts[next((i for i, bound in enumerate(buckets) if value <= bound), len(buckets))] += 1
        self.sum += value

    def add(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum


@dataclass
class Samples:
    """Values of the series in SERIES: counts to add, observations, or gauges to set."""

    counters: dict[str, dict[Key, float]] = field(default_factory=dict)
    histograms: dict[str, dict[Key, Histogram]] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)

    def inc(self, name: str, by: float = 1.0, **labels: str) -> None:
        values = self.counters.setdefault(name, {})
        key = _key(name, labels)
        values[key] = values.get(key, 0.0) + by

    def observe(self, name: str, value: float, **labels: str) -> None:
        spec = SERIES[name]
        histogram = self.histograms.setdefault(name, {}).setdefault(
            _key(name, labels), Histogram([0.0] * (len(spec.buckets) + 1)))
        histogram.observe(value, spec.buckets)

    def set(self, name: str, value: float) -> None:
        assert SERIES[name].kind == "gauge", name
        self.gauges[name] = value

    @property
    def empty(self) -> bool:
        return not (self.counters or self.histograms or self.gauges)

    def add(self, other: Samples) -> None:
        """Counts and observations added; gauges replaced."""
        for name, values in other.counters.items():
            mine = self.counters.setdefault(name, {})
            for key, value in values.items():
                mine[key] = mine.get(key, 0.0) + value
        for name, hists in other.histograms.items():
            mine_h = self.histograms.setdefault(name, {})
            for key, histogram in hists.items():
                if key in mine_h:
                    mine_h[key].add(histogram)
                else:
                    mine_h[key] = Histogram(list(histogram.counts), histogram.sum)
        self.gauges.update(other.gauges)

    def to_json(self) -> dict:
        return {"counters": {n: [[list(k), v] for k, v in vs.items()] for n, vs in self.counters.items()},
                "histograms": {n: [[list(k), h.counts, h.sum] for k, h in hs.items()]
                               for n, hs in self.histograms.items()},
                "gauges": dict(self.gauges)}

    @classmethod
    def from_json(cls, data: dict) -> Samples:
        """Totals as saved; series that are no longer known, or whose shape changed, are dropped."""
        out = cls()
        for name, rows in data.get("counters", {}).items():
            if _known(name, "counter"):
                out.counters[name] = {tuple(k): float(v) for k, v in rows if len(k) == len(SERIES[name].labels)}
        for name, rows in data.get("histograms", {}).items():
            if _known(name, "histogram"):
                size = len(SERIES[name].buckets) + 1
                out.histograms[name] = {tuple(k): Histogram([float(c) for c in counts], float(total))
                                        for k, counts, total in rows
                                        if len(k) == len(SERIES[name].labels) and len(counts) == size}
        out.gauges = {n: float(v) for n, v in data.get("gauges", {}).items() if _known(n, "gauge")}
        return out

    def registry(self) -> CollectorRegistry:
        """A registry that exposes these values (for a push, or a test's look at them)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return registry


def _known(name: str, kind: Kind) -> bool:
    return name in SERIES and SERIES[name].kind == kind


def _key(name: str, labels: dict[str, str]) -> Key:
    wanted = SERIES[name].labels
    if set(labels) != set(wanted):
        raise ValueError(f"{name} takes labels {wanted}, got {sorted(labels)}")
    return tuple(str(labels[label]) for label in wanted)


class _Collector:
    def __init__(self, samples: Samples):
        self.samples = samples

    def collect(self) -> Iterator:
        for name, values in self.samples.counters.items():
            spec = SERIES[name]
            family = CounterMetricFamily(name.removesuffix("_total"), spec.help, labels=spec.labels)
            for key, value in values.items():
                family.add_metric(list(key), value)
            yield family
        for name, hists in self.samples.histograms.items():
            spec = SERIES[name]
            family = HistogramMetricFamily(name, spec.help, labels=spec.labels)
            for key, histogram in hists.items():
                family.add_metric(list(key), buckets=_cumulative(spec.buckets, histogram.counts),
                                  sum_value=histogram.sum)
            yield family
        for name, value in self.samples.gauges.items():
            yield GaugeMetricFamily(name, SERIES[name].help, value=value)


def _cumulative(bounds: Sequence[float], counts: Sequence[float]) -> list[tuple[str, float]]:
    out, running = [], 0.0
    for bound, count in zip([*bounds, math.inf], counts, strict=True):
        running += count
        out.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
    return out


def totals_path(environment: str) -> Path:
    home = Path(os.environ.get("HOMELAB_HOME", Path.home() / ".local/share/homelab"))
    return home / "metrics" / f"{environment}.json"


@contextlib.contextmanager
def updating_totals(path: Path) -> Iterator[Samples]:
    """The saved totals, locked; what the caller adds to them is saved atomically at the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            totals = Samples.from_json(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError, TypeError, AttributeError):
            totals = Samples()  # missing or damaged: a counter reset, which PromQL handles
        yield totals
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(totals.to_json()))
        os.replace(tmp, path)
