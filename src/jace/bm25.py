"""BM25 over MeCab tokens: the lexical scorer jace mines hard negatives with, and the baseline its
rerankers are measured against (``benchmarks/reranking_baselines.py``).

Tokens are MeCab surface forms (fugashi with the unidic-lite dictionary); scoring is the maintained
``bm25s`` package. One index serves every query over the same documents (the IDF is theirs).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _tagger():
    import fugashi

    return fugashi.Tagger()


def mecab_tokens(text: str) -> list[str]:
    """MeCab surface tokens of ``text``.

    Example:
        >>> mecab_tokens("北海道には梅雨がない。")
        ['北海道', 'に', 'は', '梅雨', 'が', 'ない', '。']
    """
    return [word.surface for word in _tagger()(text)]


class BM25Index:
    """BM25 scores of queries against a fixed list of documents.

    Example:
        >>> index = BM25Index(["北海道には梅雨がない。", "沖縄は暑い。"])
        >>> int(index.scores("梅雨がないのはどこ？").argmax())
        0
    """

    def __init__(self, documents: Sequence[str]) -> None:
        import bm25s

        if not documents:
            raise ValueError("BM25Index needs at least one document.")
        self.size = len(documents)
        self._retriever = bm25s.BM25()
        self._retriever.index([mecab_tokens(text) for text in documents], show_progress=False)

    def scores(self, query: str) -> np.ndarray:
        """One BM25 score per document (all 0 for a query with no tokens)."""
        tokens = mecab_tokens(query)
        if not tokens:
            return np.zeros(self.size)
        return np.asarray(self._retriever.get_scores(tokens), dtype=float)
