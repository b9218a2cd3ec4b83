"""Okapi BM25 keyword scoring over an in-memory corpus, built once and read by concurrent queries.

score(q, d) = sum over distinct query terms t of
    idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl)),
with idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5)) (never negative, as in Lucene).

>>> index = BM25Index(["the cat sat", "the dog barked", "cats and dogs"])
>>> [doc for doc, _ in index.search("dog", 2)]
[1]
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (Unicode-aware); no stemming, no stop words.

    >>> tokenize("Refund: order #A-12, twice!")
    ['refund', 'order', 'a', '12', 'twice']
    """
    return _TOKEN.findall(text.lower())


class BM25Index:
    """An inverted index of term -> [(document number, term frequency)], plus document lengths."""

    def __init__(self, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self.size = len(texts)
        postings: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
        self.lengths: list[int] = []
        for number, text in enumerate(texts):
            tokens = tokenize(text)
            self.lengths.append(len(tokens))
            for term, tf in Counter(tokens).items():
                postings[term].append((number, tf))
        self.postings: dict[str, list[tuple[int, int]]] = dict(postings)
        self.avgdl = (sum(self.lengths) / self.size) if self.size else 0.0

    def idf(self, term: str) -> float:
        df = len(self.postings.get(term, ()))
        return math.log(1.0 + (self.size - df + 0.5) / (df + 0.5))

    def scores(self, query: str) -> dict[int, float]:
        """Score of every document sharing at least one term with the query."""
        totals: defaultdict[int, float] = defaultdict(float)
        # An empty corpus or one of empty documents has avgdl 0; every length ratio is then 0.
        avgdl = self.avgdl or 1.0
        for term in dict.fromkeys(tokenize(query)):
            entries = self.postings.get(term)
            if not entries:
                continue
            idf = self.idf(term)
            for number, tf in entries:
                norm = self.k1 * (1.0 - self.b + self.b * self.lengths[number] / avgdl)
                totals[number] += idf * tf * (self.k1 + 1.0) / (tf + norm)
        return dict(totals)

    def search(self, query: str, top_k: int) -> list[tuple[int, float]]:
        """The `top_k` best (document number, score) pairs, best first; ties keep corpus order."""
        scores = self.scores(query)
        best = heapq.nsmallest(top_k, scores.items(), key=lambda item: (-item[1], item[0]))
        return [(number, score) for number, score in best if score > 0.0]
