"""Talks to the local cluster over HTTP: waits for readiness, publishes the example flows, checks convergence.

Everything goes through the same public surfaces a user has: the control API (bearer token) for
publishing and activating, and the replicas' shared address for what each replica has loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from cluster.engine import needed_secrets, needed_services
from cluster.errors import FlowfleetError, FlowValidationError
from cluster.flow.validation import check_and_analyse

log = logging.getLogger(__name__)

POLL_S = 0.1
REQUEST_TIMEOUT_S = 5.0


class StartupFailed(FlowfleetError):
    """A part of the local cluster did not come up; the message says which and why."""

    code = "startup_failed"


@dataclass(frozen=True)
class ExampleFlow:
    """One flow file: `active` files are activated at first start, the others are left to try by hand.
    `secrets` names what its nodes need from the replicas' environment (HF_TOKEN ...)."""

    name: str
    path: Path
    data: bytes
    active: bool
    sample_inputs: dict[str, Any]
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Released:
    flow: str
    hash: str
    generation: int
    activated_now: bool


def read_examples(flows_dir: Path) -> list[ExampleFlow]:
    """Every `*.json` in `flows_dir`. Per flow name, the file named after the flow is the one activated
    (`support_qa.json`); other files of the same flow (`support_qa_v2.json`) are left for the user, and
    so are flows that need a secret (`design_note.json`: HF_TOKEN): a replica without it would refuse
    the version and abort the start, and the local cluster must come up offline."""
    docs: list[tuple[Path, bytes, dict[str, Any]]] = []
    for path in sorted(flows_dir.glob("*.json")):
        data = path.read_bytes()
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise StartupFailed(f"{path} is not valid JSON: {e}") from e
        if not isinstance(doc, dict):
            raise StartupFailed(f"{path} does not hold a flow document (a JSON object)")
        docs.append((path, data, doc))
    names = {_flow_name(path, doc) for path, _, doc in docs}
    chosen: dict[str, Path] = {}
    for name in sorted(names):
        paths = [path for path, _, doc in docs if _flow_name(path, doc) == name]
        chosen[name] = next((p for p in paths if p.stem == name), paths[0])
    examples = []
    for path, data, doc in docs:
        secrets = _secrets(doc)
        active = chosen[_flow_name(path, doc)] == path and not secrets
        examples.append(ExampleFlow(_flow_name(path, doc), path, data, active, _sample_inputs(doc), secrets))
    return examples


def _flow_name(path: Path, doc: dict[str, Any]) -> str:
    name = doc.get("name")
    return name if isinstance(name, str) and name else path.stem


def _secrets(doc: dict[str, Any]) -> tuple[str, ...]:
    """What a valid flow's nodes need from the replicas' environment: secrets, and operator services
    such as a web search provider; none for an invalid one (publishing it reports why)."""
    try:
        analysis = check_and_analyse(doc)
    except FlowValidationError:
        return ()
    return (*needed_secrets(analysis), *needed_services(analysis))


def _sample_inputs(doc: dict[str, Any]) -> dict[str, Any]:
    """The inputs of the document's first example test: a run that is known to work (else none)."""
    tests = doc.get("tests")
    if isinstance(tests, list) and tests and isinstance(tests[0], dict):
        inputs = tests[0].get("inputs")
        if isinstance(inputs, dict):
            return inputs
    return {}


def wait_until(
    what: str, check: Callable[[], bool], alive: Callable[[], str | None], timeout_s: float
) -> None:
    """Poll `check` until it is true; fail early when `alive` names a dead process, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        dead = alive()
        if dead:
            raise StartupFailed(f"while waiting for {what}: {dead}")
        if time.monotonic() > deadline:
            raise StartupFailed(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(POLL_S)


def http_ok(url: str, timeout_s: float = REQUEST_TIMEOUT_S) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    return check


class ControlApi:
    """The few control-plane calls the bootstrap needs."""

    def __init__(self, base_url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=REQUEST_TIMEOUT_S * 6
        )

    def close(self) -> None:
        self.client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise StartupFailed(f"control plane unreachable for {method} {path}: {e}") from e

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code >= 400:
            raise StartupFailed(f"{what} failed with HTTP {response.status_code}: {response.text[:500]}")
        body = response.json()
        if not isinstance(body, dict):
            raise StartupFailed(f"{what}: unexpected reply {response.text[:200]}")
        return body

    def release(self, flow: str) -> dict[str, Any] | None:
        response = self._call("GET", f"/v1/flows/{flow}")
        if response.status_code == 404:
            return None
        body = self._json(response, f"reading the release of {flow}")
        record = body.get("release", body)
        return record if isinstance(record, dict) and record.get("hash") else None

    def publish(self, example: ExampleFlow) -> str:
        response = self._call(
            "POST",
            f"/v1/flows/{example.name}/versions",
            content=example.data,
            headers={
                "Content-Type": "application/json",
                "X-Flowfleet-Message": f"example {example.path.name}",
            },
        )
        body = self._json(response, f"publishing {example.path}")
        return str(body["hash"])

    def activate(self, flow: str, digest: str) -> dict[str, Any]:
        body = self._json(
            self._call("POST", f"/v1/flows/{flow}/activate", json={"hash": digest}), f"activating {flow}"
        )
        record = body.get("release", body)
        if not isinstance(record, dict) or "generation" not in record:
            raise StartupFailed(f"activating {flow}: unexpected reply {body!r:.200}")
        return record


def publish_examples(api: ControlApi, examples: Iterable[ExampleFlow]) -> list[Released]:
    """Publish each active example; activate it only if its flow has no release yet, so a restart never
    undoes what the user activated since."""
    released: list[Released] = []
    for example in examples:
        if not example.active:
            continue
        digest = api.publish(example)
        current = api.release(example.name)
        activated = current is None
        record = api.activate(example.name, digest) if current is None else current
        released.append(
            Released(example.name, str(record["hash"]), int(record["generation"]), activated_now=activated)
        )
        log.info("example flow=%s hash=%s activated_now=%s", example.name, digest[:12], activated)
    return released


def replicas_converged(
    replica_url: str, expected_ids: set[str], releases: list[Released]
) -> Callable[[], bool]:
    """A check that is true once every expected replica, reached through the shared address, has loaded
    every release. Each probe opens a new connection, so a (possibly different) replica answers. It reads
    `/readyz`, which needs no token even when FLOWFLEET_RUN_TOKENS_FILE protects the run APIs."""
    want = {(r.flow, r.hash, r.generation) for r in releases}
    synced: set[str] = set()

    def check() -> bool:
        try:
            response = httpx.get(f"{replica_url}/readyz", timeout=REQUEST_TIMEOUT_S)
        except httpx.HTTPError:
            return False
        replica = response.headers.get("x-flowfleet-replica", "")
        if response.status_code != 200 or replica not in expected_ids:
            return False
        flows = response.json().get("flows", [])
        loaded = {(f["flow"], f["loaded_hash"], f["loaded_generation"]) for f in flows}
        if want <= loaded:
            synced.add(replica)
        else:
            synced.discard(replica)
        return synced == expected_ids

    return check
