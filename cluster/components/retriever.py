"""Retriever: BM25 keyword retrieval over documents given in its params, indexed once at compile time.

    {"id": "docs", "type": "Retriever", "params": {"top_k": 2, "documents": [
        "Refunds are issued within 5 business days.",
        {"id": "shipping", "text": "We ship worldwide.", "metadata": {"url": "https://example.com/ship"}}]}}

Input `query` (default). Outputs `text` (default): the hits joined as "[id] text" blocks, ready for a
prompt's context; and `documents`: the hits as [{"id", "text", "score", "metadata"}], best first. A
document given as a plain string gets its 1-based position as id. Documents sharing no word with the
query are never returned, so both outputs may be empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.components.base import BuildContext, Component, Ports, RunContext
from cluster.components.bm25 import BM25Index
from cluster.errors import Problem
from cluster.flow.templates import to_text

MAX_DOCUMENTS = 10_000


def normalise(documents: list[Any]) -> list[dict[str, Any]]:
    """Documents as {"id", "text", "metadata"} dicts.

    >>> normalise(["a", {"id": "x", "text": "b"}])
    [{'id': '1', 'text': 'a', 'metadata': {}}, {'id': 'x', 'text': 'b', 'metadata': {}}]
    """
    out = []
    for position, doc in enumerate(documents, start=1):
        if isinstance(doc, str):
            out.append({"id": str(position), "text": doc, "metadata": {}})
        else:
            out.append({"id": doc["id"], "text": doc["text"], "metadata": dict(doc.get("metadata", {}))})
    return out


class Retriever(Component):
    type_name = "Retriever"
    description = "BM25 keyword search over documents in params: input `query`; outputs `text`, `documents`."
    params_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["documents"],
        "properties": {
            "documents": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_DOCUMENTS,
                "items": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["id", "text"],
                            "properties": {
                                "id": {"type": "string", "minLength": 1, "maxLength": 200},
                                "text": {"type": "string"},
                                "metadata": {"type": "object"},
                            },
                        },
                    ]
                },
            },
            "top_k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 3},
            "k1": {"type": "number", "minimum": 0, "maximum": 10, "default": 1.5},
            "b": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.75},
            "separator": {"type": "string", "maxLength": 100, "default": "\n\n"},
            "description": {"type": "string", "maxLength": 1000},
        },
    }

    def __init__(self, node_id: str, params: Mapping[str, Any], build: BuildContext) -> None:
        super().__init__(node_id, params, build)
        self.documents = normalise(params["documents"])
        self.index = BM25Index(
            [doc["text"] for doc in self.documents],
            k1=float(params.get("k1", 1.5)),
            b=float(params.get("b", 0.75)),
        )
        self.top_k = int(params.get("top_k", 3))
        self.separator = str(params.get("separator", "\n\n"))

    @classmethod
    def ports(cls, params: Mapping[str, Any]) -> Ports:
        return Ports(
            inputs=("query",),
            required=frozenset({"query"}),
            default_input="query",
            outputs=("text", "documents"),
            default_output="text",
        )

    @classmethod
    def check_params(cls, params: Mapping[str, Any], path: str) -> list[Problem]:
        problems = []
        seen: dict[str, int] = {}
        for i, doc in enumerate(normalise(params["documents"])):
            first = seen.setdefault(doc["id"], i)
            if first != i:
                message = f"document id {doc['id']!r} is already used by documents/{first}"
                at = f"{path}/documents/{i}" + ("/id" if isinstance(params["documents"][i], dict) else "")
                problems.append(Problem(at, "duplicate_id", message))
        return problems

    def search(self, query: str) -> list[dict[str, Any]]:
        """The best documents for `query`, each with its BM25 score (rounded for stable output)."""
        return [
            {**self.documents[number], "score": round(score, 6)}
            for number, score in self.index.search(query, self.top_k)
        ]

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> Mapping[str, Any]:
        hits = self.search(to_text(inputs["query"]))
        text = self.separator.join(f"[{hit['id']}] {hit['text']}" for hit in hits)
        return {"text": text, "documents": hits}
