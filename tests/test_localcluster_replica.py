"""A local replica joins the shared socket only once it is ready: the ASGI lifespan gate, alone; the whole
replica process is exercised by tests/e2e/test_up_fleet.py."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from control.localcluster import replica
from control.localcluster.replica import JoinWhenReady


class LifespanApp:
    """Completes its startup at once; records the http scopes it was called with."""

    def __init__(self) -> None:
        self.http: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.http.append(scope["path"])
            return
        await receive()
        await send({"type": "lifespan.startup.complete"})


async def start(gate: JoinWhenReady) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await gate({"type": "lifespan"}, receive, send)
    return sent


async def test_startup_completes_only_once_the_replica_is_ready(monkeypatch: Any) -> None:
    monkeypatch.setattr(replica, "READY_POLL_S", 0.001)
    checks = iter([False, False, True])
    with socket.socket() as sock:
        sockets = [sock]
        gate = JoinWhenReady(LifespanApp(), lambda: next(checks), lambda: False, sockets)
        assert await start(gate) == [{"type": "lifespan.startup.complete"}]
        assert sockets == [sock] and next(checks, "used up") == "used up"


async def test_a_replica_stopped_before_it_is_ready_listens_on_nothing(monkeypatch: Any) -> None:
    monkeypatch.setattr(replica, "READY_POLL_S", 0.001)
    stopping = iter([False, True])
    with socket.socket() as sock:
        sockets = [sock]
        gate = JoinWhenReady(LifespanApp(), lambda: False, lambda: next(stopping), sockets)
        await asyncio.wait_for(start(gate), 5)
        assert sockets == []


async def test_requests_pass_through_untouched() -> None:
    app = LifespanApp()
    await JoinWhenReady(app, lambda: False, lambda: False, [])(
        {"type": "http", "path": "/readyz"}, None, None
    )
    assert app.http == ["/readyz"]


def test_the_ready_file_names_the_process(tmp_path: Path) -> None:
    replica.write_ready(tmp_path / "local-1.ready")
    assert (tmp_path / "local-1.ready").read_text().strip().isdigit()
    assert [p.name for p in tmp_path.iterdir()] == ["local-1.ready"]
