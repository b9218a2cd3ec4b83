"""`flowfleet worker`: run one replica (worker.serve) under uvicorn."""

from __future__ import annotations

from typing import Any

from worker.serve import DESCRIPTION, add_arguments, handle


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a replica that serves flows and hot-swaps them from Redis",
        description=DESCRIPTION,
    )
    add_arguments(parser)
    parser.set_defaults(func=handle)
