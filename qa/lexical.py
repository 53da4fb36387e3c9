"""The lexical (BM25) side of search: one tokenizer for indexing and asking, and the index on disk.

Why on disk: bm25s builds its index by tokenising every sentence, which at a million sentences
takes 30 to 70 s and about 400 MB (``python -m qa bench``), at every start. Saved beside the
vectors and memory-mapped when loaded, a start maps a few files instead, and only the parts that
questions touch become resident.
"""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_DUTCH, STOPWORDS_EN_PLUS

FOLDER = "lexical"
"""Sub-folder of an index folder holding the BM25 index."""
FILES = tuple(f"{FOLDER}/{name}" for name in (
    "data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "vocab.index.json", "params.index.json"))
"""The files ``bm25s.BM25.save`` writes (the default BM25 variant needs no others), relative to the index folder."""

_TOKEN = r"(?u)\b\w+\b"
_STOPWORDS = sorted(set(STOPWORDS_DUTCH) | set(STOPWORDS_EN_PLUS))


def tokenize(texts: list[str], *, as_ids: bool = True):
    """Words of Dutch or English text, lower-cased, without the stop words of either language."""
    return bm25s.tokenize(texts, token_pattern=_TOKEN, stopwords=_STOPWORDS, show_progress=False, return_ids=as_ids)


def build(texts: list[str]) -> bm25s.BM25:
    """A BM25 index over ``texts``, in their order.

    Texts without a single word outside the stop lists (only symbols or emoji, only "the and of")
    give an empty index that matches nothing; bm25s would fail adding its empty token to it.
    """
    tokens = tokenize(texts)
    lexical = bm25s.BM25()
    with np.errstate(divide="ignore", invalid="ignore"):  # their average length is 0
        lexical.index(tokens, show_progress=False, create_empty_token=bool(tokens.vocab))
    return lexical


def save(lexical: bm25s.BM25, folder: Path) -> None:
    """Write the index's files into ``folder`` (the caller makes the write atomic)."""
    lexical.save(str(folder), show_progress=False)


def load(folder: Path) -> bm25s.BM25:
    """The index saved in ``folder``, memory-mapped rather than read."""
    return bm25s.BM25.load(str(folder), mmap=True, show_progress=False)


def scores(lexical: bm25s.BM25, question: str, size: int) -> np.ndarray:
    """BM25 of each of the ``size`` sentences for ``question``, unscaled; all zeros when no word is shared."""
    known = [w for w in tokenize([question], as_ids=False)[0] if w in lexical.vocab_dict]
    if not known:
        return np.zeros(size, dtype=np.float32)
    return np.asarray(lexical.get_scores(known), dtype=np.float32)
