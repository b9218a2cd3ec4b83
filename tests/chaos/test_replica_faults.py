"""Faults of one replica's links and life, with real worker processes: a half-open subscriber connection
(a TCP proxy this test controls swallows every byte), and a replica killed in the middle of an activation
and started again."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

from tests.blackhole_proxy import BlackholeProxy
from tests.chaos.support import FLOW, Load, poll, qa_doc, release, subscribed
from tests.e2e.fleet import get_json, served_version, wait_all_serve, wait_ready


async def test_half_open_subscriber_connection_watchdog_reconnects_and_replica_converges(
    redis_server, namespace, make_fleet, http, start_load, store
):
    """Injected: every connection between the replicas and Redis goes half-open (the proxy keeps the
    sockets up but drops all bytes both ways), then v2 is activated directly in Redis, so its event is
    swallowed; the periodic reconcile is 10 minutes away. Checked: each replica's watchdog declares the
    channel silent and reconnects (new connections pass), the replicas converge on v2, and runs kept
    succeeding throughout."""
    proxy = await BlackholeProxy(redis_server.port).start()
    try:
        v1, _ = await release(store, qa_doc("v1"))
        fleet = make_fleet(proxy.url, FLOWFLEET_RECONCILE_S="600", FLOWFLEET_WATCHDOG_S="2")
        await wait_ready(http, fleet)
        await wait_all_serve(http, fleet, FLOW, v1)
        load = start_load(fleet)
        await load.wait_for(30, "load before the cut")

        silenced = proxy.blackhole()
        v2, _ = await release(store, qa_doc("v2"))
        took = await wait_all_serve(http, fleet, FLOW, v2, timeout=60)
        await poll(lambda: subscribed(http, fleet), what="every replica subscribed again")
        records = await load.stop()
        reconnects = [w.log().count("ChannelSilent") for w in fleet]
        print(
            f"injected: {silenced} connections half-open, then an activation; checked: watchdog "
            f"reconnects per replica {reconnects}, v2 everywhere after {took:.2f} s, {len(records)} runs, "
            f"{len(Load.failures(records))} failed"
        )
        assert silenced >= len(fleet)
        assert all(n >= 1 for n in reconnects), "each replica's watchdog must have fired"
        assert not Load.failures(records), Load.failures(records)[:5]
    finally:
        await proxy.stop()


async def test_replica_killed_during_an_activation_restarts_on_the_current_release_with_no_files(
    redis_server, namespace, make_fleet, http, store
):
    """Injected: one replica is frozen (SIGSTOP) so an activation's event reaches it but is never acted on,
    then killed with SIGKILL; another activation happens while it is dead. It is started again with the
    same replica id in an empty working directory. Checked: the other replicas converged both times; the
    restarted one comes up serving the current release (not what it had, not the release it was killed
    during), reports it in Redis, and writes no file."""
    v1, _ = await release(store, qa_doc("v1"))
    fleet = make_fleet(redis_server.url)
    await wait_ready(http, fleet)
    await wait_all_serve(http, fleet, FLOW, v1)
    victim, others = fleet[0], fleet[1:]

    os.kill(victim.pid, signal.SIGSTOP)
    v2, _ = await release(store, qa_doc("v2"))
    await wait_all_serve(http, others, FLOW, v2)
    victim.kill()  # SIGKILL reaches a stopped process
    v3, gen3 = await release(store, qa_doc("v3"))
    await wait_all_serve(http, others, FLOW, v3)

    empty = Path(tempfile.mkdtemp(prefix="flowfleet-empty-"))
    [again] = make_fleet(redis_server.url, 1, first=0, cwd=empty)
    assert again.replica_id == victim.replica_id
    await wait_ready(http, [again])
    assert await served_version(http, again, FLOW) == v3
    r = await http.post(f"{again.url}/v1/flows/{FLOW}/run", json={"inputs": {"input": "hi"}})
    assert r.status_code == 200 and r.json()["version"] == v3 and r.json()["generation"] == gen3

    async def reported() -> bool:
        statuses = {s["id"]: s for s in await store.read_fleet()}
        flow = (statuses.get(again.replica_id) or {}).get("flows", {}).get(FLOW) or {}
        return flow.get("generation") == gen3 and statuses[again.replica_id]["pid"] == again.pid

    await poll(reported, what="the restarted replica's status showing the current release")
    assert list(empty.iterdir()) == [], "a replica must not need or write local files"
    ready = await get_json(http, f"{again.url}/readyz")
    assert ready is not None and ready["flows"][0]["state"] == "loaded"
    print(
        "injected: SIGSTOP + activation + SIGKILL + activation, restart in an empty directory; checked: "
        f"restarted replica serves generation {gen3} ({v3[:12]}), no files written"
    )
    empty.rmdir()
