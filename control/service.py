"""The control-plane service layer: every operation the HTTP API offers, independent of HTTP.

Writes go through three gates before the fleet hears about them: a published document is parsed with
limits, validated (every problem at once), compiled and its `tests` examples run as a dry run; an
activation reads the stored blob back, checks its sha256 and compiles it again; only then does the
cutover (one atomic store script) move the release record and announce it.

This module holds the writes (publish, activate, rollback, gc); the reads and the lookups they share
are `control.reads.ReadService`, which `ControlService` extends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from cluster import engine
from cluster.egress.policy import OutboundPolicy
from cluster.errors import (
    BadRequest,
    CorruptBlob,
    FlowValidationError,
    GenerationConflict,
    Problem,
    VersionNotFound,
)
from cluster.flow import validation
from cluster.flow.analysis import ComponentRegistry
from cluster.flow.documents import load_document
from cluster.flow.hashing import content_address
from cluster.names import check_flow_name
from cluster.store.release import NoPreviousRelease, Release, rollback_target
from cluster.store.rollouts import RolloutInProgress, VersionRemoved
from cluster.store.store import Store
from control.metrics import ControlMetrics
from control.reads import ReadService, release_dict
from control.rollout.cutover import DEFAULT_OPTIONS, Cutover, CutoverOptions, CutoverRequest, DirectCutover
from control.rollout.twophase import RolloutAborted

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 2000
# Activation failures by metric label; anything else counts as "error".
FAILURE_LABELS: tuple[tuple[type[Exception], str], ...] = (
    (GenerationConflict, "conflict"),
    (FlowValidationError, "invalid"),
    (CorruptBlob, "corrupt"),
    (VersionNotFound, "not_found"),
    (RolloutAborted, "aborted"),
    (RolloutInProgress, "in_progress"),
    (VersionRemoved, "not_found"),
)


@dataclass(frozen=True)
class PublishOutcome:
    flow: str
    hash: str
    created: bool
    release: Release | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "hash": self.hash,
            "created": self.created,
            "release": release_dict(self.release),
        }


def check_message(message: str | None) -> str:
    message = (message or "").strip()
    if len(message) > MAX_MESSAGE_CHARS:
        raise BadRequest(f"message is longer than {MAX_MESSAGE_CHARS} characters")
    return message


def name_problems(flow: str, document: Any) -> list[Problem]:
    """The URL names the flow; a document that names a different one is refused, not silently renamed."""
    if isinstance(document, Mapping):
        name = document.get("name")
        if name is not None and name != flow:
            return [
                Problem(
                    "/name",
                    "name_mismatch",
                    f"document is named {name!r} but is being published as flow {flow!r}",
                )
            ]
    return []


def parse(raw: bytes, limits: validation.Limits | None, flow: str) -> Any:
    """The document in `raw` (a LangFlow export is converted and named `flow`); bytes that are not JSON
    at all are a malformed request (400), not a flow problem (422)."""
    try:
        return load_document(raw, limits, name=flow)
    except FlowValidationError as e:
        if [p.code for p in e.problems] == ["invalid_json"]:
            raise BadRequest(e.problems[0].message) from e
        raise


class ControlService(ReadService):
    def __init__(
        self,
        store: Store,
        *,
        registry: ComponentRegistry | None = None,
        limits: validation.Limits | None = None,
        policy: OutboundPolicy | None = None,
        cutover: Cutover | None = None,
        metrics: ControlMetrics | None = None,
        gc_min_age_s: float = 0.0,
    ) -> None:
        super().__init__(store, metrics or ControlMetrics())
        self.registry = registry
        self.limits = limits
        self.policy = policy
        self.cutover: Cutover = cutover or DirectCutover(store)
        # gc spares versions younger than this (FLOWFLEET_GC_MIN_AGE_S).
        self.gc_min_age_s = gc_min_age_s

    # -- writes -------------------------------------------------------------------------------------
    async def publish(
        self,
        flow: str,
        raw: bytes,
        *,
        actor: str,
        message: str | None = None,
        activate: bool = False,
        expected_generation: int | None = None,
        options: CutoverOptions = DEFAULT_OPTIONS,
    ) -> PublishOutcome:
        """Validate, dry-run and store a document; with `activate`, also make it current."""
        check_flow_name(flow)
        message = check_message(message)
        try:
            document = parse(raw, self.limits, flow)
            misnamed = name_problems(flow, document)
            try:
                # compile_flow validates first and reports every problem; validating separately would
                # double the cost for large flows.
                compiled = await self._compile(document)
            except FlowValidationError as e:
                raise FlowValidationError(misnamed + list(e.problems)) from e
            if misnamed:
                raise FlowValidationError(misnamed)
            failures = await engine.run_examples(compiled)
            if failures:
                raise FlowValidationError(failures)
        except FlowValidationError:
            self.metrics.publishes.labels("invalid").inc()
            raise
        data, digest = content_address(document)
        result = await self.store.publish(
            flow, data, digest, author=actor, message=message, node_count=compiled.node_count
        )
        self.metrics.publishes.labels("created" if result.created else "unchanged").inc()
        release = None
        if activate:
            release = await self._cutover(
                CutoverRequest(flow, digest, actor, message, "activate", expected_generation),
                options,
            )
        return PublishOutcome(flow, digest, result.created, release)

    async def activate(
        self,
        flow: str,
        ref: str,
        *,
        actor: str,
        message: str | None = None,
        expected_generation: int | None = None,
        options: CutoverOptions = DEFAULT_OPTIONS,
        unpin: bool = False,
    ) -> Release:
        """Make a stored version (full hash or unambiguous prefix) the flow's current release; `unpin`
        also moves every session pinned to another version onto it."""
        digest = await self.resolve(flow, ref)
        request = CutoverRequest(
            flow, digest, actor, check_message(message), "activate", expected_generation, unpin=unpin
        )
        return await self._cutover(request, options)

    async def rollback(
        self,
        flow: str,
        *,
        actor: str,
        message: str | None = None,
        to_generation: int | None = None,
        to_hash: str | None = None,
        expected_generation: int | None = None,
        options: CutoverOptions = DEFAULT_OPTIONS,
        unpin: bool = False,
    ) -> Release:
        """Activate an earlier version as a new generation (by default the newest earlier release with
        a different version, so a rollback of a rollback goes forward again, like `kubectl rollout undo`).

        The default target depends on what is current, so that activation is compare-and-set against the
        generation it was computed from: a concurrent activation makes it a conflict, not a surprise.
        `expected_generation` makes any rollback compare-and-set (the automatic rollback uses it).
        """
        if to_generation is not None and to_hash is not None:
            raise BadRequest("give to_generation or to_hash, not both", flow=flow)
        message = check_message(message)
        current = await self.store.get_release(flow)
        if current is None:
            await self.require_flow(flow)
            raise NoPreviousRelease(f"flow {flow!r} has never been activated", flow=flow)
        expected = None
        if to_hash is not None:
            digest = await self.resolve(flow, to_hash)
        else:
            history = await self.store.history(flow, self.store.history_keep)
            digest = rollback_target(flow, current, history, to_generation=to_generation).hash
            if to_generation is None:
                expected = current.generation
        if expected_generation is not None:
            expected = expected_generation
        request = CutoverRequest(flow, digest, actor, message, "rollback", expected, unpin=unpin)
        return await self._cutover(request, options)

    async def gc(self, *, actor: str, dry_run: bool = False) -> dict[str, Any]:
        """Delete the versions nothing may still need (cluster.store.gc), sparing any published less than
        `gc_min_age_s` ago; `dry_run` lists what would go and deletes nothing."""
        result = await self.store.gc(by=actor, min_age_s=self.gc_min_age_s, dry_run=dry_run)
        what = "gc dry run" if dry_run else "gc"
        log.info("%s by=%s removed=%d kept=%d", what, actor, result.removed_count, result.kept)
        return {**result.as_dict(), "dry_run": dry_run, "min_age_s": self.gc_min_age_s}

    # -- helpers ------------------------------------------------------------------------------------
    async def check_version(self, flow: str, digest: str) -> None:
        """Verify a stored version's bytes and compile it (what every activation does first)."""
        await self._compile(await self.load(flow, digest))

    async def _compile(self, document: Any) -> engine.CompiledFlow:
        # Compiling a large flow is CPU work; keep it off the event loop so other requests proceed.
        return await asyncio.to_thread(
            engine.compile_flow, document, registry=self.registry, limits=self.limits, policy=self.policy
        )

    async def _cutover(self, request: CutoverRequest, options: CutoverOptions) -> Release:
        request = replace(request, prepare=options.prepare, force=options.force, timeout_s=options.timeout_s)
        counter = self.metrics.activations
        try:
            # The stored version is checked again: the registry or the bytes may have changed since publish.
            data = await self.load_bytes(request.flow, request.digest)
            await self._compile(orjson.loads(data))
            release = await self.cutover(replace(request, data=data))
        except Exception as e:
            label = next((name for kind, name in FAILURE_LABELS if isinstance(e, kind)), "error")
            counter.labels(request.action, label).inc()
            raise
        # The store logs the state change itself (one line per activation).
        counter.labels(request.action, "ok").inc()
        return release
