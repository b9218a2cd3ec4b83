"""`flowfleet sync DIR`: GitOps for a directory of flow documents.

Every ``*.json`` in DIR is checked locally first (parse, validate, compile, run its `tests`); if any file
is invalid nothing is published. Then only what differs from the cluster is published (and, with
``--activate``, activated), so running it twice in a row changes nothing the second time. A file's flow
is its document's ``name``, or the file name without ``.json``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster import engine
from cluster.egress.policy import OutboundPolicy
from cluster.errors import BadRequest, FlowfleetError, FlowValidationError, Problem
from cluster.flow import validation
from cluster.flow.documents import load_document
from cluster.flow.hashing import content_address
from cluster.names import InvalidName, check_flow_name
from control.cli import render
from control.cli.client import ApiClient, RemoteError, path
from control.cli.policy import cli_policy


class SyncInvalid(FlowfleetError):
    """At least one file of the directory is invalid; nothing was published."""

    code = "sync_invalid"

    def __init__(self, problems: Sequence[tuple[Path, Problem]]) -> None:
        listed = "; ".join(f"{file.name}: {p}" for file, p in problems)
        files = len({file for file, _ in problems})
        super().__init__(
            f"{files} invalid file(s), nothing published: {listed}",
            problems=[{"file": str(f), **p.as_dict()} for f, p in problems],
        )


@dataclass(frozen=True)
class LocalFlow:
    file: Path
    flow: str
    data: bytes
    digest: str


@dataclass(frozen=True)
class SyncAction:
    flow: str
    file: str
    hash: str
    action: str  # "unchanged" | "published" | "published+activated" | "activated"
    generation: int | None = None


@dataclass(frozen=True)
class SyncReport:
    actions: tuple[SyncAction, ...]

    @property
    def changed(self) -> int:
        return sum(a.action != "unchanged" for a in self.actions)

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "actions": [a.__dict__ for a in self.actions]}

    def text(self) -> str:
        lines = [
            f"{a.action:<20} {a.flow} {render.short(a.hash)}"
            + (f" generation {a.generation}" if a.generation is not None else "")
            for a in self.actions
        ]
        lines.append(f"{self.changed} of {len(self.actions)} flow(s) changed")
        return "\n".join(lines)


def check_file(file: Path, policy: OutboundPolicy | None = None) -> tuple[LocalFlow | None, list[Problem]]:
    """Parse, validate (against this shell's outbound policy), compile and dry-run one file offline;
    every problem it has."""
    try:
        data = file.read_bytes()
    except OSError as e:
        return None, [Problem("", "unreadable", f"cannot read: {e.strerror}")]
    try:
        document = load_document(data)
    except FlowValidationError as e:
        return None, list(e.problems)
    name = document.get("name") if isinstance(document, dict) else None
    flow = name if isinstance(name, str) and name else file.stem
    problems = list(validation.validate(document, policy=policy))
    try:
        check_flow_name(flow)
    except InvalidName as e:
        problems.append(Problem("/name", "invalid_name", e.message))
    if problems:
        return None, problems
    try:
        compiled = engine.compile_flow(document, policy=policy)
        problems = asyncio.run(engine.run_examples(compiled))
    except FlowValidationError as e:
        problems = list(e.problems)
    if problems:
        return None, problems
    # The canonical bytes are sent: the same content, and a LangFlow export arrives already converted.
    canonical, digest = content_address(document)
    return LocalFlow(file, flow, canonical, digest), []


def check_directory(directory: Path, policy: OutboundPolicy | None = None) -> list[LocalFlow]:
    if not directory.is_dir():
        raise BadRequest(f"{directory} is not a directory")
    flows: list[LocalFlow] = []
    problems: list[tuple[Path, Problem]] = []
    seen: dict[str, Path] = {}
    for file in sorted(directory.glob("*.json")):
        local, found = check_file(file, policy)
        problems += [(file, p) for p in found]
        if local is None:
            continue
        if local.flow in seen:
            problems.append(
                (
                    file,
                    Problem(
                        "/name", "duplicate_flow", f"flow {local.flow!r} is also in {seen[local.flow].name}"
                    ),
                )
            )
            continue
        seen[local.flow] = file
        flows.append(local)
    if problems:
        raise SyncInvalid(problems)
    return flows


def _current_hash(api: ApiClient, flow: str) -> str | None:
    try:
        release = api.get(path("v1", "flows", flow))["release"]
    except RemoteError as e:
        if e.status == 404:
            return None
        raise
    return str(release["hash"]) if release else None


def _is_stored(api: ApiClient, flow: str, digest: str) -> bool:
    try:
        api.get(path("v1", "flows", flow, "versions", digest))
    except RemoteError as e:
        if e.status == 404:
            return False
        raise
    return True


def sync_one(
    api: ApiClient,
    local: LocalFlow,
    *,
    activate: bool,
    message: str | None,
    options: Mapping[str, Any] | None = None,
) -> SyncAction:
    if activate:
        if _current_hash(api, local.flow) == local.digest:
            return SyncAction(local.flow, str(local.file), local.digest, "unchanged")
    elif _is_stored(api, local.flow, local.digest):
        return SyncAction(local.flow, str(local.file), local.digest, "unchanged")
    url = path("v1", "flows", local.flow, "versions")
    params = {"activate": activate or None, "message": message, **((options or {}) if activate else {})}
    body = api.post(url, content=local.data, params=params)
    release = body.get("release")
    if release is None:
        return SyncAction(local.flow, str(local.file), body["hash"], "published")
    action = "published+activated" if body["created"] else "activated"
    return SyncAction(local.flow, str(local.file), body["hash"], action, int(release["generation"]))


def sync_directory(
    api: ApiClient,
    directory: Path,
    *,
    activate: bool,
    message: str | None,
    options: Mapping[str, Any] | None = None,
) -> SyncReport:
    """`options`: the two-phase cutover options of each activation (prepare, force, timeout_s)."""
    flows = check_directory(directory, cli_policy())
    actions: list[SyncAction] = []
    for local in flows:
        try:
            actions.append(sync_one(api, local, activate=activate, message=message, options=options))
        except RemoteError as e:
            # Say what already changed: a pipeline that fails halfway must not leave people guessing.
            done = ", ".join(f"{a.flow} {a.action}" for a in actions if a.action != "unchanged") or "nothing"
            raise RemoteError(
                f"sync stopped at {local.file.name} (flow {local.flow}): {e}; already changed: {done}",
                status=e.status,
                exit_code=e.exit_code,
                body=e.body,
            ) from e
    return SyncReport(tuple(actions))
