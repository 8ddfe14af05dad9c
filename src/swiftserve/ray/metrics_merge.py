"""The deployment's /metrics: every replica's Prometheus text merged into one exposition (no ray).

Each replica serves its own metrics (server/metrics.py); a scrape of the ingress asks all of them
at once (ingress.py) and merges their answers here: each metric family written once, every sample
with a `replica` label naming the replica it came from, so that sums over replicas are a query
away. Replicas that did not answer in time are left out and counted in a gauge of the ingress's
own, so that a scrape that misses a replica says so instead of showing a dip in every counter.
Read with prometheus_client's parser and written with its exposition: never a parser of our own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

REPLICA_LABEL = "replica"
MISSING_FAMILY = "swiftserve_metrics_replicas_missing"


@dataclass(frozen=True)
class ReplicaMetrics:
    """One replica's answer to a scrape (replica.metrics): its id and its exposition."""

    replica: str
    text: str


def merge_metrics(texts: Mapping[str, str], missing: int = 0) -> bytes:
    """texts: each replica's exposition by replica id. missing: replicas left out (no answer)."""
    families: dict[str, Metric] = {}
    for replica in sorted(texts):  # a stable order: scrapes diff cleanly
        for family in text_string_to_metric_families(texts[replica]):
            _add(families, family, replica)
    families[MISSING_FAMILY] = _missing_gauge(missing)
    return generate_latest(_registry(families.values()))


def _add(families: dict[str, Metric], family: Metric, replica: str) -> None:
    merged = families.get(family.name)
    if merged is None:
        merged = families[family.name] = Metric(family.name, family.documentation, family.type)
    for sample in family.samples:
        labels = {REPLICA_LABEL: replica, **sample.labels}
        merged.add_sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)


def _missing_gauge(missing: int) -> Metric:
    gauge = Metric(MISSING_FAMILY, "Replicas left out of this scrape (no answer in time)", "gauge")
    gauge.add_sample(MISSING_FAMILY, {}, float(missing))
    return gauge


class _Families(Collector):
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def _registry(families: Iterable[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return registry
