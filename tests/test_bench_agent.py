"""The agent benchmark runs in quick mode and measures what it says: 4 model rounds per run, both sides."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench import bench_agent


def test_agent_quick(tmp_path: Path) -> None:
    bench_agent.main(["--quick", "--out", str(tmp_path)])
    results = orjson.loads((tmp_path / "agent.json").read_bytes())
    agent = results["agent"]
    assert results["quick"] is True and agent["model_rounds_per_run"] == 4 and agent["runs"] == 20
    assert agent["agent_ms_per_round_p50"] > 0 and agent["bare_ms_per_round_p50"] > 0
    expected = agent["agent_ms_per_round_p50"] - agent["bare_ms_per_round_p50"]
    assert abs(agent["added_ms_per_round_p50"] - expected) < 0.002
