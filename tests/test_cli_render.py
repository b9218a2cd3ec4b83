"""control.cli.render: tables and diffs for people."""

from __future__ import annotations

from control.cli.render import diff_text, table, when


def test_table_aligns_columns_and_keeps_one_line_per_row() -> None:
    text = table(["GEN", "REASON"], [[10, "fix\nthe  prompt"], [9, None]])
    assert text.splitlines() == ["GEN  REASON", "10   fix the prompt", "9    -"]


def test_when_formats_unix_seconds_in_utc() -> None:
    assert when(0) == "-" and when(None) == "-" and when(True) == "-"
    assert when(1764100000.5) == "2025-11-25 19:46:40Z"


def test_diff_text_lists_every_kind_of_change() -> None:
    diff = {
        "nodes": {
            "added": [{"id": "parser", "type": "JSONParser"}],
            "removed": [{"id": "old", "type": "LLM"}],
            "changed": [
                {
                    "id": "llm",
                    "type": {"old": "LLM", "new": "ChatModel"},
                    "params": [{"path": "/t", "kind": "changed", "old": 0.1, "new": 0.7}],
                    "other": [{"path": "/position", "kind": "removed", "old": {"x": 1}, "new": None}],
                }
            ],
        },
        "edges": {"added": [{"source": "a", "target": "b", "target_input": "p"}], "removed": []},
        "fields": [{"path": "/description", "kind": "added", "old": None, "new": "x"}],
        "empty": False,
    }
    assert diff_text(diff).splitlines() == [
        "+ node parser (JSONParser)",
        "- node old (LLM)",
        "~ node llm (type LLM -> ChatModel)",
        "    params ~ /t: 0.1 -> 0.7",
        '    - /position: {"x":1}',
        "+ edge a -> b.p",
        '+ /description: "x"',
    ]
    assert diff_text({"empty": True}) == "no differences"
