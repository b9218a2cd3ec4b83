"""Per-version run counters: observation, merging, percentiles and fleet aggregation by epoch."""

from __future__ import annotations

import pytest

from cluster.traffic.runstats import BOUNDS_MS, RunStats, VersionCounts, aggregate, quantile, summarize

A, B = "a" * 64, "b" * 64


def test_observe_counts_runs_errors_and_latency_buckets() -> None:
    counts = VersionCounts()
    counts.observe(ok=True, seconds=0.0005)
    counts.observe(ok=False, seconds=0.003)
    counts.observe(ok=True, seconds=120.0)
    assert (counts.runs, counts.errors) == (3, 1)
    assert counts.buckets[0] == 1 and counts.buckets[2] == 1 and counts.buckets[-1] == 1
    assert VersionCounts.from_dict(counts.as_dict()) == counts


@pytest.mark.parametrize(
    "raw",
    [None, [], {"runs": 1}, {"runs": -1, "errors": 0, "buckets": [0] * 16},
     {"runs": True, "errors": 0, "buckets": [0] * 16}, {"runs": 1, "errors": 0, "buckets": [0] * 3},
     {"runs": 1, "errors": 0, "buckets": ["1"] + [0] * 15}],
)  # fmt: skip
def test_unusable_counters_are_ignored(raw: object) -> None:
    assert VersionCounts.from_dict(raw) is None


def test_quantiles_interpolate_inside_buckets() -> None:
    empty = [0] * (len(BOUNDS_MS) + 1)
    assert quantile(empty, 0.5) is None
    ten_ms = list(empty)
    ten_ms[3] = 100  # all in (5, 10] ms
    assert quantile(ten_ms, 0.5) == pytest.approx(7.5)
    assert quantile(ten_ms, 0.95) == pytest.approx(9.75)
    slow = list(empty)
    slow[-1] = 4
    assert quantile(slow, 0.5) == BOUNDS_MS[-1]


def test_summary_of_nothing_is_zero_runs() -> None:
    s = summarize(A, None)
    assert (s.runs, s.errors, s.error_rate, s.p50_ms, s.p95_ms) == (0, 0, 0.0, None, None)


def test_run_stats_start_afresh_in_a_new_epoch() -> None:
    stats = RunStats()
    stats.record("qa", 0.0, A, ok=True, seconds=0.001)
    stats.record("qa", 0.0, A, ok=False, seconds=0.001)
    assert stats.report()["qa"]["versions"][A]["runs"] == 2
    stats.record("qa", 100.0, B, ok=True, seconds=0.001)
    report = stats.report()["qa"]
    assert report["epoch"] == 100.0 and list(report["versions"]) == [B]
    assert (report["versions"][B]["runs"], report["versions"][B]["errors"]) == (1, 0)


def test_aggregate_sums_replicas_of_the_current_epoch_only() -> None:
    def status(epoch: float, runs: int, errors: int) -> dict[str, object]:
        stats = RunStats()
        for i in range(runs):
            stats.record("qa", epoch, B, ok=i >= errors, seconds=0.002)
            stats.record("qa", epoch, A, ok=True, seconds=0.002)
        return {"id": "r", "runs": stats.report()}

    statuses = [status(5.0, 10, 3), status(5.0, 20, 2), status(4.0, 99, 99), {"id": "old"}, {"runs": "x"}]
    total = aggregate(statuses, "qa", 5.0)
    assert (total[B].runs, total[B].errors) == (30, 5)
    assert (total[A].runs, total[A].errors) == (30, 0)
    assert aggregate(statuses, "other", 5.0) == {}


def test_report_drops_versions_no_longer_served() -> None:
    stats = RunStats()
    for digest in (A, B):
        stats.record("qa", 0.0, digest, ok=True, seconds=0.001)
    stats.record("old", 0.0, A, ok=True, seconds=0.001)
    report = stats.report({("qa", B)})
    assert list(report) == ["qa"] and list(report["qa"]["versions"]) == [B]
    assert list(stats.report()["qa"]["versions"]) == [B]  # dropped for good


def test_a_duration_on_a_bucket_bound_counts_in_that_bucket() -> None:
    for i, bound in enumerate(BOUNDS_MS):
        counts = VersionCounts()
        counts.observe(ok=True, seconds=bound / 1000)
        counts.observe(ok=True, seconds=bound / 1000 * 1.001)
        assert counts.buckets[i] == 1 and counts.buckets[i + 1] == 1, bound
