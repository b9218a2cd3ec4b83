"""The replica's Prometheus metrics, on a registry of its own (one per app, so tests never collide).

Names follow the reload metrics users already chart; see docs/worker.md for every label.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.values import MutexValue

from worker.agent_metrics import AgentMetrics

RELOAD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# How many (flow, version, outcome) label children of the run metrics are kept at hand (oldest dropped).
RUN_CHILDREN_CACHED = 256


class WorkerMetrics:
    """Every metric of one replica. `last_event_at` feeds flowfleet_seconds_since_last_event."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._monotonic = monotonic
        self.started = monotonic()
        self.last_event_at: float | None = None
        r = self.registry
        self.reload_total = Counter(
            "flowfleet_workflow_reload", "Reload attempts by result.", ["flow", "result"], registry=r
        )
        self.version_info = Gauge(
            "flowfleet_workflow_version_info",
            "1 for the version this replica serves.",
            ["flow", "hash", "generation"],
            registry=r,
        )
        self.reload_duration = Histogram(
            "flowfleet_reload_duration_seconds",
            "Fetch + verify + compile + swap time of successful reloads.",
            ["flow"],
            buckets=RELOAD_BUCKETS,
            registry=r,
        )
        self.reload_errors = Counter(
            "flowfleet_reload_errors", "Failed reloads by reason.", ["flow", "reason"], registry=r
        )
        self.runs_total = Counter(
            "flowfleet_flow_runs", "Runs by version and outcome.", ["flow", "version", "outcome"], registry=r
        )
        self.run_duration = Histogram(
            "flowfleet_flow_run_duration_seconds",
            "Run duration by version.",
            ["flow", "version"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.session_pins = Counter(
            "flowfleet_session_pins",
            "Session pin lookups by result (created, followed, replaced, degraded = Redis unavailable).",
            ["flow", "result"],
            registry=r,
        )
        self.subscriber_connected = Gauge(
            "flowfleet_subscriber_connected", "1 while the change-event subscription is live.", registry=r
        )
        self.since_last_event = Gauge(
            "flowfleet_seconds_since_last_event",
            "Seconds since anything (event, ping or pong) arrived on the subscription.",
            registry=r,
        )
        self.since_last_event.set_function(self._seconds_since_last_event)
        self.messages_stored = Counter(
            "flowfleet_conversation_messages_stored",
            "Conversation messages written to Redis, by flow.",
            ["flow"],
            registry=r,
        )
        self.history_reads = Counter(
            "flowfleet_conversation_history_reads",
            "Conversation history reads, by flow.",
            ["flow"],
            registry=r,
        )
        self.memory_failures = Counter(
            "flowfleet_conversation_failures",
            "Conversation memory failures: read (history unavailable), write (turn buffered), overflow (a "
            "buffered turn dropped).",
            ["kind"],
            registry=r,
        )
        self.stream_first_token = Histogram(
            "flowfleet_stream_first_token_seconds",
            "Streamed runs: time from the response's head to the first model token.",
            ["flow"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        self.stream_duration = Histogram(
            "flowfleet_stream_duration_seconds",
            "Streamed runs: time from the response's head to its last event.",
            ["flow"],
            buckets=RUN_BUCKETS,
            registry=r,
        )
        # Tool calls, model rounds and tokens: what components report through the runtime's meter.
        self.agents = AgentMetrics(r)
        # (flow, version, outcome) -> (runs_total child, run_duration child, their raw values, see
        # count_run): `labels()` validates and joins its arguments on every call, too much per run.
        self._run_children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    def count_run(self, flow: str, version: str, outcome: str, seconds: float | None = None) -> None:
        """One run of `flow` at `version` ended with `outcome`; `seconds` (if given) is its duration.

        Same as `runs_total.labels(flow, version, outcome).inc()` and
        `run_duration.labels(flow, version).observe(seconds)`, with the label children cached and, in
        the usual single-process mode, their values added to directly: a child's `inc` takes a lock per
        call to guard against other threads, and only the event loop's thread ever counts a run.
        """
        key = (flow, version, outcome)
        children = self._run_children.get(key)
        if children is None:
            children = self._run_children_for(key)
        raw = children[2]
        if raw is None:  # multiprocess mode: the values live in shared files, go through the API
            children[0].inc()
            if seconds is not None:
                children[1].observe(seconds)
            return
        runs, total, buckets, bounds = raw
        runs._value += 1.0
        if seconds is not None:
            total._value += seconds
            # The first bucket whose bound is >= seconds, as Histogram.observe picks it (the last is +Inf).
            buckets[bisect_left(bounds, seconds)]._value += 1.0

    def _run_children_for(self, key: tuple[str, str, str]) -> tuple[Any, Any, Any]:
        cache = self._run_children
        while len(cache) >= RUN_CHILDREN_CACHED:
            del cache[next(iter(cache))]  # the oldest entry; its metric values stay in the registry
        flow, version, outcome = key
        runs, duration = (
            self.runs_total.labels(flow, version, outcome),
            self.run_duration.labels(flow, version),
        )
        values = [runs._value, duration._sum, *duration._buckets]
        raw = None
        if all(type(value) is MutexValue for value in values):
            raw = (runs._value, duration._sum, duration._buckets, duration._upper_bounds)
        children = (runs, duration, raw)
        cache[key] = children
        return children

    def forget_version(self, flow: str, version: str) -> None:
        """Drop the cached label children of a version that no longer serves (the metric values stay)."""
        for key in [k for k in self._run_children if k[0] == flow and k[1] == version]:
            del self._run_children[key]

    def observe_stream(self, flow: str, first_token: float | None, duration: float) -> None:
        if first_token is not None:
            self.stream_first_token.labels(flow).observe(first_token)
        self.stream_duration.labels(flow).observe(duration)

    def _seconds_since_last_event(self) -> float:
        since = self.last_event_at if self.last_event_at is not None else self.started
        return max(0.0, self._monotonic() - since)

    def mark_event(self) -> None:
        self.last_event_at = self._monotonic()

    def set_version(self, flow: str, old: tuple[str, int] | None, new: tuple[str, int]) -> None:
        """Move the version_info 1 from the old (hash, generation) to the new one."""
        if old is not None and old != new:
            if old[0] != new[0]:
                self.forget_version(flow, old[0])
            try:
                self.version_info.remove(flow, old[0], str(old[1]))
            except KeyError:
                pass
        self.version_info.labels(flow, new[0], str(new[1])).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
