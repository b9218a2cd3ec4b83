"""Prometheus metrics of one control plane, on its own CollectorRegistry (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ControlMetrics:
    """Counters the API and the service layer update; `render()` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flowfleet_control_requests",
            "HTTP requests answered by the control plane",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "flowfleet_control_request_seconds",
            "Time to answer a control-plane request",
            ["route"],
            registry=self.registry,
        )
        self.publishes = Counter(
            "flowfleet_control_publishes",
            "Publish attempts by result (created, unchanged, invalid)",
            ["result"],
            registry=self.registry,
        )
        self.activations = Counter(
            "flowfleet_control_activations",
            "Activations and rollbacks by result (ok, conflict, invalid, corrupt, not_found, error)",
            ["action", "result"],
            registry=self.registry,
        )
        self.rollouts = Counter(
            "flowfleet_control_rollouts",
            "Cutovers by outcome (committed, forced, aborted, direct, no_replicas)",
            ["result"],
            registry=self.registry,
        )
        self.ack_seconds = Histogram(
            "flowfleet_control_rollout_ack_seconds",
            "Two-phase cutover: time from the prepare to the last live replica's ACK",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.nacks = Counter(
            "flowfleet_control_rollout_nacks",
            "Replicas not ready for a prepare, by reason (a load failure reason, timeout)",
            ["reason"],
            registry=self.registry,
        )
        self.replicas = Gauge(
            "flowfleet_control_replicas",
            "Live replicas serving each flow generation (refreshed on scrape and by the rollback guard)",
            ["flow", "generation"],
            registry=self.registry,
        )
        self.auto_rollbacks = Counter(
            "flowfleet_control_auto_rollbacks",
            "Automatic rollbacks by result (rolled_back, no_previous, conflict, error)",
            ["result"],
            registry=self.registry,
        )
        self.canary_changes = Counter(
            "flowfleet_control_canary_changes",
            "Canary starts, percent changes, promotions and aborts by actor kind (user, auto) and result",
            ["action", "actor", "result"],
            registry=self.registry,
        )

    def set_replicas(self, counts: dict[tuple[str, int], int]) -> None:
        """Replace the replicas-per-generation gauge (old generations disappear)."""
        self.replicas.clear()
        for (flow, generation), count in counts.items():
            self.replicas.labels(flow, str(generation)).set(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
