"""Bad versions written straight into Redis (bypassing every check of the store and the control plane):
a corrupted blob, an invalid document and an oversized document, each pointed to by the release record
and announced. Real worker processes under load and a real control plane."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cluster.flow.hashing import content_address
from cluster.flow.validation import DEFAULT_LIMITS
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.chaos.support import FLOW, Load, inject_release, poll, publish, qa_doc, release
from tests.control_support import DEPLOYER_TOKEN, ControlProcess, bearer
from tests.e2e.fleet import WorkerProcess, get_json, served_version, wait_all_serve, wait_ready


@pytest.fixture
def control(redis_server, namespace, tmp_path) -> Iterator[ControlProcess]:
    server = ControlProcess(redis_server.url, namespace, tmp_path).start()
    yield server
    server.stop()


def corrupted(redis_client: Any, keys: Keys) -> Callable[[Store], Any]:
    async def write(store: Store) -> tuple[str, str]:
        digest = await publish(store, qa_doc("v2"))
        await redis_client.set(keys.blob(FLOW, digest), content_address(qa_doc("evil"))[0])
        return digest, "hash_mismatch"

    return write


def invalid(redis_client: Any, keys: Keys) -> Callable[[Store], Any]:
    async def write(store: Store) -> tuple[str, str]:
        doc = qa_doc("v3")
        doc["nodes"][1]["type"] = "NoSuchComponent"
        data, digest = content_address(doc)
        await redis_client.set(keys.blob(FLOW, digest), data)
        await redis_client.zadd(keys.versions(FLOW), {digest: 1.0})
        return digest, "invalid_document"

    return write


def oversized(redis_client: Any, keys: Keys) -> Callable[[Store], Any]:
    async def write(store: Store) -> tuple[str, str]:
        doc = qa_doc("v4")
        doc["description"] = "x" * (DEFAULT_LIMITS.max_document_bytes + 1)
        data, digest = content_address(doc)
        assert len(data) > DEFAULT_LIMITS.max_document_bytes
        await redis_client.set(keys.blob(FLOW, digest), data)
        await redis_client.zadd(keys.versions(FLOW), {digest: 1.0})
        return digest, "invalid_document"

    return write


async def expect_refused_everywhere(
    http: httpx.AsyncClient, store: Store, fleet: list[WorkerProcess], serving: str, refused: str, reason: str
) -> dict[str, Any]:
    async def all_report_it() -> bool:
        statuses = {s["id"]: s for s in await store.read_fleet()}
        errors = [(statuses.get(w.replica_id) or {}).get("last_error") or {} for w in fleet]
        return all(e.get("hash") == refused and e.get("reason") == reason for e in errors)

    await poll(all_report_it, what=f"every replica reporting {reason} for {refused[:12]}")
    for w in fleet:
        assert await served_version(http, w, FLOW) == serving
        metrics = (await http.get(f"{w.url}/metrics")).text
        assert f'flowfleet_reload_errors_total{{flow="{FLOW}",reason="{reason}"}}' in metrics
        ready = await get_json(http, f"{w.url}/readyz")
        assert ready is not None and ready["flows"][0]["state"] == "loaded_with_error"
    statuses = {s["id"]: s for s in await store.read_fleet()}
    return statuses[fleet[0].replica_id]["last_error"]


@pytest.mark.parametrize(
    ("make_bad", "api_status"),
    [(corrupted, 409), (invalid, 422), (oversized, 422)],
    ids=["corrupted-blob", "invalid-document", "oversized-document"],
)
async def test_bad_version_written_into_redis_is_refused_everywhere_and_v1_keeps_serving(
    redis_server, namespace, make_fleet, http, start_load, redis_client, store, control, make_bad, api_status
):
    """Injected: the bad version's bytes written with SET, the release record pointed at it with HSET and
    a release event published, as an intruder or a broken tool might. Checked: every replica refuses it
    (reason in its status, metrics and readiness), keeps serving v1 to every run under load (no failure,
    no other version seen), and the control plane refuses to activate it too."""
    keys = Keys(namespace)
    v1, gen1 = await release(store, qa_doc("v1"))
    fleet = make_fleet(redis_server.url)
    await wait_ready(http, fleet)
    await wait_all_serve(http, fleet, FLOW, v1)
    load = start_load(fleet)
    await load.wait_for(30, "load before the injection")

    bad, reason = await make_bad(redis_client, keys)(store)
    await inject_release(redis_client, keys, bad, gen1 + 1)
    error = await expect_refused_everywhere(http, store, fleet, v1, bad, reason)
    await load.wait_for(30, "load after the refusal")
    records = await load.stop()

    r = await http.post(
        f"{control.url}/v1/flows/{FLOW}/activate", json={"hash": bad}, headers=bearer(DEPLOYER_TOKEN)
    )
    failed = len(Load.failures(records))
    print(
        f"injected: {reason} version {bad[:12]} into Redis + release event; checked: 3 replicas refused "
        f"({error['message'][:80]}), {len(records)} runs ({failed} failed), control plane answered "
        f"{r.status_code}"
    )
    assert not Load.failures(records), Load.failures(records)[:5]
    assert {rec[4] for rec in records} == {v1}
    assert r.status_code == api_status, r.text
    if make_bad is oversized:
        assert "the limit is" in error["message"]
