"""The replica's HTTP surface in-process (httpx.ASGITransport) with a real redis-server behind it."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import httpx
import pytest

from cluster.settings import Settings
from cluster.store.keys import Keys
from cluster.store.store import Store
from tests.worker_support import ToyCompiler, publish_activate, toy_doc, wait_for
from worker.app import create_app


@asynccontextmanager
async def worker(redis_url: str, namespace: str, compiler: ToyCompiler | None = None, **overrides):
    settings = Settings.from_env(
        {},
        redis_url=redis_url,
        namespace=namespace,
        replica_id="replica-a",
        reconcile_s=0.5,
        **overrides,
    )
    app = create_app(settings, compiler=compiler or ToyCompiler())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def replica(client):
    return client.app.state.replica


@pytest.fixture
def store(redis_client, namespace):
    return Store(redis_client, Keys(namespace))


async def ready(client) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def serving(client, flow: str, digest: str) -> bool:
    flows = (await client.get("/v1/flows")).json()["flows"]
    return any(f["flow"] == flow and f["hash"] == digest for f in flows)


async def test_run_returns_outputs_version_and_headers(redis_server, namespace, store):
    digest, gen = await publish_activate(store, "qa", "v1")
    async with worker(redis_server.url, namespace) as client:
        await wait_for(lambda: ready(client), what="ready")
        r = await client.post("/v1/flows/qa/run", json={"inputs": {"question": "hi"}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["outputs"] == {"label": "v1", "echo": {"question": "hi"}}
        assert (body["flow"], body["version"], body["generation"]) == ("qa", digest, gen)
        assert body["duration_ms"] >= 0 and "trace" not in body
        assert r.headers["x-flowfleet-version"] == digest
        assert r.headers["x-flowfleet-replica"] == "replica-a"
        traced = await client.post("/v1/flows/qa/run", json={"inputs": {}, "trace": True})
        assert traced.json()["trace"] == [{"node": "toy"}]


async def test_error_responses_are_json_with_the_right_status(redis_server, namespace, store):
    await publish_activate(store, "qa", "v1", required=["question"])
    await publish_activate(store, "slowpoke", "t", fail_with="timeout")
    async with worker(redis_server.url, namespace) as client:
        await wait_for(lambda: ready(client), what="ready")
        cases = [
            ("/v1/flows/nope/run", {"inputs": {}}, 404, "flow_not_found"),
            ("/v1/flows/qa/run", {"inputs": {}}, 422, "invalid_inputs"),
            ("/v1/flows/qa/run", {"inputs": ["x"]}, 422, "invalid_inputs"),
            ("/v1/flows/qa/run", {"inputs": {"question": 1}, "trace": "yes"}, 400, "bad_request"),
            ("/v1/flows/slowpoke/run", {"inputs": {}}, 504, "run_timeout"),
        ]
        for path, body, status, code in cases:
            r = await client.post(path, json=body)
            assert (r.status_code, r.json()["error"]) == (status, code), (path, r.text)
            assert r.json()["message"]
            assert r.headers["x-flowfleet-replica"] == "replica-a"
        r = await client.post("/v1/flows/qa/run", content=b"{not json")
        assert (r.status_code, r.json()["error"]) == (400, "bad_request")
        r = await client.get("/v1/flows/qa/run")
        assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
        metrics = (await client.get("/metrics")).text
        assert 'flowfleet_flow_runs_total{flow="qa",outcome="invalid_inputs"' in metrics
        assert 'outcome="run_timeout"' in metrics


async def test_overloaded_replica_answers_503_with_retry_after(redis_server, namespace, store):
    compiler = ToyCompiler()
    compiler.gates["slow"] = asyncio.Event()
    await publish_activate(store, "qa", "slow")
    async with worker(redis_server.url, namespace, compiler, max_concurrent_runs=1) as client:
        await wait_for(lambda: ready(client), what="ready")
        first = asyncio.create_task(client.post("/v1/flows/qa/run", json={"inputs": {}}))
        started = compiler.started.setdefault("slow", asyncio.Event())
        await asyncio.wait_for(started.wait(), timeout=10)
        r = await client.post("/v1/flows/qa/run", json={"inputs": {}})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "overloaded" and r.json()["details"] == {"limit": 1}
        compiler.gates["slow"].set()
        assert (await first).status_code == 200
        assert (await client.post("/v1/flows/qa/run", json={"inputs": {}})).status_code == 200


async def test_run_started_on_v1_finishes_on_v1_while_new_runs_get_v2(redis_server, namespace, store):
    compiler = ToyCompiler()
    compiler.gates["v1"] = asyncio.Event()
    d1, _ = await publish_activate(store, "qa", "v1")
    async with worker(redis_server.url, namespace, compiler) as client:
        await wait_for(lambda: ready(client), what="ready")
        slow = asyncio.create_task(client.post("/v1/flows/qa/run", json={"inputs": {}}))
        await asyncio.wait_for(compiler.started.setdefault("v1", asyncio.Event()).wait(), timeout=10)
        d2, _ = await publish_activate(store, "qa", "v2")
        await wait_for(lambda: serving(client, "qa", d2), what="swap to v2")
        fresh = await client.post("/v1/flows/qa/run", json={"inputs": {}})
        assert fresh.json()["version"] == d2 and fresh.json()["outputs"]["label"] == "v2"
        assert not slow.done()
        compiler.gates["v1"].set()
        old = await slow
        assert old.status_code == 200
        assert old.json()["version"] == d1 and old.json()["outputs"]["label"] == "v1"
        assert old.headers["x-flowfleet-version"] == d1


async def test_list_flows_health_and_metrics(redis_server, namespace, store):
    digest, gen = await publish_activate(store, "qa", "v1")
    async with worker(redis_server.url, namespace) as client:
        await wait_for(lambda: serving(client, "qa", digest), what="loaded")
        flows = (await client.get("/v1/flows")).json()
        assert flows["replica"] == "replica-a"
        [entry] = flows["flows"]
        assert (entry["flow"], entry["hash"], entry["generation"]) == ("qa", digest, gen)
        assert entry["loaded_at"] > 0
        assert (await client.get("/healthz")).json() == {"status": "ok", "replica": "replica-a"}
        r = await client.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text
        for name in (
            "flowfleet_workflow_reload_total",
            "flowfleet_workflow_version_info",
            "flowfleet_reload_duration_seconds_bucket",
            "flowfleet_subscriber_connected",
            "flowfleet_seconds_since_last_event",
        ):
            assert name in text, name
        assert f'flowfleet_workflow_version_info{{flow="qa",generation="{gen}",hash="{digest}"}} 1.0' in text


async def test_readyz_waits_for_redis_and_reports_each_flow(make_redis_server, namespace):
    server = make_redis_server()
    server.kill()
    async with worker(server.url, namespace) as client:
        r = await client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        assert r.json()["details"]["synced"] is False
        assert (await client.get("/healthz")).status_code == 200, "alive even when not ready"
        server.start()
        await wait_for(lambda: ready(client), timeout=20, what="ready once Redis appears")


async def test_a_refused_only_version_does_not_hold_readiness_back(redis_server, namespace, redis_client):
    keys = Keys(namespace)
    data, bad = toy_doc("bad", broken=True)
    await redis_client.sadd(keys.flows(), "qa")
    await redis_client.set(keys.blob("qa", bad), data)
    await redis_client.hset(keys.release("qa"), mapping={"hash": bad, "generation": 1})
    async with worker(redis_server.url, namespace) as client:
        await wait_for(lambda: ready(client), what="ready")
        body = (await client.get("/readyz")).json()
        assert body["flows"][0]["state"] == "refused"
        r = await client.post("/v1/flows/qa/run", json={"inputs": {}})
        assert r.status_code == 503 and r.json()["error"] == "flow_not_loaded"
        assert r.json()["details"]["reason"] == "invalid_document" and r.headers["retry-after"] == "1"


async def test_shutdown_waits_for_the_in_flight_run(redis_server, namespace, store):
    compiler = ToyCompiler()
    compiler.gates["v1"] = asyncio.Event()
    await publish_activate(store, "qa", "v1")
    settings = Settings.from_env(
        {}, redis_url=redis_server.url, namespace=namespace, replica_id="r-stop", shutdown_grace_s=30
    )
    app = create_app(settings, compiler=compiler)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        await wait_for(lambda: ready(client), what="ready")
        run = asyncio.create_task(client.post("/v1/flows/qa/run", json={"inputs": {}}))
        await asyncio.wait_for(compiler.started.setdefault("v1", asyncio.Event()).wait(), timeout=10)
        stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))
        await wait_for(lambda: app.state.replica.state.draining, what="draining")
        assert (await client.get("/readyz")).status_code == 503
        refused = await client.post("/v1/flows/qa/run", json={"inputs": {}})
        assert refused.status_code == 503 and refused.json()["error"] == "shutting_down"
        assert not stopping.done(), "shutdown must wait for the in-flight run"
        compiler.gates["v1"].set()
        assert (await run).status_code == 200
        await asyncio.wait_for(stopping, timeout=10)


async def test_shutdown_gives_up_on_a_run_that_outlasts_the_grace(redis_server, namespace, store, caplog):
    compiler = ToyCompiler()
    compiler.gates["stuck"] = asyncio.Event()
    await publish_activate(store, "qa", "stuck")
    settings = Settings.from_env(
        {}, redis_url=redis_server.url, namespace=namespace, replica_id="r-grace", shutdown_grace_s=0.2
    )
    app = create_app(settings, compiler=compiler)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        await wait_for(lambda: ready(client), what="ready")
        run = asyncio.create_task(client.post("/v1/flows/qa/run", json={"inputs": {}}))
        await asyncio.wait_for(compiler.started.setdefault("stuck", asyncio.Event()).wait(), timeout=10)
        await asyncio.wait_for(lifespan.__aexit__(None, None, None), timeout=15)
        assert "shutdown grace 0.2s over with 1 run(s) still in flight" in caplog.text
        compiler.gates["stuck"].set()
        assert (await run).status_code == 200


async def test_a_started_replica_leaves_what_it_loaded_out_of_the_collectors_view(redis_server, namespace):
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    async with worker(redis_server.url, namespace):
        # Modules, settings and the app: a full collection no longer walks them.
        assert gc.get_freeze_count() > 10_000
