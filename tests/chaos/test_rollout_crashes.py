"""Processes dying in the middle of a two-phase rollout, with real `flowfleet control` and worker
processes: a replica killed (and restarted by its supervisor) during the prepare, and a control plane
killed between prepare and commit while a second control plane runs."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.store import rollouts
from cluster.store.store import Store
from tests.chaos.support import FLOW, poll, publish, qa_doc, release
from tests.control_support import DEPLOYER_TOKEN, ControlProcess, bearer
from tests.e2e.fleet import wait_all_serve, wait_ready
from tests.redis_server import RedisServer


@pytest.fixture
def make_control(redis_server: RedisServer, namespace: str, tmp_path: Path) -> Iterator[Any]:
    started: list[ControlProcess] = []

    def make(name: str, **env: str) -> ControlProcess:
        directory = tmp_path / name
        directory.mkdir()
        server = ControlProcess(redis_server.url, namespace, directory)
        server.env |= {"FLOWFLEET_GUARD_S": "0.3", "FLOWFLEET_CANARY_GUARD_S": "0", **env}
        started.append(server.start())
        return server

    yield make
    for server in started:
        server.stop()


async def activate(http: httpx.AsyncClient, control: ControlProcess, digest: str) -> httpx.Response:
    return await http.post(
        f"{control.url}/v1/flows/{FLOW}/activate",
        json={"hash": digest},
        headers=bearer(DEPLOYER_TOKEN),
        timeout=30,
    )


async def record_state(store: Store) -> str | None:
    record = await rollouts.read_record(store.redis, store.keys, FLOW)
    return None if record is None else str(record.get("state"))


async def lease_pid(store: Store) -> int | None:
    holder = await store.redis.get(store.keys.lease("rollback-guard"))
    return None if holder is None else int(holder.decode().rsplit("-", 2)[1])


async def test_replica_killed_during_a_two_phase_prepare_and_restarted_is_not_waited_for(
    redis_server, namespace, make_fleet, make_control, http, store
):
    """Injected: one replica is frozen (SIGSTOP) so it cannot answer the prepare, killed while the control
    plane waits, and started again at once with the same replica id, as a supervisor does. Checked: the
    rollout commits on the two healthy replicas (the restarted one is `gone`, not a `timeout` after the
    20 s prepare timeout), and the restarted replica converges on the committed release."""
    v1, _ = await release(store, qa_doc("v1"))
    # A status TTL longer than the test: the killed replica's last status never expires by itself.
    fleet = make_fleet(redis_server.url, FLOWFLEET_STATUS_TTL_S="60")
    control = make_control("control", FLOWFLEET_PREPARE_TIMEOUT_S="20")
    await wait_ready(http, fleet)
    await wait_all_serve(http, fleet, FLOW, v1)
    v2 = await publish(store, qa_doc("v2"))
    victim = fleet[2]

    os.kill(victim.pid, signal.SIGSTOP)
    started = time.monotonic()
    answer = asyncio.create_task(activate(http, control, v2))
    await poll(lambda: record_state(store), check=lambda s: s == "preparing", what="the prepare")
    victim.kill()  # SIGKILL reaches a stopped process
    [again] = make_fleet(redis_server.url, 1, first=2, FLOWFLEET_STATUS_TTL_S="60")
    assert again.replica_id == victim.replica_id
    reply = await asyncio.wait_for(answer, 30)
    took = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    rollout = reply.json()["rollout"]
    assert (rollout["ready"], rollout["gone"], rollout["failures"]) == (["w0", "w1"], ["w2"], [])
    assert took < 15, f"the rollout waited {took:.1f} s for a replica that could not answer"
    await wait_ready(http, [again])
    await wait_all_serve(http, [fleet[0], fleet[1], again], FLOW, v2)
    print(f"injected: SIGSTOP, prepare, SIGKILL, restart; checked: committed after {took:.2f} s, w2 gone")


async def test_control_plane_killed_between_prepare_and_commit_leaves_nothing_stuck(
    redis_server, namespace, make_fleet, make_control, http, store
):
    """Injected: control plane A (holding the guards' lease) is SIGKILLed while its rollout waits for a
    frozen replica; control plane B runs alongside. Checked: B takes over the guard within the lease's TTL,
    A's rollout record is expired as aborted once its 3 s timeout has passed (audited, an abort event makes
    the replicas drop what they prepared), nothing switched, and B activates the flow afterwards."""
    v1, generation = await release(store, qa_doc("v1"))
    fleet = make_fleet(redis_server.url)
    a = make_control("a", FLOWFLEET_PREPARE_TIMEOUT_S="3")
    await poll(lambda: lease_pid(store), check=lambda pid: pid == a.proc.pid, what="A holds the lease")
    b = make_control("b")
    await wait_ready(http, fleet)
    await wait_all_serve(http, fleet, FLOW, v1)
    v2 = await publish(store, qa_doc("v2"))

    os.kill(fleet[2].pid, signal.SIGSTOP)
    answer = asyncio.create_task(activate(http, a, v2))
    await poll(lambda: record_state(store), check=lambda s: s == "preparing", what="A's prepare")
    await poll(lambda: all("result=ready" in w.log() for w in fleet[:2]), what="w0 and w1 prepared")
    a.proc.kill()  # type: ignore[union-attr]
    a.proc.wait()  # type: ignore[union-attr]
    os.kill(fleet[2].pid, signal.SIGCONT)
    with pytest.raises(httpx.HTTPError):
        await answer
    killed = time.monotonic()

    await poll(lambda: lease_pid(store), check=lambda pid: pid == b.proc.pid, timeout=5, what="B takes over")
    took_over = time.monotonic() - killed
    await poll(lambda: record_state(store), check=lambda s: s == "aborted", timeout=15, what="expired")
    record = await rollouts.read_record(store.redis, store.keys, FLOW)
    assert record is not None and record["expired"] is True and record["hash"] == v2
    entry = next(e for e in await store.audit(FLOW, 5) if e["action"] == "rollout_aborted")
    assert entry["by"] == "auto-rollback" and entry["rollout"] == record["id"]
    await poll(
        lambda: all("dropped the prepared version" in w.log() for w in fleet[:2]),
        what="the replicas dropped what they prepared",
    )
    assert (await store.get_release(FLOW)).generation == generation  # type: ignore[union-attr]
    await wait_all_serve(http, fleet, FLOW, v1)

    reply = await activate(http, b, v2)
    assert reply.status_code == 200, reply.text
    await wait_all_serve(http, fleet, FLOW, v2)
    print(
        f"injected: SIGKILL of control plane A mid-prepare; checked: B took the guard after {took_over:.2f} s"
    )
