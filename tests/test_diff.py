"""control.diff: node, edge and param level differences between two documents."""

from __future__ import annotations

import copy

from hypothesis import given
from hypothesis import strategies as st

from control.diff import diff_documents, diff_values

BASE = {
    "name": "qa",
    "description": "answers questions",
    "nodes": [
        {"id": "prompt", "type": "PromptTemplate", "params": {"template": "Q: {question}"}},
        {
            "id": "llm",
            "type": "LLM",
            "params": {"provider": "echo", "model": "echo-1", "options": {"t": 0.1}},
        },
        {"id": "out", "type": "ChatOutput", "params": {}},
    ],
    "edges": [
        {"source": "prompt", "target": "llm", "source_output": "text", "target_input": "prompt"},
        {"source": "llm", "target": "out"},
    ],
}


def test_identical_documents_have_an_empty_diff() -> None:
    diff = diff_documents(BASE, copy.deepcopy(BASE))
    assert diff.empty
    assert diff.as_dict()["empty"] is True
    assert diff.as_dict()["nodes"] == {"added": [], "removed": [], "changed": []}


def test_node_order_and_edge_order_do_not_matter() -> None:
    shuffled = copy.deepcopy(BASE)
    shuffled["nodes"].reverse()
    shuffled["edges"].reverse()
    assert diff_documents(BASE, shuffled).empty


def test_param_change_reports_path_and_old_and_new_values() -> None:
    new = copy.deepcopy(BASE)
    new["nodes"][0]["params"]["template"] = "Question: {question}"
    new["nodes"][1]["params"]["options"]["t"] = 0.7
    new["nodes"][1]["params"]["options"]["top_p"] = 0.9
    del new["nodes"][1]["params"]["model"]
    diff = diff_documents(BASE, new).as_dict()
    changed = {c["id"]: c["params"] for c in diff["nodes"]["changed"]}
    assert changed["prompt"] == [
        {"path": "/template", "kind": "changed", "old": "Q: {question}", "new": "Question: {question}"}
    ]
    assert changed["llm"] == [
        {"path": "/model", "kind": "removed", "old": "echo-1", "new": None},
        {"path": "/options/t", "kind": "changed", "old": 0.1, "new": 0.7},
        {"path": "/options/top_p", "kind": "added", "old": None, "new": 0.9},
    ]
    assert "out" not in changed


def test_added_removed_and_retyped_nodes() -> None:
    new = copy.deepcopy(BASE)
    new["nodes"] = [n for n in new["nodes"] if n["id"] != "out"]
    new["nodes"].append({"id": "parser", "type": "JSONParser", "params": {}})
    new["nodes"][1]["type"] = "ChatModel"
    diff = diff_documents(BASE, new)
    assert [n["id"] for n in diff.nodes_added] == ["parser"]
    assert [n["id"] for n in diff.nodes_removed] == ["out"]
    (llm,) = diff.nodes_changed
    assert llm.as_dict()["type"] == {"old": "LLM", "new": "ChatModel"}
    assert llm.params == ()


def test_edges_added_and_removed_by_endpoints() -> None:
    new = copy.deepcopy(BASE)
    new["edges"][0]["target_input"] = "system"
    new["edges"].pop(1)
    new["edges"].append({"source": "llm", "target": "out", "id": "e-2"})  # extra key only: same edge
    diff = diff_documents(BASE, new)
    assert diff.edges_removed == (
        {"source": "prompt", "target": "llm", "source_output": "text", "target_input": "prompt"},
    )
    assert diff.edges_added == (
        {"source": "prompt", "target": "llm", "source_output": "text", "target_input": "system"},
    )


def test_top_level_fields_and_other_node_keys() -> None:
    new = copy.deepcopy(BASE)
    new["description"] = "answers better"
    new["tests"] = [{"name": "smoke", "inputs": {"question": "hi"}}]
    new["nodes"][2]["position"] = {"x": 1}
    diff = diff_documents(BASE, new).as_dict()
    assert [(f["path"], f["kind"]) for f in diff["fields"]] == [
        ("/description", "changed"),
        ("/tests", "added"),
    ]
    (out,) = diff["nodes"]["changed"]
    assert out["other"] == [{"path": "/position", "kind": "added", "old": None, "new": {"x": 1}}]


def test_json_pointer_escaping_and_type_changes() -> None:
    changes = diff_values({"a/b": 1, "c~d": True}, {"a/b": 1.5, "c~d": 1})
    assert [(c.path, c.old, c.new) for c in changes] == [("/a~1b", 1, 1.5), ("/c~0d", True, 1)]


def test_lists_compare_by_index() -> None:
    changes = diff_values([1, 2, 3], [1, 5])
    assert [(c.path, c.kind) for c in changes] == [("/1", "changed"), ("/2", "removed")]


def test_malformed_documents_do_not_raise() -> None:
    diff = diff_documents({"nodes": "x", "edges": [1, None]}, {"nodes": [{"id": 3}, "y"], "edges": {}})
    assert diff.nodes_added == () and diff.edges_added == ()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@given(json_values, json_values)
def test_no_changes_iff_equal(a: object, b: object) -> None:
    assert (diff_values(a, b) == []) == _deep_equal(a, b)


def _deep_equal(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        assert isinstance(b, dict)
        return a.keys() == b.keys() and all(_deep_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        assert isinstance(b, list)
        return len(a) == len(b) and all(_deep_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b
