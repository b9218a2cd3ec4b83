"""`flowfleet validate` and `flowfleet run`: check and run flow files locally, no Redis involved.

flowfleet validate flows/*.json          # exit 0 if all valid, else one `FILE: PATH: message` per problem
flowfleet run flows/support_qa.json --input input="Where is my order?" --trace
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import orjson

from cluster.engine import compile_flow
from cluster.errors import BadRequest, FlowValidationError, Problem
from cluster.validation import parse_document, validate

EXIT_OK = 0
EXIT_INVALID = 1


def _problems_of(path: str) -> tuple[list[Problem], Any]:
    """Every problem of the flow file at `path` (unreadable and unparsable files included)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        return [Problem("", "unreadable", f"cannot read file: {e.strerror or e}")], None
    try:
        document = parse_document(raw)
    except FlowValidationError as e:
        return list(e.problems), None
    return validate(document), document


def _print_problems(path: str, problems: list[Problem], *, file: TextIO | None = None) -> None:
    for problem in problems:
        print(f"{path}: {problem.path or '/'}: {problem.message}", file=file)


def cmd_validate(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        problems, document = _problems_of(path)
        if problems:
            failed = True
            _print_problems(path, problems)
        elif not args.quiet:
            print(f"{path}: ok ({len(document['nodes'])} nodes)")
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
    problems, document = _problems_of(args.file)
    if problems:
        _print_problems(args.file, problems, file=sys.stderr)  # stdout is only for the outputs
        return EXIT_INVALID
    # An entry point: the only place that hands the process environment to components (API keys).
    compiled = compile_flow(document, environ=os.environ)
    result = asyncio.run(compiled.run(inputs, timeout=args.timeout, trace=args.trace))
    if args.trace:
        body: Any = {"outputs": result.outputs, "trace": result.trace, "duration_ms": result.duration_ms}
    else:
        body = result.outputs
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2, default=repr).decode() + "\n")
    return EXIT_OK


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
        "--timeout", type=_positive, metavar="S", help="time budget of the run in seconds"
    )
    run_parser.set_defaults(func=cmd_run)
