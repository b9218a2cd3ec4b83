"""`flowfleet control` (the control plane on uvicorn) and `flowfleet token hash` (a tokens-file entry).

Logging is configured here, once, as one ``key=value`` line per record (cluster/logfmt.py).
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys
from typing import Any

from cluster.logfmt import KeyValueFormatter as KeyValueFormatter
from cluster.logfmt import logging_config
from cluster.settings import Settings
from control.http.auth import Role, token_digest, token_entry_json

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(level))


def cmd_control(args: argparse.Namespace) -> int:
    import uvicorn

    from control.http.api import create_app

    configure_logging(args.log_level)
    settings = Settings.from_env(os.environ)
    # Built before uvicorn starts: a missing token configuration fails here with a clear message.
    app = create_app(settings)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=args.access_log,
        # Long-poll style clients are not expected; bound how long shutdown waits for requests.
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    return 0


def cmd_token_hash(args: argparse.Namespace) -> int:
    token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        print("flowfleet: no token on stdin", file=sys.stderr)
        return 2
    if args.name:
        print(token_entry_json(token, args.name, Role.parse(args.role)))
    else:
        print(token_digest(token).hex())
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("control", help="run the control plane HTTP API")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--log-level", choices=LOG_LEVELS, default="INFO")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_control)

    token = subparsers.add_parser("token", help="API token helpers")
    token_sub = token.add_subparsers(dest="token_command", metavar="COMMAND", required=True)
    h = token_sub.add_parser(
        "hash",
        help="read a token on stdin; print its sha256, or a tokens-file entry with --name",
    )
    h.add_argument("--name", help="principal name (prints a full tokens-file JSON entry)")
    h.add_argument("--role", choices=[r.label for r in Role], default="viewer")
    h.set_defaults(func=cmd_token_hash)
