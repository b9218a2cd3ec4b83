"""Topological order, cycle detection and reachability over node indices."""

from __future__ import annotations

from cluster.flow import graph


def test_topological_order_prefers_document_order() -> None:
    # 3 and 1 are both ready at the start; the lower index goes first.
    assert graph.topological_order(4, [[2], [2], [], [0]]) == [1, 3, 0, 2]


def test_topological_order_is_none_with_a_cycle() -> None:
    assert graph.topological_order(3, [[1], [2], [1]]) is None


def test_find_cycles_lists_each_cycle_from_its_lowest_node_in_edge_direction() -> None:
    successors = [[1], [2], [0], [4], [3], [5]]
    assert graph.find_cycles(6, successors) == [[0, 1, 2], [3, 4], [5]]


def test_find_cycles_picks_a_shortest_cycle_inside_a_component() -> None:
    # 0 -> 1 -> 2 -> 0 and 0 -> 2 -> 0: the second one is shorter.
    assert graph.find_cycles(3, [[1, 2], [2], [0]]) == [[0, 2]]


def test_acyclic_graph_has_no_cycles() -> None:
    assert graph.find_cycles(3, [[1, 2], [2], []]) == []


def test_long_chain_does_not_recurse() -> None:
    count = 100_000
    successors = [[i + 1] for i in range(count - 1)] + [[0]]
    cycles = graph.find_cycles(count, successors)
    assert len(cycles) == 1 and len(cycles[0]) == count
    assert graph.topological_order(count, [[i + 1] for i in range(count - 1)] + [[]]) == list(range(count))


def test_reaching_walks_predecessors() -> None:
    predecessors = [[], [0], [1], []]
    assert graph.reaching([2], predecessors) == {0, 1, 2}
    assert graph.reaching([3], predecessors) == {3}
