"""`flowfleet status FLOW --wait` against a scripted control API: progress, success, failure, timeout."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx

from control.cli.client import ApiClient
from control.cli.wait import EXIT_FAILED, EXIT_TIMEOUT, Waiter


def body(
    current: int, total: int, generation: int = 7, failed: tuple[str, ...] = (), **release: Any
) -> dict[str, Any]:
    replicas = [
        {"replica": f"r{i}", "generation": generation if i < current else generation - 1,
         "state": "current" if i < current else ("failed" if f"r{i}" in failed else "behind"),
         "reason": "invalid_document" if f"r{i}" in failed else None, "error": "unknown component"}
        for i in range(total)
    ]  # fmt: skip
    return {"flow": "qa", "generation": generation, "current": current, "total": total,
            "done": current == total, "failed": list(failed), "replicas": replicas,
            "release": {"generation": generation, "activated_by": "ci", **release}}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def waiter(
    bodies: list[dict[str, Any]], *, tty: bool = False, timeout: float = 10.0
) -> tuple[Waiter, io.StringIO, io.StringIO]:
    replies: Iterator[dict[str, Any]] = iter(bodies)
    last: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/flows/qa/rollout"
        last[:] = [next(replies, last[0] if last else {})]
        return httpx.Response(200, json=last[0])

    api = ApiClient("http://control", "token", transport=httpx.MockTransport(handler))
    out, err, clock = io.StringIO(), io.StringIO(), Clock()
    w = Waiter(api, "qa", timeout_s=timeout, out=out, err=err, tty=tty, monotonic=clock, sleep=clock.sleep)
    return w, out, err


def test_progress_lines_then_success() -> None:
    w, out, err = waiter([body(1, 3), body(1, 3), body(2, 3), body(3, 3)])
    assert w.run() == 0
    assert out.getvalue().splitlines() == [
        "1/3 replicas on generation 7",
        "2/3 replicas on generation 7",
        "3/3 replicas on generation 7 — qa is rolled out",
    ]
    assert err.getvalue() == ""


def test_on_a_terminal_the_progress_line_is_rewritten() -> None:
    w, out, _ = waiter([body(1, 2), body(2, 2)], tty=True)
    assert w.run() == 0
    assert (
        out.getvalue()
        == "\r\033[K1/2 replicas on generation 7\r\033[K2/2 replicas on generation 7 — qa is rolled out\n"
    )


def test_a_replica_that_cannot_load_the_release_fails_with_6() -> None:
    w, out, err = waiter([body(2, 3, failed=("r2",))])
    assert w.run() == EXIT_FAILED
    assert err.getvalue().splitlines() == [
        "flowfleet: qa: 1 replica(s) cannot load generation 7",
        "  r2: generation 6: invalid_document: unknown component",
    ]


def test_timeout_lists_the_replicas_behind_with_7() -> None:
    w, _, err = waiter([body(1, 2)], timeout=1.0)
    assert w.run() == EXIT_TIMEOUT
    lines = err.getvalue().splitlines()
    assert lines[0] == "flowfleet: qa: timed out after 1s: 1/2 replicas on generation 7"
    assert lines[1:] == ["  r1: generation 6: not current"]


def test_an_automatic_rollback_while_waiting_fails_with_6() -> None:
    rolled = body(2, 2, generation=8, activated_by="auto-rollback", reason="r2 failed 3 times")
    w, _, err = waiter([body(1, 2), rolled])
    assert w.run() == EXIT_FAILED
    assert (
        "generation 7 was rolled back automatically (now generation 8): r2 failed 3 times" in err.getvalue()
    )
