"""Serve one replica under uvicorn (settings from FLOWFLEET_* environment variables): `flowfleet worker`
and `python -m worker` both end here."""

from __future__ import annotations

import argparse
import logging.config
import os
import socket
from types import FrameType
from typing import Any

from cluster.egress.runtime import install_redaction
from cluster.logfmt import logging_config
from cluster.settings import Settings

BACKLOG = 2048


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket other processes can bind too; the kernel spreads connections between them
    (a real load-balancing mechanism, not a proxy)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this platform has no SO_REUSEPORT: run one replica per port instead")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def uvicorn_config(app: Any, host: str, port: int, *, grace_s: float) -> Any:
    """The uvicorn settings of a replica (the request-path benchmark serves its baseline with these too)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        backlog=BACKLOG,
        timeout_graceful_shutdown=int(grace_s) or None,
    )


def serve(host: str, port: int, log_level: str = "INFO", *, reuse_port: bool = False) -> int:
    """Run one replica until SIGINT/SIGTERM; with `reuse_port`, several replicas share host:port."""
    import uvicorn

    from worker.app import create_app

    logging.config.dictConfig(logging_config(log_level.upper(), quiet=("uvicorn.access",)))
    settings = Settings.from_env(os.environ)
    app = create_app(settings, environ=dict(os.environ))
    # No log line of this process carries a secret value, whoever logs it.
    install_redaction(app.state.replica.runtime.sensitive_values)
    config = uvicorn_config(app, host, port, grace_s=settings.shutdown_grace_s)
    replica = app.state.replica

    class WorkerServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Not ready from the first signal on, so load balancers stop sending while runs finish.
            replica.state.draining = True
            super().handle_exit(sig, frame)

    WorkerServer(config).run(sockets=[reuse_port_socket(host, port)] if reuse_port else None)
    return 0


def handle(args: argparse.Namespace) -> int:
    return serve(args.host, args.port, args.log_level, reuse_port=args.reuse_port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT so several replicas share one address (the kernel balances them)",
    )


DESCRIPTION = "Serve flows on HTTP; settings come from FLOWFLEET_* environment variables."
