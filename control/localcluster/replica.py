"""One replica of the local fleet: `flowfleet worker`, serving on the listening socket `flowfleet up` holds.

    python -m control.localcluster.replica --fd 3 --ready-file .flowfleet/replicas/local-1.ready

`up` binds the shared port once and every replica inherits that socket, so the kernel keeps one queue
of connections for all of them (the pre-fork model of gunicorn and `uvicorn --workers`). A replica
that dies loses only the connections it had accepted; those still queued go to the others. With
`flowfleet worker --reuse-port` each replica owns a socket and its queue, which dies with it.

A replica accepts nothing until it serves every released flow (then it writes its pid to the ready
file): a restarted or added replica never answers "flow not loaded" to a request the others could run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster.egress.runtime import install_redaction
from cluster.errors import FlowfleetError
from cluster.logfmt import logging_config
from cluster.settings import Settings

# Named, not __name__: run with -m, this module is __main__.
log = logging.getLogger("control.localcluster.replica")

READY_POLL_S = 0.05
NOT_READY_LOG_S = 10.0
# How long a stopping replica waits for connections it accepted to send their request (see shutdown).
FIRST_REQUEST_WAIT_S = 1.0


class JoinWhenReady:
    """ASGI wrapper that holds the app's `lifespan.startup.complete` until `ready()`: uvicorn starts
    accepting only after it. If `stopping()` turns true first, `sockets` is emptied, so uvicorn then
    listens on nothing and shuts down without having taken a connection."""

    def __init__(
        self, app: Any, ready: Callable[[], bool], stopping: Callable[[], bool], sockets: list[socket.socket]
    ) -> None:
        self.app = app
        self.ready = ready
        self.stopping = stopping
        self.sockets = sockets

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_when_ready(message: Any) -> None:
            if message["type"] == "lifespan.startup.complete":
                await self.wait()
            await send(message)

        await self.app(scope, receive, send_when_ready)

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        next_log = loop.time() + NOT_READY_LOG_S
        while not self.ready():
            if self.stopping():
                # uvicorn iterates this very list right after startup completes.
                self.sockets.clear()
                return
            if loop.time() >= next_log:
                log.info("not accepting connections yet: waiting until every released flow is loaded")
                next_log += NOT_READY_LOG_S
            await asyncio.sleep(READY_POLL_S)


def write_ready(path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{os.getpid()}\n", encoding="ascii")
    os.replace(tmp, path)


def serve(fd: int, ready_file: Path, log_level: str) -> int:
    import uvicorn

    from worker.app import create_app
    from worker.serve import uvicorn_config

    logging.config.dictConfig(logging_config(log_level.upper(), quiet=("uvicorn.access",)))
    settings = Settings.from_env(os.environ)
    app = create_app(settings, environ=dict(os.environ))
    install_redaction(app.state.replica.runtime.sensitive_values)
    sock = socket.socket(fileno=fd)
    host, port = sock.getsockname()[:2]
    sockets = [sock]

    class LocalReplicaServer(uvicorn.Server):
        """Unlike `flowfleet worker`, a signal does not mark the replica draining before it stops
        accepting: the shared queue goes to the other replicas the moment this one closes its copy of
        the socket, and a run accepted in between is better served than refused."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if sockets and not self.should_exit:
                write_ready(ready_file)
                log.info("replica=%s accepting on %s:%s", settings.replica_id, host, port)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for server in getattr(self, "servers", []):
                server.close()
            # uvicorn closes a connection that has not sent a request yet; one accepted just before the
            # socket closed has, on loopback, sent it within milliseconds: let it get its answer.
            deadline = asyncio.get_running_loop().time() + FIRST_REQUEST_WAIT_S
            while any(getattr(c, "cycle", True) is None for c in self.server_state.connections):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.01)
            await super().shutdown(sockets)

    server: LocalReplicaServer | None = None
    gated = JoinWhenReady(
        app, app.state.replica.state.is_ready, lambda: server is not None and server.should_exit, sockets
    )
    server = LocalReplicaServer(uvicorn_config(gated, host, port, grace_s=settings.shutdown_grace_s))
    server.run(sockets=sockets)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control.localcluster.replica", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="inherited listening socket")
    parser.add_argument("--ready-file", type=Path, required=True, help="gets this pid once accepting")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    try:
        return serve(args.fd, args.ready_file, args.log_level)
    except FlowfleetError as e:  # the one-line error and exit code `flowfleet worker` gives
        print(f"flowfleet: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
