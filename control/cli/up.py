"""`flowfleet up`: run a complete local cluster in the foreground; Ctrl-C stops all of it.

Redis (with the least-privilege ACL users), the control plane and N replicas accepting from one shared
port; the example flows in `flows/` are published and activated, then the addresses, the admin token's
file and three commands to try are printed. `up` then supervises: whatever dies is restarted, and
`flowfleet up scale N` (from another terminal) adds or retires replicas.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from control.localcluster import runstate
from control.localcluster.bootstrap import StartupFailed
from control.localcluster.cluster import LocalCluster, Report, UpConfig
from control.localcluster.runstate import FleetStatus

log = logging.getLogger(__name__)

READY_LINE = "flowfleet is up:"
STATUS_LINE = "flowfleet up:"
DEFAULT_STATE_DIR = Path(".flowfleet")
EXIT_WAIT_TIMEOUT = 7  # as `flowfleet status --wait` (see control/cli/__init__.py)
SCALE_POLL_S = 0.2


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
    parser.add_argument(
        "--redis-url", metavar="URL",
        help="run against this Redis instead of starting one: redis://, rediss://, redis+sentinel:// or "
        "redis+cluster:// (docs/operations.md); the control plane and replicas log in as its user",
    )  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="address everything binds (default 127.0.0.1)")
    parser.add_argument("--flows", type=Path, default=Path("flows"), help="example flows (default ./flows)")
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR,
        help="secrets, Redis data and logs (default ./.flowfleet)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=60.0, help="start-up deadline in seconds")
    parser.set_defaults(func=handle)
    actions = parser.add_subparsers(dest="up_action", metavar="{scale}")
    scale = actions.add_parser(
        "scale",
        help="change the number of replicas of the running `flowfleet up`",
        description="Ask the `flowfleet up` running on the state directory for N replicas (it reads the "
        "request on SIGUSR1), then show replicas joining or leaving until it has N serving.",
    )
    scale.add_argument("count", type=_replicas, help="replicas wanted (1-64)")
    # SUPPRESS: `flowfleet up --state-dir D scale N` keeps D.
    scale.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help="default ./.flowfleet")
    scale.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for N serving replicas (0: do not wait)"
    )
    scale.set_defaults(func=handle_scale)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _later(signum: int, frame: FrameType | None) -> None:
    """A scale request during start-up waits: the supervisor reads the request file when it starts."""


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
        redis_url=args.redis_url,
    )
    # SIGTERM during start-up unwinds like Ctrl-C, so the children are stopped either way.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(runstate.SCALE_SIGNAL, _later)
    cluster = LocalCluster(config, os.environ)
    try:
        report = cluster.start()
        print(render_report(report), flush=True)
        reason = cluster.supervise(lambda status: print(render_status(status), flush=True))
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


def _state_dir_option(state_dir: Path) -> str:
    """` --state-dir D` unless D is the default one of the current directory."""
    if state_dir == DEFAULT_STATE_DIR.resolve():
        return ""
    return f" --state-dir {shlex.quote(str(state_dir))}"


def render_report(r: Report) -> str:
    token_file = shlex.quote(str(r.admin_token_file))
    env = r.environment
    state = _state_dir_option(r.state_dir)
    tokens = f"FLOWFLEET_TOKENS_FILE {env.tokens_file}" if env.tokens_file else "no FLOWFLEET_TOKENS_FILE"
    runs = (
        f"FLOWFLEET_RUN_TOKENS_FILE {env.run_tokens_file} (every run needs a token)"
        if env.run_tokens_file
        else "none: anyone may run flows (FLOWFLEET_RUN_TOKENS_FILE is not set)"
    )
    lines = [
        "",
        f"  control API     {r.api_url}   (token: {r.admin_token_file})",
        f"  API tokens      the admin token above; {tokens}",
        f"  run tokens      {runs}",
        f"  replicas        {r.replica_url}   ({', '.join(r.replica_ids)} take turns accepting on this port)",
        f"  metrics         {r.replica_url}/metrics (the replica that answers)   {r.api_url}/metrics (token)",
        f"  fleet status    {r.api_url}/v1/fleet",
        f"  redis           {r.redis_address} (redis-server {r.redis_version}; ACL: {r.acl_mode})",
        f"  redis-cli       {_cli()} redis-cli{state} SMEMBERS flowfleet:flows   (as the control user)",
        f"  settings        from your shell: {', '.join(env.passed) or 'no FLOWFLEET_* setting'}",
    ]
    if env.ignored:
        lines.append(f"                  ignored, up sets them: {', '.join(env.ignored)}")
    secrets = ", ".join(f"{name} ({'set' if present else 'not set'})" for name, present in env.secrets)
    lines += [
        f"  flow secrets    {secrets or 'none listed'}",
        f"  state and logs  {r.state_dir}   (logs in {r.log_dir})",
        f"  scale           {_cli()} up scale N{state}   (from another terminal)",
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
        f"{READY_LINE} {len(r.replica_ids)} replicas serving on {r.replica_url} · restarts: 0"
        " — Ctrl-C stops everything",
    ]
    return "\n".join(lines)


def render_status(s: FleetStatus) -> str:
    """The status line printed on every change: replicas serving, restarts so far, who is not serving."""
    serving = f"{len(s.serving)}/{s.wanted} replicas serving on {s.replica_url}"
    line = f"{STATUS_LINE} {serving} · restarts: {s.restarts}"
    counted = ", ".join(f"{c.name} {c.restarts}" for c in s.children if c.restarts)
    if counted:
        line += f" ({counted})"
    others = [f"{c.name} {c.state}" for c in s.children if c.state != "serving"]
    if others:
        line += " · " + ", ".join(others)
    return line


def try_commands(r: Report) -> list[str]:
    """Run a flow, publish its other version, roll back — for the first flow that has a second file."""
    if not r.released:
        return [f"{_cli()} publish flows/YOUR_FLOW.json --activate -m 'first version'"]
    by_flow = {e.name: e for e in r.examples if e.active}
    extra = {e.name: e for e in r.examples if not e.active}
    flow = next((rel.flow for rel in r.released if rel.flow in extra), r.released[0].flow)
    body = orjson.dumps({"inputs": by_flow[flow].sample_inputs}).decode()
    auth = ' -H "Authorization: Bearer $RUN_TOKEN"' if r.environment.run_tokens_file else ""
    run = (
        f"curl -si {r.replica_url}/v1/flows/{flow}/run -H 'Content-Type: application/json'{auth} "
        f"-d {shlex.quote(body)}"
    )
    source = extra[flow].path if flow in extra else by_flow[flow].path
    publish = f"{_cli()} publish {shlex.quote(str(source))} --activate -m 'try the next version'"
    rollback = f"{_cli()} rollback {flow}"
    return [run, publish, rollback]


def handle_scale(args: argparse.Namespace) -> int:
    """Ask, then follow the status file until the fleet has `count` replicas serving (or the deadline)."""
    state_dir = args.state_dir.resolve()
    before = runstate.request_scale(state_dir, args.count)
    print(f"flowfleet up (pid {before.pid}): {before.wanted} -> {args.count} replicas", flush=True)
    if args.wait <= 0:
        return 0
    seen = {c.name: c.state for c in before.replicas}
    deadline = time.monotonic() + args.wait
    while True:
        status = runstate.running_status(state_dir)
        for change in replica_changes(seen, status):
            print(f"  {change}", flush=True)
        if status.wanted == args.count and status.settled:
            print(render_status(status), flush=True)
            return 0
        if time.monotonic() > deadline:
            print(f"flowfleet: timed out after {args.wait:.0f}s; {render_status(status)}", file=sys.stderr)
            return EXIT_WAIT_TIMEOUT
        time.sleep(SCALE_POLL_S)


def replica_changes(seen: dict[str, str], status: FleetStatus) -> list[str]:
    """`local-3 starting (pid 812)`, `local-3 serving`, `local-2 retired`; updates `seen`."""
    changes = []
    current = {c.name: c for c in status.replicas}
    for name, child in current.items():
        if seen.get(name) != child.state:
            pid = f" (pid {child.pid})" if child.pid and child.state == "starting" else ""
            changes.append(f"{name} {child.state}{pid}")
            seen[name] = child.state
    for name in [n for n in seen if n not in current]:
        changes.append(f"{name} retired")
        del seen[name]
    return changes
