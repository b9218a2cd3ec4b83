"""`flowfleet up`: run a complete local cluster in the foreground; Ctrl-C stops all of it.

Redis (with the least-privilege ACL users), the control plane and N replicas sharing one port through
SO_REUSEPORT; the example flows in `flows/` are published and activated, then the addresses, the admin
token's file and three commands to try are printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from control.localcluster.bootstrap import StartupFailed
from control.localcluster.cluster import LocalCluster, Report, UpConfig

log = logging.getLogger(__name__)

READY_LINE = "flowfleet is up:"


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port")
    return port


def _replicas(value: str) -> int:
    count = int(value)
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError("--replicas must be between 1 and 64")
    return count


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "up",
        help="run Redis, the control plane and N replicas locally, with the example flows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--replicas", type=_replicas, default=3, help="worker replicas (default 3)")
    parser.add_argument("--port", type=_port, default=8000, help="the replicas' shared port (default 8000)")
    parser.add_argument("--control-port", type=_port, default=8700, help="control API port (default 8700)")
    parser.add_argument("--redis-port", type=_port, default=6380, help="Redis port (default 6380)")
    parser.add_argument("--host", default="127.0.0.1", help="address everything binds (default 127.0.0.1)")
    parser.add_argument("--flows", type=Path, default=Path("flows"), help="example flows (default ./flows)")
    parser.add_argument(
        "--state-dir", type=Path, default=Path(".flowfleet"),
        help="secrets, Redis data and logs (default ./.flowfleet)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up deadline in seconds")
    parser.set_defaults(func=handle)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def handle(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="flowfleet up: %(message)s", stream=sys.stderr)
    # One line per request polled during start-up would bury the lines that matter.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = UpConfig(
        replicas=args.replicas,
        host=args.host,
        port=args.port,
        control_port=args.control_port,
        redis_port=args.redis_port,
        state_dir=args.state_dir,
        flows_dir=args.flows,
        startup_timeout_s=args.timeout,
    )
    # SIGTERM during start-up unwinds like Ctrl-C, so the children are stopped either way.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    cluster = LocalCluster(config, os.environ)
    try:
        report = cluster.start()
        print(render_report(report), flush=True)
        reason = cluster.supervise()
        print(f"\nflowfleet up: {reason} received, stopping ...", flush=True)
        return 0
    except KeyboardInterrupt:
        print("\nflowfleet up: interrupted, stopping ...", flush=True)
        return 130
    except StartupFailed as e:
        print(f"flowfleet up: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        cluster.stop()
        print("flowfleet up: everything stopped", flush=True)


def _cli() -> str:
    script = Path(sys.executable).parent / "flowfleet"
    return shlex.quote(str(script)) if script.exists() else "flowfleet"


def render_report(r: Report) -> str:
    token_file = shlex.quote(str(r.admin_token_file))
    lines = [
        "",
        f"  control API     {r.api_url}   (token: {r.admin_token_file})",
        f"  replicas        {r.replica_url}   ({', '.join(r.replica_ids)} share this port via SO_REUSEPORT)",
        f"  metrics         {r.replica_url}/metrics (the replica that answers)   {r.api_url}/metrics (token)",
        f"  fleet status    {r.api_url}/v1/fleet",
        f"  redis           {r.redis_address} (redis-server {r.redis_version}; ACL: {r.acl_mode})",
        f"  state and logs  {r.state_dir}   (logs in {r.log_dir})",
        "",
        "  flows:",
    ]
    for rel in r.released:
        note = "activated now" if rel.activated_now else "kept the current release"
        lines.append(f"    {rel.flow:<16} {rel.hash[:12]}  generation {rel.generation}  ({note})")
    lines += ["", "  try:", f'    export FLOWFLEET_URL={r.api_url} FLOWFLEET_TOKEN="$(cat {token_file})"']
    lines += [f"    {cmd}" for cmd in try_commands(r)]
    lines += [
        "",
        f"{READY_LINE} {len(r.replica_ids)} replicas serving on {r.replica_url} — Ctrl-C stops everything",
    ]
    return "\n".join(lines)


def try_commands(r: Report) -> list[str]:
    """Run a flow, publish its other version, roll back — for the first flow that has a second file."""
    if not r.released:
        return [f"{_cli()} publish flows/YOUR_FLOW.json --activate -m 'first version'"]
    by_flow = {e.name: e for e in r.examples if e.active}
    extra = {e.name: e for e in r.examples if not e.active}
    flow = next((rel.flow for rel in r.released if rel.flow in extra), r.released[0].flow)
    body = orjson.dumps({"inputs": by_flow[flow].sample_inputs}).decode()
    run = (
        f"curl -si {r.replica_url}/v1/flows/{flow}/run -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)}"
    )
    source = extra[flow].path if flow in extra else by_flow[flow].path
    publish = f"{_cli()} publish {shlex.quote(str(source))} --activate -m 'try the next version'"
    rollback = f"{_cli()} rollback {flow}"
    return [run, publish, rollback]
