"""Retriever and its BM25 index: scores checked against the formula by hand, ranking, outputs, params."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.components.bm25 import BM25Index, tokenize
from cluster.components.retriever import Retriever
from tests.component_helpers import build, problems_of, run

DOCS = [
    "Refunds are issued within five business days.",
    {"id": "ship", "text": "We ship worldwide; shipping takes a week.", "metadata": {"url": "u"}},
    "Reset your password from the sign-in page.",
    "Refund policy: refunds for annual plans are prorated.",
]


def test_tokenize() -> None:
    assert tokenize("Straße, CAFÉ-au-lait 42!") == ["straße", "café", "au", "lait", "42"]
    assert tokenize("  ") == []


def test_scores_match_the_formula() -> None:
    texts = ["a b c", "a a d e f", "g"]
    index = BM25Index(texts, k1=1.5, b=0.75)
    avgdl = (3 + 5 + 1) / 3

    def idf(df: int) -> float:
        return math.log(1 + (3 - df + 0.5) / (df + 0.5))

    def term(tf: int, dl: int) -> float:
        return tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * dl / avgdl))

    scores = index.scores("a d")
    assert scores[0] == pytest.approx(idf(2) * term(1, 3))
    assert scores[1] == pytest.approx(idf(2) * term(2, 5) + idf(1) * term(1, 5))
    assert 2 not in scores
    # Repeating a query term does not count it twice.
    assert index.scores("a a d") == scores


def test_rare_terms_weigh_more_and_ties_keep_corpus_order() -> None:
    index = BM25Index(["x common", "y common", "z common rare"])
    assert [n for n, _ in index.search("common rare", 3)] == [2, 0, 1]
    assert [n for n, _ in index.search("common", 2)] == [0, 1]


def test_empty_corpus_and_empty_documents() -> None:
    assert BM25Index([]).search("a", 3) == []
    assert BM25Index(["", ""]).search("a", 3) == []
    assert BM25Index(["", "a"]).search("a", 3)[0][0] == 1


async def test_outputs_text_and_documents() -> None:
    component = build(Retriever, {"documents": DOCS, "top_k": 2})
    out = await run(component, {"query": "how long do refunds take?"})
    ids = [d["id"] for d in out["documents"]]
    assert ids == ["1", "4"]
    assert out["documents"][0]["text"] == DOCS[0] and out["documents"][0]["metadata"] == {}
    assert out["documents"][0]["score"] > out["documents"][1]["score"] > 0
    assert out["text"] == f"[1] {DOCS[0]}\n\n[4] {DOCS[3]}"


async def test_metadata_and_custom_separator() -> None:
    component = build(Retriever, {"documents": DOCS, "top_k": 1, "separator": " | "})
    out = await run(component, {"query": "shipping"})
    assert out["documents"] == [
        {
            "id": "ship",
            "text": DOCS[1]["text"],
            "metadata": {"url": "u"},
            "score": out["documents"][0]["score"],
        }
    ]
    assert out["text"] == f"[ship] {DOCS[1]['text']}"


async def test_no_shared_word_returns_nothing() -> None:
    out = await run(build(Retriever, {"documents": DOCS}), {"query": "kubernetes"})
    assert out == {"text": "", "documents": []}


def test_ports() -> None:
    ports = Retriever.ports({"documents": ["a"]})
    assert ports.inputs == ("query",) and ports.default_input == "query" and ports.required == {"query"}
    assert ports.outputs == ("text", "documents") and ports.default_output == "text"


def test_index_is_built_once_at_construction() -> None:
    component = build(Retriever, {"documents": DOCS})
    assert component.index.size == 4
    assert "refunds" in component.index.postings


@pytest.mark.parametrize(
    ("params", "path", "code"),
    [
        ({"documents": []}, "/nodes/0/params/documents", "invalid_params"),
        ({}, "/nodes/0/params", "invalid_params"),
        ({"documents": [{"text": "no id"}]}, "/nodes/0/params/documents/0", "invalid_params"),
        ({"documents": ["a"], "top_k": 0}, "/nodes/0/params/top_k", "invalid_params"),
        (
            {"documents": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]},
            "/nodes/0/params/documents/1/id",
            "duplicate_id",
        ),
        ({"documents": ["x", {"id": "1", "text": "y"}]}, "/nodes/0/params/documents/1/id", "duplicate_id"),
    ],
)
def test_bad_params(params: dict[str, object], path: str, code: str) -> None:
    problems = problems_of(Retriever, params)
    assert [(p.path, p.code) for p in problems] == [(path, code)]


@given(
    st.lists(st.text(alphabet="abc d", max_size=20), min_size=1, max_size=12),
    st.text(alphabet="abc d", max_size=10),
    st.integers(min_value=1, max_value=5),
)
def test_search_invariants(texts: list[str], query: str, top_k: int) -> None:
    index = BM25Index(texts)
    hits = index.search(query, top_k)
    assert len(hits) <= top_k
    assert all(score > 0 for _, score in hits)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    # Every returned document shares a term with the query, and no better one was left out.
    terms = set(tokenize(query))
    assert all(terms & set(tokenize(texts[n])) for n, _ in hits)
    scores = index.scores(query)
    if hits:
        assert all(s <= hits[-1][1] or n in dict(hits) for n, s in scores.items())
