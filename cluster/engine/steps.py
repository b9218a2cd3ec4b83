"""A node as the scheduler sees it (`Step`), and the order of steps that can only run one at a time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cluster.components.base import Component


@dataclass(frozen=True, eq=False)
class Step:
    """A node as the scheduler sees it: its component, where each input comes from, and what follows."""

    index: int
    node_id: str
    type_name: str
    component: Component
    # input port -> (source step index, source port) for every edge into it
    feeds: Mapping[str, tuple[tuple[int, str], ...]]
    # input port -> run input name, for the ports no edge feeds
    run_inputs: Mapping[str, str]
    required: frozenset[str]
    outputs: frozenset[str]
    default_output: str
    successors: tuple[int, ...]
    predecessor_count: int
    timeout_s: float | None = None


def sequential_order(steps: tuple[Step, ...]) -> tuple[int, ...] | None:
    """The order the scheduler runs `steps` in when it never has two of them ready at once (a chain,
    whatever is skipped: skipping settles a node like running it), or None when the graph fans out."""
    waiting = [step.predecessor_count for step in steps]
    ready = [step.index for step in steps if step.predecessor_count == 0]
    order: list[int] = []
    while ready:
        if len(ready) > 1:
            return None
        index = ready.pop()
        order.append(index)
        for successor in steps[index].successors:
            waiting[successor] -= 1
            if waiting[successor] == 0:
                ready.append(successor)
    return tuple(order) if len(order) == len(steps) else None
