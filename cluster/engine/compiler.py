"""Compile a flow document once, then run it many times, concurrently.

    compiled = compile_flow(document)                      # validates; raises FlowValidationError
    result = await compiled.run({"input": "hi"}, timeout=30, trace=True)
    result.outputs                                         # {"llm_1": "..."}

A CompiledFlow is immutable: components are built once, ports are bound and the order is precomputed,
so a run only moves values. Independent branches run as concurrent tasks; a failing node fails the run
with its id (NodeFailed), a node or run over its time budget raises RunTimeout, and cancelling the
caller cancels every running node. Per-call param overrides: `tweaked` (cluster.engine.tweaks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from random import getrandbits
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from cluster.components.base import BuildContext, Component, RunContext
from cluster.egress.policy import OutboundPolicy
from cluster.engine.scheduler import Execution
from cluster.engine.steps import Step, bind_tools, build_steps, sequential_order
from cluster.engine.tweaks import UNCOUNTED, Usage, Variants, variant_of
from cluster.errors import FlowValidationError, MissingSearchProvider, MissingSecret, Problem
from cluster.flow.analysis import Analysis, ComponentRegistry, needed_secrets
from cluster.flow.hashing import content_address
from cluster.flow.inputs import InputSpec, check_run_inputs, describe_inputs
from cluster.flow.model import FlowApi, FlowTest
from cluster.flow.schemacheck import pointer
from cluster.flow.validation import Limits, check_and_analyse
from cluster.gcpause import paused_gc

if TYPE_CHECKING:
    from cluster.components.conversation import Conversation
    from cluster.egress.runtime import Runtime


logger = logging.getLogger(__name__)


class RunResult(NamedTuple):
    """What one run produced (a named tuple: made once per run, cheaper than a frozen dataclass)."""

    outputs: dict[str, Any]
    trace: list[dict[str, Any]] | None
    duration_ms: float


@dataclass(frozen=True, eq=False)
class CompiledFlow:
    """A validated, built flow, shared by every run of it (runs never mutate it)."""

    name: str | None
    digest: str
    steps: tuple[Step, ...]
    # (step index, output key), in document order.
    outputs: tuple[tuple[int, str], ...]
    required_inputs: frozenset[str]
    input_names: frozenset[str]
    tests: tuple[FlowTest, ...]
    # The steps' run order when no two can run at once (steps.sequential_order), else None.
    order: tuple[int, ...] | None = None
    # Tool nodes: built and bound to the nodes they serve, but not steps of their own.
    tool_components: tuple[Component, ...] = ()
    # Whether a run may wait on the network (a component holds a connection pool): the replica then
    # cancels the run when its client goes away.
    calls_out: bool = False
    # Whether a node reads or adds to the run's conversation (Component.uses_conversation).
    remembers: bool = False
    # The document's `api`; the variants tweaks made of this flow (None if off, or a variant); its users.
    api: FlowApi = field(default_factory=FlowApi)
    variants: Variants[CompiledFlow] | None = field(default=None, repr=False)
    usage: Usage[CompiledFlow] | None = field(default=None, repr=False)
    # The run inputs, described for callers (cluster.flow.inputs).
    inputs: tuple[InputSpec, ...] = ()

    @property
    def node_count(self) -> int:
        return len(self.steps) + len(self.tool_components)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(key for _, key in self.outputs)

    def check_inputs(self, inputs: Mapping[str, Any]) -> None:
        """Raise RunInputError unless `inputs` gives every required input and nothing the flow does not
        take (cluster.flow.inputs.check_run_inputs)."""
        keys = inputs.keys() if type(inputs) is dict else None
        if keys is not None and keys <= self.input_names and keys >= self.required_inputs:
            return  # the usual call, answered without a call (check_run_inputs would say nothing)
        check_run_inputs(inputs, self.inputs, self.required_inputs, self.input_names)

    @property
    def holds_resources(self) -> bool:
        """Whether `aclose` has anything to release (an OpenAI model's HTTP client, a plugin's)."""
        held = any(component.holds_resources for component in self._components())
        return held or (self.variants is not None and self.variants.holds_resources)

    def _components(self) -> Iterator[Component]:
        yield from (step.component for step in self.steps)
        yield from self.tool_components

    async def aclose(self) -> None:
        """Release what the components acquired at build time (HTTP clients). Call once, after the last
        run of this flow (and of its variants) finished; a component failing to close is logged, never
        raised, so retiring a flow always completes. Closes the variants tweaks made of it too."""
        if self.variants is not None:
            await self.variants.aclose()
        for component in self._components():
            try:
                await component.aclose()
            except Exception:
                node = component.node_id
                logger.warning("closing node %s of flow %s failed", node, self.name, exc_info=True)

    async def tweaked(self, tweaks: Any) -> CompiledFlow:
        """This flow with a caller's param overrides (`{node id: {param: value}}`) applied, for one run
        (cluster.engine.tweaks): self for no tweaks (None, {}). Raises TweakNotAllowed for a param
        `api.tweaks` does not list, InvalidTweaks for malformed tweaks or refused values (both 422)."""
        return await variant_of(self, self.api, self.variants, tweaks)

    async def run(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None = None,
        trace: bool = False,
        conversation: Conversation | None = None,
        stream: Callable[[dict[str, Any]], None] | None = None,
        inputs_checked: bool = False,
    ) -> RunResult:
        """Run once, continuing `conversation` if given (its new messages are the caller's to store);
        with `stream`, models stream and nodes send their events to it (RunContext.stream).
        `inputs_checked`: the caller ran `check_inputs` on these very inputs (a replica does, before it
        answers), so the run does not check them again. Raises RunInputError, RunTimeout (node or run
        budget), NodeFailed."""
        with self.usage or UNCOUNTED:
            execution = self._execution(inputs, timeout, trace, inputs_checked)
            if conversation is not None:
                execution.ctx.conversation = conversation
            if stream is not None:
                execution.ctx.stream = stream
            started = time.perf_counter()
            await execution.run(timeout)
            duration_ms = (time.perf_counter() - started) * 1000
            results = execution.results
            outputs: dict[str, Any] = {}
            for index, key in self.outputs:  # outputs_of, without a generator per run
                produced = results[index]
                port = self.steps[index].default_output
                if produced is not None and port in produced:
                    outputs[key] = produced[port]
            return RunResult(outputs, execution.trace, duration_ms)

    def outputs_of(self, results: list[Mapping[str, Any] | None]) -> Iterator[tuple[str, Any]]:
        """The run's outputs from every node's produced ports; outputs of skipped nodes are absent."""
        for index, key in self.outputs:
            produced = results[index]
            port = self.steps[index].default_output
            if produced is not None and port in produced:
                yield key, produced[port]

    async def execute(
        self,
        inputs: Mapping[str, Any],
        *,
        timeout: float | None = None,
        trace: bool = False,
        replies: Mapping[str, str] | None = None,
    ) -> tuple[list[Mapping[str, Any] | None], list[dict[str, Any]] | None, float]:
        """Run once and return every node's produced ports (None for a skipped node), the trace and
        the duration in milliseconds. `replies` are an example's recorded LLM replies (offline runs)."""
        with self.usage or UNCOUNTED:
            execution = self._execution(inputs, timeout, trace)
            if replies:
                execution.ctx.replies = replies
            started = time.perf_counter()
            await execution.run(timeout)
            return execution.results, execution.trace, (time.perf_counter() - started) * 1000

    def _execution(
        self, inputs: Mapping[str, Any], timeout: float | None, trace: bool, checked: bool = False
    ) -> Execution:
        if not checked:
            self.check_inputs(inputs)
        deadline = None if timeout is None else time.monotonic() + timeout
        # A run id tells runs apart in logs and traces; it guards nothing, so no syscall per run for it.
        ctx = RunContext(MappingProxyType(dict(inputs)), deadline, f"{getrandbits(64):016x}")
        return Execution(self.steps, ctx, trace=trace, order=self.order)


def _build(analysis: Analysis, runtime: Runtime | None) -> list[Component]:
    flow = analysis.flow
    build = BuildContext(flow_name=flow.name or "", runtime=runtime)
    components: list[Component] = []
    problems: list[Problem] = []
    for node, cls in zip(flow.nodes, analysis.classes, strict=True):
        try:
            components.append(cls(node.id, node.params, build))
        except (MissingSecret, MissingSearchProvider):  # this replica's configuration, not the version
            raise
        except Exception as e:  # a component that cannot start (bad index, a plugin's bug) is a NACK
            message = f"{cls.type_name} could not be built: {e}"
            problems.append(Problem(pointer("nodes", node.index), "build_failed", message))
    if problems:
        raise FlowValidationError(problems)
    return components


def compile_flow(
    document: Any,
    *,
    registry: ComponentRegistry | None = None,
    limits: Limits | None = None,
    policy: OutboundPolicy | None = None,
    runtime: Runtime | None = None,
) -> CompiledFlow:
    """Validate (against `policy`, else the runtime's, else the default one), build every component
    once and precompute the schedule. Without a runtime the flow is compiled for dry runs: nothing it
    does calls out or reads a secret. Raises FlowValidationError, or MissingSecret when the runtime
    lacks a secret the flow needs."""
    if policy is None and runtime is not None:
        policy = runtime.policy
    with paused_gc():  # see cluster.gcpause: a large flow allocates many small objects
        analysis = check_and_analyse(document, registry=registry, limits=limits, policy=policy)
        digest = content_address(document)[1]
        return compile_analysis(analysis, digest=digest, runtime=runtime, policy=policy, limits=limits)


def compile_analysis(
    analysis: Analysis,
    *,
    digest: str,
    runtime: Runtime | None = None,
    policy: OutboundPolicy | None = None,
    limits: Limits | None = None,
) -> CompiledFlow:
    """The part of `compile_flow` after validation: build the components of a valid flow's analysis
    (from `cluster.flow.validation.check_and_analyse`) and precompute the schedule. `digest` is the
    document's content address; tweaked variants are validated with `policy` (else the runtime's) and
    `limits`, and built with `runtime`. Raises FlowValidationError when a component cannot be built and
    MissingSecret, before building anything, when the runtime lacks a secret the flow needs."""
    compiled = _compile(analysis, None, digest=digest, runtime=runtime)
    if analysis.flow.api.tweaks_on:  # variants are checked like this flow and built with its runtime
        build = partial(_compile, digest=digest, runtime=runtime)
        policy = policy or (runtime.policy if runtime is not None else None)
        compiled = replace(compiled, variants=Variants(analysis, build, policy=policy, limits=limits))
    return compiled


def _compile(
    analysis: Analysis, usage: Usage[CompiledFlow] | None, *, digest: str, runtime: Runtime | None
) -> CompiledFlow:
    if runtime is not None:
        missing = runtime.missing(needed_secrets(analysis))
        if missing:
            raise MissingSecret(missing)
    components = _build(analysis, runtime)
    bind_tools(analysis, components)
    # Tool nodes run only when the node they serve calls them: they get no step of their own.
    tools = analysis.tool_nodes
    kept = [i for i in range(len(components)) if i not in tools] if tools else list(range(len(components)))
    position = {node: i for i, node in enumerate(kept)}
    explicit = any(cls.is_output for cls in analysis.classes)
    outputs: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for i in analysis.output_nodes:
        key = components[i].output_name() if explicit else components[i].node_id
        if key in seen:  # only reachable if a component overrides output_name inconsistently
            message = f"output {key!r} is written by more than one node"
            raise FlowValidationError([Problem(pointer("nodes", i), "duplicate_output", message)])
        seen[key] = i
        outputs.append((position[i], key))
    steps = build_steps(analysis, components, kept)
    return CompiledFlow(
        name=analysis.flow.name,
        digest=digest,
        steps=steps,
        outputs=tuple(outputs),
        required_inputs=analysis.required_inputs,
        input_names=analysis.required_inputs | analysis.optional_inputs,
        tests=analysis.flow.tests,
        order=sequential_order(steps),
        tool_components=tuple(components[i] for i in sorted(tools)),
        calls_out=any(component.holds_resources for component in components),
        remembers=any(type(component).uses_conversation for component in components),
        api=analysis.flow.api,
        usage=usage,
        inputs=describe_inputs(analysis),
    )
