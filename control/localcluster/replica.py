"""One worker replica bound with SO_REUSEPORT, so several replicas share one address.

`python -m control.localcluster.replica --host 127.0.0.1 --port 8000` serves the same app as
`flowfleet worker`; the kernel spreads incoming connections across every process listening on the port
(a real load-balancing mechanism, not a proxy). Settings come from FLOWFLEET_* environment variables.
"""

from __future__ import annotations

import argparse
import logging.config
import os
import socket
import sys
from collections.abc import Sequence

from cluster.settings import Settings

BACKLOG = 2048


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket other processes can bind too; the kernel balances connections between them."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("this platform has no SO_REUSEPORT: run one replica per port instead")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
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


def serve(host: str, port: int, log_level: str) -> int:
    import uvicorn
    from worker.app import create_app

    from control.cli.worker import logging_config

    logging.config.dictConfig(logging_config(log_level.upper()))
    settings = Settings.from_env(os.environ)
    sock = reuse_port_socket(host, port)
    app = create_app(settings, environ=dict(os.environ))
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        backlog=BACKLOG,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) or None,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m control.localcluster.replica", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.log_level)


if __name__ == "__main__":
    sys.exit(main())
