"""Prometheus metrics of one control plane, on its own CollectorRegistry (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
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

        self.canary_changes = Counter(
            "flowfleet_control_canary_changes",
            "Canary starts, percent changes, promotions and aborts by actor kind (user, auto) and result",
            ["action", "actor", "result"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
