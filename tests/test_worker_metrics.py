"""WorkerMetrics' cached label children for run metrics: same series as `labels()`, bounded, and dropped
for a version that stops serving."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from worker import metrics as metrics_module
from worker.metrics import WorkerMetrics


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_count_run_feeds_the_same_series_as_labels() -> None:
    m = WorkerMetrics()
    m.count_run("qa", "h1", "ok", 0.002)
    m.count_run("qa", "h1", "ok", 0.5)
    m.count_run("qa", "h1", "run_timeout", 60.0)
    m.count_run("qa", "h1", "overloaded")  # no duration for a run that never started
    m.runs_total.labels("qa", "h1", "ok").inc()  # the uncached path adds to the same child
    r = m.registry
    assert sample(r, "flowfleet_flow_runs_total", flow="qa", version="h1", outcome="ok") == 3
    assert sample(r, "flowfleet_flow_runs_total", flow="qa", version="h1", outcome="run_timeout") == 1
    assert sample(r, "flowfleet_flow_runs_total", flow="qa", version="h1", outcome="overloaded") == 1
    assert sample(r, "flowfleet_flow_run_duration_seconds_count", flow="qa", version="h1") == 3
    assert sample(r, "flowfleet_flow_run_duration_seconds_bucket", flow="qa", version="h1", le="0.005") == 1


def test_the_cache_is_bounded_and_evicted_entries_keep_counting(monkeypatch) -> None:
    monkeypatch.setattr(metrics_module, "RUN_CHILDREN_CACHED", 4)
    m = WorkerMetrics()
    for i in range(10):
        m.count_run("qa", f"h{i}", "ok", 0.01)
    assert len(m._run_children) == 4
    assert {key[1] for key in m._run_children} == {"h6", "h7", "h8", "h9"}
    m.count_run("qa", "h0", "ok", 0.01)  # evicted earlier: looked up again, same series
    assert sample(m.registry, "flowfleet_flow_runs_total", flow="qa", version="h0", outcome="ok") == 2
    assert len(m._run_children) == 4


def test_a_version_swapped_out_leaves_the_cache_but_keeps_its_values() -> None:
    m = WorkerMetrics()
    m.set_version("qa", None, ("old", 1))
    m.count_run("qa", "old", "ok", 0.01)
    m.count_run("qa", "old", "node_failed", 0.01)
    m.count_run("other", "old", "ok", 0.01)
    m.set_version("qa", ("old", 1), ("new", 2))
    assert set(m._run_children) == {("other", "old", "ok")}
    assert sample(m.registry, "flowfleet_flow_runs_total", flow="qa", version="old", outcome="ok") == 1
    m.count_run("qa", "old", "ok", 0.01)  # an in-flight run of the old version still counts
    assert sample(m.registry, "flowfleet_flow_runs_total", flow="qa", version="old", outcome="ok") == 2


def test_agent_metrics_count_tool_calls_rounds_and_tokens() -> None:
    metrics = WorkerMetrics()
    meter = metrics.agents
    meter.tool_call("support", "calculator", "ok")
    meter.tool_call("support", "calculator", "timeout")
    meter.model_rounds("support", 3)
    meter.tokens("support", "gpt-4o-mini", "prompt", 120)
    meter.tokens("support", "gpt-4o-mini", "prompt", 30)
    value = metrics.registry.get_sample_value
    assert (
        value("flowfleet_agent_tool_calls_total", {"flow": "support", "tool": "calculator", "outcome": "ok"})
        == 1
    )
    assert value("flowfleet_agent_model_rounds_sum", {"flow": "support"}) == 3
    assert (
        value("flowfleet_llm_tokens_total", {"flow": "support", "model": "gpt-4o-mini", "kind": "prompt"})
        == 150
    )
    assert b"flowfleet_agent_tool_calls_total" in metrics.render()


def test_a_replica_hands_its_meter_to_the_components() -> None:
    from cluster.settings import Settings
    from worker.replica import Replica

    replica = Replica(Settings(redis_url="redis://127.0.0.1:1/0", replica_id="m1"))
    assert replica.runtime.meter is replica.metrics.agents
