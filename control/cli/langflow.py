"""`flowfleet import langflow EXPORT.json [-o OUT.json]`: convert a LangFlow export into a flowfleet flow.

The flowfleet document goes to stdout (or OUT.json); warnings about settings that were dropped go to
stderr. An unsupported component, an unreadable file or a result that does not validate is one line on
stderr and exit 1; bad usage exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from cluster.errors import FlowfleetError, FlowValidationError
from cluster.flow.validation import validate
from cluster.langflow import DEFAULT_MODEL, translate
from cluster.langflow.convert import PROVIDERS
from control.cli.policy import cli_policy, needs_note, needs_of

# LangFlow exports embed every component's source code, so they are far larger than the flows they
# describe; this only guards against reading something absurd by mistake.
MAX_EXPORT_BYTES = 64 * 1024 * 1024


class ImportFileError(FlowfleetError):
    """The export file cannot be read or is not JSON."""

    code = "unreadable_file"


def read_export_file(path: str) -> Any:
    """The parsed JSON of `path` ("-" for stdin); raises ImportFileError with the reason."""
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_EXPORT_BYTES + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(MAX_EXPORT_BYTES + 1)
    except OSError as e:
        raise ImportFileError(f"cannot read {path}: {e.strerror or e}", path=path) from e
    if len(raw) > MAX_EXPORT_BYTES:
        raise ImportFileError(f"{path} is larger than {MAX_EXPORT_BYTES} bytes", path=path)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ImportFileError(f"{path} is not valid JSON: {e}", path=path) from e


def write_output(document: dict[str, Any], out: str | None) -> None:
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if out is None or out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(out).write_bytes(data)
    except OSError as e:
        raise ImportFileError(f"cannot write {out}: {e.strerror or e}", path=out) from e


def run_import_langflow(args: argparse.Namespace) -> int:
    doc = read_export_file(args.export)
    conversion = translate(
        doc, name=args.name, provider=args.provider, keep_notes=args.keep_notes, model=args.model
    )
    for warning in conversion.warnings:
        print(f"flowfleet: warning: {warning}", file=sys.stderr)
    # A converted flow that flowfleet would refuse (a cycle, a node that feeds no output) is reported
    # now rather than at publish time.
    policy = cli_policy()
    problems = validate(conversion.document, policy=policy)
    if problems:
        raise FlowValidationError(problems)
    write_output(conversion.document, args.output)
    secrets, services = needs_of(conversion.document, policy)
    if secrets or services:
        them = "it" if len(secrets) + len(services) == 1 else "them"
        note = needs_note(secrets, services)
        print(f"flowfleet: the flow {note}: set {them} on the replicas", file=sys.stderr)
    return 0


def _model_name(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("the model name is empty")
    return value.strip()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("import", help="convert a flow from another tool into a flowfleet flow")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    langflow = formats.add_parser(
        "langflow",
        help="convert a LangFlow export (JSON) into a flowfleet flow document",
        description="Convert a LangFlow export into a flowfleet flow document (see docs/langflow.md).",
    )
    langflow.add_argument("export", metavar="EXPORT.json", help="the LangFlow export ('-' for stdin)")
    langflow.add_argument("-o", "--output", metavar="OUT.json", help="write here instead of stdout")
    langflow.add_argument("--name", help="flow name (default: derived from the export's name)")
    langflow.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="openai",
        help="'openai' keeps OpenAI models; 'echo' makes every model offline (default: openai)",
    )
    langflow.add_argument(
        "--model",
        type=_model_name,
        default=DEFAULT_MODEL,
        metavar="NAME",
        help="the OpenAI model for a component whose model is empty, with a warning for each "
        f"(default: {DEFAULT_MODEL}); a model that is set is kept",
    )
    langflow.add_argument(
        "--keep-notes", action="store_true", help="append the text of LangFlow's notes to the description"
    )
    langflow.set_defaults(func=run_import_langflow)
