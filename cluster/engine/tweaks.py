"""Tweaked variants of a compiled flow: compiled once per distinct tweaks, cached, and closed safely.

    variant = await compiled.tweaked({"llm": {"temperature": 0.9}})   # TweakNotAllowed / InvalidTweaks
    result = await variant.run({"question": "..."})

A variant is the original's document (rebuilt from its model, without examples or metadata) with the
tweaks applied (`cluster.flow.tweaks.apply_tweaks`), validated by the same rules against the same
component classes, outbound policy and limits, and built with the same runtime. It reports the
original's name and digest: the served version is still the original one. A tweak must not change what
a node reaches outside the flow (secrets, addresses, services): validation refuses allow-lists naming
such params, and the tweaked params are checked again here, so a plugin's param cannot slip through.

Lifetime. An original keeps at most MAX_VARIANTS variants, least recently used first out, keyed by the
canonical JSON of the tweaks. A variant is good for the one run of the caller `tweaked()` handed it to
(`run` or `execute`; ask `tweaked()` again for the next run: a cache hit is a dict lookup). Its `Usage`
counts the callers it was handed to whose run has not started, and its runs in flight. An evicted
variant is closed as soon as both are zero: at eviction if they already are, else when its last run
ends. So a run never finds its variant closed under it, and variants do not pile up while the version
serves. A caller that got a variant and never ran it keeps it open until the original's `aclose()`,
which closes every variant it still has, evicted or not (it is called once no run of the version is
left, so nothing can still be using one).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from cluster.errors import FlowValidationError, InvalidTweaks, Problem, TweakNotAllowed
from cluster.flow.analysis import Analysis
from cluster.flow.hashing import canonical_bytes
from cluster.flow.model import Flow, FlowApi
from cluster.flow.tweaks import (
    FixedRegistry,
    Tweaks,
    apply_tweaks,
    check_reach,
    check_tweaks,
    source_document,
)
from cluster.flow.validation import Limits, check_and_analyse

if TYPE_CHECKING:
    from cluster.egress.policy import OutboundPolicy

logger = logging.getLogger(__name__)

MAX_VARIANTS = 32
# What an original's runs count with: nothing.
UNCOUNTED: AbstractContextManager[None] = nullcontext()


class Closable(Protocol):
    async def aclose(self) -> None: ...


V = TypeVar("V", bound=Closable)


class Usage(Generic[V]):
    """Who may still use one variant: callers handed it whose run has not started (`handed_out`) and
    runs in flight (`running`). A run holds it as a context manager (`with usage:`)."""

    def __init__(self, owner: Variants[V]) -> None:
        self._owner = owner
        self.handed_out = 0
        self.running = 0
        self.retired = False  # evicted, or its original is closing
        self.closed = False
        self.build: asyncio.Future[V] | None = None

    @property
    def idle(self) -> bool:
        return self.handed_out == 0 and self.running == 0

    def __enter__(self) -> None:
        if self.closed:
            raise RuntimeError("this tweaked variant is closed: ask tweaked() for a variant per run")
        if self.handed_out:
            self.handed_out -= 1
        self.running += 1

    def __exit__(self, *exc_info: object) -> None:
        self.running -= 1
        self._owner.release(self)


def _unescape(part: str) -> str:
    return part.replace("~1", "/").replace("~0", "~")


def _tweak_at(path: str, flow: Flow, tweaks: Tweaks) -> tuple[str, str | None] | None:
    """(node id, param) of the tweak a problem's path points into, param None for the node as a whole."""
    parts = path.split("/")
    if len(parts) < 3 or parts[1] != "nodes" or not parts[2].isdigit() or int(parts[2]) >= len(flow.nodes):
        return None
    node = flow.nodes[int(parts[2])].id
    if node not in tweaks:
        return None
    param = _unescape(parts[4]) if len(parts) > 4 and parts[3] == "params" else None
    return node, param if param in tweaks[node] else None


def _newly_fixed(flow: Flow, problems: Sequence[Problem]) -> TweakNotAllowed | None:
    """A tweaked value that makes its param one that is never tweakable (a plugin's param that now
    names a secret or an address): the allow-list check of the tweaked document reports it."""
    for problem in problems:
        parts = problem.path.split("/")
        if problem.code == "tweak_not_allowed" and len(parts) == 5 and parts[1:3] == ["api", "tweaks"]:
            node = _unescape(parts[3])
            param = sorted(flow.api.tweaks.get(node, ()))[int(parts[4])]  # source_document sorts them
            reason = problem.message.rpartition(": ")[2]  # "it names a secret", "it is an address ..."
            message = f"param {param!r} of node {node!r} cannot be tweaked to this value: {reason}"
            return TweakNotAllowed(message, node=node, param=param, tweakable=flow.api.tweaks)
    return None


def refused(flow: Flow, tweaks: Tweaks, problems: Sequence[Problem]) -> InvalidTweaks:
    """The error for a tweaked document validation refuses: TweakNotAllowed when a tweaked value makes
    its param never tweakable, else InvalidTweaks listing each problem with the tweak it concerns."""
    fixed = _newly_fixed(flow, problems)
    if fixed is not None:
        return fixed
    listed: list[dict[str, Any]] = []
    for problem in problems:
        where = _tweak_at(problem.path, flow, tweaks)
        listed.append(problem.as_dict() | ({"node": where[0], "param": where[1]} if where else {}))
    first = problems[0] if problems else Problem("", "invalid_flow", "the tweaked flow is invalid")
    where = _tweak_at(first.path, flow, tweaks)
    if where is None:
        head = f"the tweaked flow is invalid: {first}"
    else:
        head = f"tweak {'.'.join(p for p in where if p)} ({first.path}): {first.message}"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return InvalidTweaks(head + more, problems=listed)


class Variants(Generic[V]):
    """The bounded LRU of one original's variants (see the module docstring for their lifetime).
    Only touched from the event loop; variants are compiled in a worker thread."""

    def __init__(
        self,
        analysis: Analysis,
        compile: Callable[[Analysis, Usage[V]], V],
        *,
        policy: OutboundPolicy | None = None,
        limits: Limits | None = None,
        size: int = MAX_VARIANTS,
    ) -> None:
        self.flow = analysis.flow
        self.size = size
        self._source = source_document(analysis.flow)
        self._registry = FixedRegistry(analysis.flow, analysis.classes)
        self._compile = compile
        self._policy, self._limits = policy, limits
        self._cache: OrderedDict[bytes, Usage[V]] = OrderedDict()
        self._retiring: set[Usage[V]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def holds_resources(self) -> bool:
        return bool(self._cache or self._retiring or self._closing)

    async def get(self, tweaks: Tweaks) -> V:
        """The variant for checked, non-empty tweaks, compiled on first use. Raises InvalidTweaks or
        TweakNotAllowed when the tweaked flow is refused (refusals are not cached)."""
        if self._closed:
            raise RuntimeError("this flow is closed; it makes no more variants")
        key = canonical_bytes(tweaks)
        usage = self._cache.get(key)
        if usage is None:
            usage = Usage(self)
            usage.build = asyncio.ensure_future(asyncio.to_thread(self._variant, tweaks, usage))
            usage.build.add_done_callback(functools.partial(self._built, key, usage))
            self._cache[key] = usage
            self._evict()
        else:
            self._cache.move_to_end(key)
        assert usage.build is not None
        usage.handed_out += 1  # before waiting: an eviction meanwhile must not close it
        try:
            return await asyncio.shield(usage.build)
        except BaseException:
            usage.handed_out -= 1
            self.release(usage)
            raise

    def _variant(self, tweaks: Tweaks, usage: Usage[V]) -> V:
        document = apply_tweaks(self._source, tweaks)
        try:
            analysis = check_and_analyse(
                document, registry=self._registry, limits=self._limits, policy=self._policy
            )
            check_reach(self.flow, analysis.flow, analysis.classes, tweaks)
            return self._compile(analysis, usage)
        except FlowValidationError as e:  # from validation, or a component that cannot be built
            raise refused(self.flow, tweaks, e.problems) from e

    def _built(self, key: bytes, usage: Usage[V], build: asyncio.Future[V]) -> None:
        if not _succeeded(build):
            if self._cache.get(key) is usage:
                del self._cache[key]
            self._retiring.discard(usage)
            usage.closed = True  # nothing was built, so nothing to close
            return
        self.release(usage)

    def _evict(self) -> None:
        while len(self._cache) > self.size:
            _, usage = self._cache.popitem(last=False)
            usage.retired = True
            self._retiring.add(usage)
            self.release(usage)

    def release(self, usage: Usage[V]) -> None:
        """Close the variant if it is evicted, built, and no one can use it any more."""
        build = usage.build
        if not (usage.retired and usage.idle and not usage.closed and build is not None and build.done()):
            return
        usage.closed = True
        self._retiring.discard(usage)
        if not _succeeded(build):
            return
        task = asyncio.get_running_loop().create_task(_close(build.result()))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Close every variant, evicted or cached, after any still being compiled is built. Call once no
        run of the original or of its variants remains."""
        self._closed = True
        usages = [*self._cache.values(), *self._retiring]
        self._cache.clear()
        self._retiring.clear()
        for usage in usages:
            usage.retired = True
        await asyncio.gather(*(u.build for u in usages if u.build is not None), return_exceptions=True)
        for usage in usages:
            if not usage.closed and usage.build is not None and _succeeded(usage.build):
                usage.closed = True
                await _close(usage.build.result())
        await asyncio.gather(*self._closing)


def _succeeded(build: asyncio.Future[Any]) -> bool:
    """Whether a finished build produced a variant (reading the exception marks it as retrieved)."""
    return not build.cancelled() and build.exception() is None


async def _close(variant: Closable) -> None:
    try:
        await variant.aclose()
    except Exception:  # closing must always complete; CompiledFlow.aclose already logs each node
        logger.warning("closing a tweaked variant failed", exc_info=True)


async def variant_of(flow: V, api: FlowApi, variants: Variants[V] | None, tweaks: Any) -> V:
    """`flow` itself for no tweaks (None, {}), else its variant for `tweaks`; see `CompiledFlow.tweaked`."""
    checked = check_tweaks(api, tweaks)
    if not checked:
        return flow
    if variants is None:  # tweaks are off (check_tweaks refused them), or `flow` is a variant already
        raise InvalidTweaks("a tweaked variant cannot be tweaked again; tweak the flow it came from")
    return await variants.get(checked)
