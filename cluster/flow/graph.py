"""Pure graph algorithms over node indices: topological order, cycles, reachability.

All are iterative (no recursion), so a 5,000-node chain cannot exhaust the interpreter stack.

>>> topological_order(3, [[1], [2], []])
[0, 1, 2]
>>> find_cycles(3, [[1], [2], [0]])
[[0, 1, 2]]
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence

Adjacency = Sequence[Sequence[int]]


def topological_order(count: int, successors: Adjacency) -> list[int] | None:
    """Kahn's algorithm, preferring lower indices (document order) among ready nodes, so the order is
    deterministic. Returns None when the graph has a cycle."""
    indegree = [0] * count
    for targets in successors:
        for target in targets:
            indegree[target] += 1
    ready = [i for i in range(count) if indegree[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for target in successors[node]:
            indegree[target] -= 1
            if indegree[target] == 0:
                heapq.heappush(ready, target)
    return order if len(order) == count else None


def strongly_connected(count: int, successors: Adjacency) -> list[list[int]]:
    """Tarjan's algorithm without recursion; components come out in reverse topological order."""
    index_of = [-1] * count
    lowlink = [0] * count
    on_stack = [False] * count
    stack: list[int] = []
    components: list[list[int]] = []
    counter = 0
    for root in range(count):
        if index_of[root] != -1:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index_of[node] = lowlink[node] = counter
                counter += 1
                stack.append(node)
                on_stack[node] = True
            targets = successors[node]
            if child < len(targets):
                work.append((node, child + 1))
                target = targets[child]
                if index_of[target] == -1:
                    work.append((target, 0))
                elif on_stack[target]:
                    lowlink[node] = min(lowlink[node], index_of[target])
                continue
            if lowlink[node] == index_of[node]:
                component: list[int] = []
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[node])
    return components


def _cycle_through(start: int, members: set[int], successors: Adjacency) -> list[int]:
    """A shortest cycle from `start` back to itself inside one strongly connected component."""
    parent: dict[int, int] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in successors[node]:
            if target == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            if target in members and target not in parent:
                parent[target] = node
                queue.append(target)
    raise AssertionError("a strongly connected component always holds a cycle")  # pragma: no cover


def find_cycles(count: int, successors: Adjacency) -> list[list[int]]:
    """One cycle per strongly connected component that has one (self-loops included), each starting at
    its lowest index and listed in edge direction; the cycles are sorted by that first index."""
    cycles = []
    for component in strongly_connected(count, successors):
        first = component[0]
        if len(component) > 1 or first in successors[first]:
            cycles.append(_cycle_through(first, set(component), successors))
    return sorted(cycles)


def reaching(targets: Iterable[int], predecessors: Adjacency) -> set[int]:
    """Every node from which some node of `targets` can be reached (the targets included)."""
    seen = set(targets)
    queue = deque(seen)
    while queue:
        node = queue.popleft()
        for source in predecessors[node]:
            if source not in seen:
                seen.add(source)
                queue.append(source)
    return seen
