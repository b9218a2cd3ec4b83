"""The ACL rules in docs/redis-layout.md, enforced by a real redis-server (fakeredis ignores ACLs)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.exceptions import NoPermissionError

from cluster.flow.hashing import content_address
from cluster.store.events import Ping
from cluster.store.keys import Keys
from cluster.store.redis_conn import connect
from cluster.store.store import Store
from tests.redis_server import RedisServer
from tests.test_store import next_messages

NS = "acltest"
# Kept verbatim in docs/redis-layout.md.
CONTROL_RULE = f"~{NS}:* &{NS}:events +@all -@dangerous"
WORKER_RULE = f"~{NS}:* &{NS}:events +@read +@pubsub +@connection +set +getex +zadd"


async def test_documented_rules_allow_the_store_and_nothing_outside_the_namespace(
    make_redis_server: Callable[..., RedisServer],
) -> None:
    server = make_redis_server()
    admin = connect(server.url)
    await admin.execute_command("ACL", "SETUSER", "control", "on", ">c-secret", *CONTROL_RULE.split())
    await admin.execute_command("ACL", "SETUSER", "worker", "on", ">w-secret", *WORKER_RULE.split())
    url = f"redis://{{}}@127.0.0.1:{server.port}/0"
    control = Store(connect(url.format("control:c-secret"), client_name="control"), Keys(NS))
    worker = Store(connect(url.format("worker:w-secret"), client_name="worker"), Keys(NS))
    try:
        data, digest = content_address({"name": "qa", "nodes": []})
        await control.publish("qa", data, digest, author="ci", message="", node_count=0)
        async with worker.redis.pubsub() as pubsub:
            await pubsub.subscribe(worker.keys.channel())
            await control.activate("qa", digest, by="ci", reason="")
            await worker.publish_event(Ping(by="worker", at=1.0))
            assert len(await next_messages(pubsub, 2)) == 2
        await control.activate("qa", digest, by="ci", reason="", action="rollback")
        assert (await control.gc()).removed_count == 0

        # What a replica does: read releases and blobs, report its status.
        release = await worker.get_release("qa")
        assert release is not None and release.generation == 2
        assert await worker.get_verified_blob("qa", release.hash) == data
        assert list(await worker.list_releases()) == ["qa"]
        assert len(await worker.history("qa")) == 2
        await worker.write_replica_status("web-1", {"flows": {}}, ttl_s=30)
        assert [s["replica_id"] for s in await control.read_fleet()] == ["web-1"]
        pin = worker.keys.session("qa", "chat-1")
        assert await worker.redis.set(pin, b"{}", px=60_000, nx=True)
        assert await worker.redis.getex(pin, px=60_000) == b"{}"

        # A replica cannot change what runs, and nobody reaches keys outside the namespace.
        with pytest.raises(NoPermissionError):
            await worker.activate("qa", digest, by="worker", reason="")
        with pytest.raises(NoPermissionError):
            await control.redis.get("other:secret")
        with pytest.raises(NoPermissionError):
            await control.redis.publish("other:events", b"x")
    finally:
        for client in (admin, control.redis, worker.redis):
            await client.aclose()
