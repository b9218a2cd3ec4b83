"""`flowfleet validate` and `flowfleet run`: check and run flow files locally, no Redis involved.

flowfleet validate flows/*.json          # exit 0 if all valid, else one `FILE: PATH: message` per problem
                                         # (a valid file's line names the secrets it needs)
flowfleet run flows/support_qa.json --input input="Where is my order?" --trace
flowfleet run flows/support_qa.json --input input="Where is my order?" --stream
                                         # the model's tokens as they come, then a newline and the outputs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from cluster.egress.policy import OutboundPolicy
from cluster.egress.runtime import Runtime, install_redaction
from cluster.engine import CompiledFlow, RunResult, compile_flow
from cluster.errors import BadRequest, FlowfleetError, FlowValidationError, MissingSecret, Problem
from cluster.flow.documents import load_document
from cluster.flow.validation import validate
from control.cli.policy import cli_policy, secrets_note, secrets_of

EXIT_OK = 0
EXIT_INVALID = 1


def _problems_of(path: str, policy: OutboundPolicy) -> tuple[list[Problem], Any]:
    """Every problem of the flow file at `path` (unreadable and unparsable files included)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return [Problem("", "unreadable", f"cannot read file: {e.strerror or e}")], None
    try:
        # The same reading as publish and sync: a LangFlow export is converted first, so CI checks
        # exactly what would be stored.
        document = load_document(raw)
    except FlowValidationError as e:
        return list(e.problems), None
    except FlowfleetError as e:  # a LangFlow export that cannot be converted
        return [Problem("", e.code, str(e))], None
    return validate(document, policy=policy), document


def _print_problems(path: str, problems: list[Problem], *, file: TextIO | None = None) -> None:
    for problem in problems:
        print(f"{path}: {problem.path or '/'}: {problem.message}", file=file)


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    policy = cli_policy()
    for path in args.files:
        problems, document = _problems_of(path, policy)
        if problems:
            failed = True
            _print_problems(path, problems)
        elif not args.quiet:
            note = secrets_note(secrets_of(document, policy))
            print(f"{path}: ok ({len(document['nodes'])} nodes; {note})")
    return EXIT_INVALID if failed else EXIT_OK


def _parse_inputs(pairs: list[str], extra_json: str | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if extra_json is not None:
        try:
            loaded = orjson.loads(extra_json)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"--input-json is not valid JSON: {e}") from e
        if not isinstance(loaded, dict):
            raise BadRequest("--input-json must be a JSON object of input name -> value")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadRequest(f"--input expects KEY=VALUE, got {pair!r}")
        inputs[key] = value
    return inputs


def cmd_run(args: argparse.Namespace) -> int:
    inputs = _parse_inputs(args.input, args.input_json)
    policy = cli_policy()
    problems, document = _problems_of(args.file, policy)
    if problems:
        _print_problems(args.file, problems, file=sys.stderr)  # stdout is only for the outputs
        return EXIT_INVALID
    # An entry point: the secrets the policy lists are all a flow gets of this shell's environment.
    runtime = None if args.offline else Runtime.from_environ(policy, os.environ)
    if runtime is not None:
        install_redaction(runtime.sensitive_values)
    try:
        compiled = compile_flow(document, policy=policy, runtime=runtime)
    except MissingSecret as e:
        raise MissingSecret(e.names, "this shell (set it, or use --offline)") from e
    result = asyncio.run(_run(compiled, inputs, args))
    if args.trace:
        body: Any = {"outputs": result.outputs, "trace": result.trace, "duration_ms": result.duration_ms}
    else:
        body = result.outputs
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2, default=repr).decode() + "\n")
    return EXIT_OK


def _print_tokens(event: dict[str, Any]) -> None:
    """A streamed run's sink: the models' text to stdout as it arrives (tool calls are not shown)."""
    if event.get("event") == "token":
        sys.stdout.write(event["delta"])
        sys.stdout.flush()


async def _run(compiled: CompiledFlow, inputs: dict[str, Any], args: argparse.Namespace) -> RunResult:
    streamed = getattr(args, "stream", False)
    try:
        sink = _print_tokens if streamed else None
        return await compiled.run(inputs, timeout=args.timeout, trace=args.trace, stream=sink)
    finally:
        if streamed:
            sys.stdout.write("\n")
        await compiled.aclose()


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    validate_parser = subparsers.add_parser(
        "validate", help="check flow files", description="Check flow files; exit 1 if any is invalid."
    )
    validate_parser.add_argument("files", nargs="+", metavar="FILE")
    validate_parser.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid files")
    validate_parser.set_defaults(func=cmd_validate)

    run_parser = subparsers.add_parser(
        "run",
        help="run a flow file locally",
        description="Run a flow file once and print its outputs as JSON.",
    )
    run_parser.add_argument("file", metavar="FILE")
    run_parser.add_argument(
        "--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="a string input (repeatable)"
    )
    run_parser.add_argument("--input-json", metavar="JSON", help="inputs as a JSON object (--input wins)")
    run_parser.add_argument("--trace", action="store_true", help="also print per-node durations and outputs")
    run_parser.add_argument(
        "--stream",
        action="store_true",
        help="print the models' text as it arrives, then a newline and the outputs as JSON",
    )
    run_parser.add_argument(
        "--offline", action="store_true", help="call no model: LLM nodes answer as the echo provider does"
    )
    run_parser.add_argument(
        "--timeout", type=_positive, metavar="S", help="time budget of the run in seconds"
    )
    run_parser.set_defaults(func=cmd_run)
