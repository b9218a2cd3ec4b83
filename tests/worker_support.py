"""Helpers for the worker tests: a toy compiler standing in for the engine, and Redis setup via the Store.

The toy compiler only exists so the worker's own logic (verify, swap, backoff, serving) can be tested
without depending on the engine; the end-to-end tests run real worker processes with the real engine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from cluster.errors import FlowValidationError, Problem, RunInputError, RunTimeout
from cluster.flow.hashing import content_address
from cluster.store.store import Store


@dataclass(frozen=True)
class ToyResult:
    outputs: dict[str, Any]
    trace: list[dict[str, Any]] | None
    duration_ms: float


@dataclass
class ToyFlow:
    """Echoes its inputs and its document's `label`; `gate` (by label) makes a run wait until released."""

    label: str
    required: tuple[str, ...]
    gates: dict[str, asyncio.Event]
    started: dict[str, asyncio.Event]
    fail_with: str | None = None

    async def run(self, inputs: Mapping[str, Any], *, timeout: float | None = None, trace: bool = False):
        t0 = time.monotonic()
        for name in self.required:
            if name not in inputs:
                raise RunInputError(f"missing input {name!r}", input=name)
        if self.fail_with == "timeout":
            raise RunTimeout("run exceeded its budget", timeout_s=timeout or 0.0)
        if self.label in self.gates:
            self.started.setdefault(self.label, asyncio.Event()).set()
            await self.gates[self.label].wait()
        return ToyResult(
            {"label": self.label, "echo": dict(inputs)},
            [{"node": "toy"}] if trace else None,
            (time.monotonic() - t0) * 1000,
        )


@dataclass
class ToyCompiler:
    """Compiles toy documents: {"label": str, "required": [...], "broken": bool, "fail_with": str}."""

    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    started: dict[str, asyncio.Event] = field(default_factory=dict)
    compiled: list[str] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)

    def __call__(self, data: bytes) -> ToyFlow:
        self.threads.append(threading.get_ident())
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise FlowValidationError([Problem("", "invalid_json", str(e))]) from e
        if not isinstance(doc, dict) or not isinstance(doc.get("label"), str):
            raise FlowValidationError([Problem("/label", "required", "label is required")])
        if doc.get("broken"):
            raise FlowValidationError([Problem("/nodes/0/type", "unknown_component", "unknown type 'Nope'")])
        if doc.get("explode"):
            raise RuntimeError("component build blew up")
        self.compiled.append(doc["label"])
        return ToyFlow(
            doc["label"], tuple(doc.get("required", ())), self.gates, self.started, doc.get("fail_with")
        )


def toy_doc(label: str, **extra: Any) -> tuple[bytes, str]:
    return content_address({"label": label, **extra})


async def publish_activate(store: Store, flow: str, label: str, **extra: Any) -> tuple[str, int]:
    """Publish a toy version and activate it through the real Store; returns (hash, generation)."""
    data, digest = toy_doc(label, **extra)
    await store.publish(flow, data, digest, author="test", message=label, node_count=1)
    release = await store.activate(flow, digest, by="test", reason=label)
    return digest, release.generation


async def wait_for(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    """Bounded polling: wait until `predicate()` is true, fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)
