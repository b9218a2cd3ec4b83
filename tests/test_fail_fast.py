"""Redis away, answered fast: a killed and a frozen (SIGSTOP) redis-server, and how long each surface
takes to say so. The control API answers 503 `redis_unavailable` with Retry-After within about
FLOWFLEET_REDIS_TIMEOUT_S (1.5 s), the CLI reports it as quickly, `flowfleet up --redis-url` refuses an
unreachable Redis as quickly, and a replica's /readyz says `"redis": "unreachable"` while it stays ready
and keeps serving. Bounds are generous (5 s); the measured times are printed."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.harness import FLOW, qa_doc
from tests.control_support import DEPLOYER_TOKEN, ControlProcess, base_env, bearer
from tests.e2e.fleet import WorkerProcess, get_json, wait_all_serve, wait_ready
from tests.redis_server import RedisServer, free_port

BOUND_S = 5.0


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0) as client:
        yield client


@pytest.fixture
def control(make_redis_server: Callable[..., RedisServer], namespace: str, tmp_path: Path) -> Iterator[Any]:
    server = make_redis_server()
    process = ControlProcess(server.url, namespace, tmp_path).start()
    yield server, process
    server.resume()
    process.stop()


async def timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


async def cli(control: ControlProcess, *args: str) -> tuple[int, str]:
    env = base_env() | {"FLOWFLEET_URL": control.url, "FLOWFLEET_TOKEN": DEPLOYER_TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from control.cli import entry; entry()", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_control_api_and_cli_answer_within_seconds_when_redis_is_killed_or_frozen(
    control: tuple[RedisServer, ControlProcess], http: httpx.AsyncClient
) -> None:
    server, process = control
    r = await http.post(
        f"{process.url}/v1/flows/{FLOW}/versions", json=qa_doc("v1"), headers=bearer(DEPLOYER_TOKEN)
    )
    assert r.status_code == 201, r.text
    digest = r.json()["hash"]
    measured: dict[str, float] = {}
    for fault in ("killed", "frozen"):
        server.kill() if fault == "killed" else server.pause()
        reads, took = await timed(http.get(f"{process.url}/v1/flows", headers=bearer(DEPLOYER_TOKEN)))
        measured[f"GET /v1/flows, Redis {fault}"] = took
        activation, took = await timed(
            http.post(
                f"{process.url}/v1/flows/{FLOW}/activate",
                json={"hash": digest, "prepare": False},
                headers=bearer(DEPLOYER_TOKEN),
            )
        )
        measured[f"POST activate, Redis {fault}"] = took
        for answer in (reads, activation):
            assert answer.status_code == 503 and answer.json()["error"] == "redis_unavailable", answer.text
            assert answer.headers["retry-after"] == "1"
        (code, err), took = await timed(cli(process, "history", FLOW))
        measured[f"flowfleet history, Redis {fault}"] = took
        assert code == 1 and "Redis" in err and "unavailable" in err, err
        server.start() if fault == "killed" else server.resume()
    print("; ".join(f"{what}: {s:.2f} s" for what, s in measured.items()))
    assert max(measured.values()) < BOUND_S, measured


async def test_up_refuses_an_unreachable_redis_url_within_seconds(
    make_redis_server: Callable[..., RedisServer], tmp_path: Path
) -> None:
    frozen = make_redis_server()
    frozen.pause()
    measured = {}
    for what, url in (("nothing listening", f"redis://127.0.0.1:{free_port()}/0"), ("frozen", frozen.url)):
        args = ["up", "--redis-url", url, "--state-dir", str(tmp_path / what), "--flows", str(tmp_path),
                "--port", str(free_port()), "--control-port", str(free_port())]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from control.cli import entry; entry()", *args, env=base_env(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        (_, err), took = await timed(proc.communicate())
        measured[what] = took
        assert proc.returncode == 1 and "--redis-url: cannot reach" in err.decode(), err.decode()
    frozen.resume()
    print("; ".join(f"flowfleet up --redis-url, {what}: {s:.2f} s" for what, s in measured.items()))
    assert max(measured.values()) < BOUND_S, measured


async def test_readyz_says_redis_is_unreachable_and_stays_ready(
    make_redis_server: Callable[..., RedisServer], namespace: str, http: httpx.AsyncClient
) -> None:
    from cluster.store.keys import Keys
    from cluster.store.redis_conn import connect
    from cluster.store.store import Store
    from tests.chaos.support import release

    server = make_redis_server()
    client = connect(server.url)
    digest, _ = await release(Store(client, Keys(namespace)), qa_doc("v1"))
    await client.aclose()
    worker = WorkerProcess(server.url, namespace, "r0", FLOWFLEET_PING_S="0.5", FLOWFLEET_WATCHDOG_S="30")
    worker.start()
    try:
        await wait_ready(http, [worker])
        await wait_all_serve(http, [worker], FLOW, digest)
        assert (await get_json(http, f"{worker.url}/readyz"))["redis"] == "ok"
        measured = {}
        for fault in ("killed", "frozen"):
            server.kill() if fault == "killed" else server.pause()
            started = time.monotonic()
            while (state := await get_json(http, f"{worker.url}/readyz")) is None or state["redis"] == "ok":
                assert state is not None, "the replica stopped being ready"
                assert time.monotonic() - started < BOUND_S, f"readyz still says redis ok ({fault})"
                await asyncio.sleep(0.05)
            measured[fault] = time.monotonic() - started
            assert state["ready"] and state["redis"] == "unreachable", state
            run = await http.post(f"{worker.url}/v1/flows/{FLOW}/run", json={"inputs": {"input": "hi"}})
            assert run.status_code == 200, run.text
            server.start() if fault == "killed" else server.resume()
            deadline = time.monotonic() + 30
            while (await get_json(http, f"{worker.url}/readyz") or {}).get("redis") != "ok":
                assert time.monotonic() < deadline, "readyz never says redis ok again"
                await asyncio.sleep(0.05)
        print("; ".join(f"/readyz says unreachable, Redis {what}: {s:.2f} s" for what, s in measured.items()))
    finally:
        server.resume()
        worker.stop()
