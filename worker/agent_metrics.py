"""What agents and models cost, as Prometheus metrics: the replica's implementation of the components'
`Meter` (cluster/components/meter.py), on the replica's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

ROUND_BUCKETS = (1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.tool_calls = Counter(
            "flowfleet_agent_tool_calls",
            "Tool calls by agents, by flow, tool and outcome (ok, error, timeout, invalid_arguments, "
            "unknown_tool).",
            ["flow", "tool", "outcome"],
            registry=r,
        )
        self.rounds = Histogram(
            "flowfleet_agent_model_rounds",
            "Model rounds per agent run.",
            ["flow"],
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.tokens_total = Counter(
            "flowfleet_llm_tokens",
            "Tokens the providers reported using (usage), by flow, model and kind (prompt, completion).",
            ["flow", "model", "kind"],
            registry=r,
        )

    def tool_call(self, flow: str, tool: str, outcome: str) -> None:
        self.tool_calls.labels(flow, tool, outcome).inc()

    def model_rounds(self, flow: str, rounds: int) -> None:
        self.rounds.labels(flow).observe(rounds)

    def tokens(self, flow: str, model: str, kind: str, count: int) -> None:
        self.tokens_total.labels(flow, model, kind).inc(count)
