"""Ray Serve's request-router extension point, applying routing.py's rule (imports ray).

Ray builds one ResidencyRouter per deployment handle (in the ingress process) and, for each
request, calls `choose_replicas` with the replicas it knows. Each replica's `routing_stats` is
its latest record_routing_stats (replica.py), pulled by Ray's controller every
ROUTING_STATS_PERIOD_S and broadcast to the routers. We return one rank per replica in our order;
Ray tries them in turn, skipping a replica whose queue is full (max_ongoing_requests), so the
rule decides and Ray keeps its back-pressure.
Between two reports this router counts what it has in flight on each replica and records where
it sent a model that was not resident there (routing.expect_loading): a report with a newer
sequence number replaces that guess. A pipeline request records nothing: its entry replica sends
the stages of the models it does not hold to the replicas that do (stage_plan.py), through a
handle of its own whose router records where those went.
Requests are ranked by what stage_plan.route_of reads of them: a relayed request, a stage's call
or a pre-warm from another replica's pipeline.
"""

from __future__ import annotations

import collections
from typing import Any

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from swiftserve.ray import routing
from swiftserve.ray.relay import RelayedRequest
from swiftserve.ray.stage_plan import route_of


class ResidencyRouter(RequestRouter):
    def initialize_state(self, pipelines: dict[str, list[str]] | None = None, **kwargs: Any) -> None:
        """pipelines: each pipeline's models (a pipeline's requests are ranked for all of them)."""
        self._pipelines = {name: tuple(models) for name, models in (pipelines or {}).items()}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._expected: dict[str, tuple[int, set[str]]] = {}  # replica -> (report seq, models sent)

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        request = self._route_request(pending_request)
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        reports = [self._report(r) for r in candidate_replicas]
        return [[by_id[i]] for i in routing.rank(request, reports, self._in_flight)]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        rid = replica_id.unique_id
        self._in_flight[rid] += 1
        replica = self._replicas.get(replica_id)
        if replica is None:
            return
        if self._is_pipeline(pending_request):
            return
        seq = replica.routing_stats.get("seq", 0)
        _, models = self._expected.get(rid, (seq, set()))
        models.update(self._route_request(pending_request).models)
        self._expected[rid] = (seq, models)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        rid = replica_id.unique_id
        if self._in_flight[rid] > 0:
            self._in_flight[rid] -= 1

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._in_flight.pop(replica_id.unique_id, None)
        self._expected.pop(replica_id.unique_id, None)

    def _route_request(self, pending_request: PendingRequest | None) -> routing.RouteRequest:
        return route_of(_first_arg(pending_request), self._pipelines)

    def _is_pipeline(self, pending_request: PendingRequest) -> bool:
        arg = _first_arg(pending_request)
        return isinstance(arg, RelayedRequest) and arg.model in self._pipelines

    def _report(self, replica: RunningReplica) -> routing.ReplicaReport:
        rid = replica.replica_id.unique_id
        report = report_of(rid, replica.routing_stats)
        seq, models = self._expected.get(rid, (report.seq, set()))
        if report.seq > seq:  # a report made after those requests arrived says what is true
            self._expected.pop(rid, None)
            return report
        for model in models:
            report = routing.expect_loading(report, model)
        return report


def report_of(replica_id: str, stats: dict[str, Any]) -> routing.ReplicaReport:
    """A replica's routing stats (replica.record_routing_stats) as a ReplicaReport; a replica
    that has not reported yet has every model cold and no free budget known."""
    return routing.ReplicaReport(
        replica_id,
        dict(stats.get("models", {})),
        int(stats.get("queue_depth", 0)),
        int(stats.get("free_budget_bytes", 0)),
        stats.get("group"),
        int(stats.get("seq", 0)),
    )


def _first_arg(pending_request: PendingRequest | None) -> Any:
    if pending_request is None or not pending_request.args:
        return None
    return pending_request.args[0]
