"""`flowfleet status FLOW --wait`: follow a flow's rollout until every live replica runs the release.

Polls `GET /v1/flows/{name}/rollout` and shows `3/5 replicas on generation 7` — rewritten in place on a
terminal, one line per change otherwise. Exits 0 once every live replica is current, 6 as soon as a
replica fails to load the release (or the release is rolled back automatically meanwhile), 7 on timeout;
both failures list the offending replicas on stderr, one per line. Like `kubectl rollout status`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from control.cli.client import ApiClient, path

EXIT_FAILED = 6
EXIT_TIMEOUT = 7
POLL_S = 0.2


def replica_lines(body: dict[str, Any], states: tuple[str, ...]) -> list[str]:
    lines = []
    for r in body.get("replicas", []):
        if r.get("state") in states:
            detail = f"{r.get('reason')}: {r.get('error')}" if r.get("state") == "failed" else "not current"
            lines.append(f"  {r.get('replica')}: generation {r.get('generation')}: {detail}")
    return lines


class Waiter:
    def __init__(
        self,
        api: ApiClient,
        flow: str,
        *,
        timeout_s: float,
        out: TextIO,
        err: TextIO,
        tty: bool,
        poll_s: float = POLL_S,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api, self.flow = api, flow
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self.out, self.err, self.tty = out, err, tty
        self._monotonic, self._sleep = monotonic, sleep
        self._last = ""

    def show(self, line: str) -> None:
        if line == self._last:
            return
        self._last = line
        if self.tty:
            self.out.write("\r\033[K" + line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def finish(self, line: str) -> None:
        if self.tty:
            self.out.write("\r\033[K")
        self.out.write(line + "\n")
        self.out.flush()

    def fail(self, headline: str, lines: list[str], code: int) -> int:
        if self.tty:
            self.out.write("\n")
        self.err.write("flowfleet: " + headline + "\n" + "".join(line + "\n" for line in lines))
        self.err.flush()
        return code

    def run(self) -> int:
        deadline = self._monotonic() + self.timeout_s
        url = path("v1", "flows", self.flow, "rollout")
        started: int | None = None
        while True:
            body = self.api.get(url)
            generation = body.get("generation")
            release = body.get("release") or {}
            if started is None:
                started = generation
            elif generation != started and release.get("activated_by") == "auto-rollback":
                return self.fail(
                    f"{self.flow}: generation {started} was rolled back automatically "
                    f"(now generation {generation}): {release.get('reason')}",
                    [],
                    EXIT_FAILED,
                )
            line = f"{body['current']}/{body['total']} replicas on generation {generation}"
            if body.get("failed"):
                self.show(line)
                return self.fail(
                    f"{self.flow}: {len(body['failed'])} replica(s) cannot load generation {generation}",
                    replica_lines(body, ("failed",)),
                    EXIT_FAILED,
                )
            if body.get("done"):
                self.finish(line + f" — {self.flow} is rolled out")
                return 0
            self.show(line)
            if self._monotonic() >= deadline:
                return self.fail(
                    f"{self.flow}: timed out after {self.timeout_s:g}s: {line}",
                    replica_lines(body, ("behind", "failed")),
                    EXIT_TIMEOUT,
                )
            self._sleep(self.poll_s)
