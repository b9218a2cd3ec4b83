"""The `flowfleet` command line: one parser, subcommands contributed by the modules in this package.

Exit codes (documented in the README): 0 ok, 1 failure or invalid flow, 2 usage, 3 conflict,
4 not found, 5 unauthorised, 6 rollout aborted / a replica cannot load the release, 7 `status --wait`
timed out.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from cluster.errors import FlowfleetError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFLICT = 3
EXIT_NOT_FOUND = 4
EXIT_UNAUTHORISED = 5
EXIT_ROLLOUT_FAILED = 6
EXIT_WAIT_TIMEOUT = 7
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as shells report a reader that went away

# Each module exposes `register(subparsers)`, adding subcommands whose parsers set `func(args) -> int`.
COMMAND_MODULES = (
    "control.cli.local",
    "control.cli.remote",
    "control.cli.reads",
    "control.cli.check",
    "control.cli.canary",
    "control.cli.conversations",
    "control.cli.servers",
    "control.cli.worker",
    "control.cli.langflow",
    "control.cli.up",
    "control.cli.rediscli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowfleet", description="Hot-swap LLM flows across a fleet.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def fail(message: str, code: int) -> int:
    """Print the one-line error the CLI promises and return the exit code."""
    print(f"flowfleet: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        result: int = args.func(args)
    except FlowfleetError as e:
        return fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`flowfleet history FLOW | head`): not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
