"""Find the sentences that answer a question: dense (FAISS) first, lexical (BM25) as a nudge.

Why not an even mix: multilingual-e5 cosines over one article sit in a narrow band
(about 0.74 to 0.90), so a BM25 score normalised to [0, 1] and added at any real weight
decides the order by itself, and English questions over a Dutch article share almost
no words with it. Here the lexical score only nudges: the shared rare words of the
question (names, numbers, terms) move a sentence up among near-equals, never past a
clearly better dense match.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from . import lexical
from .documents import Sentence, guess_language
from .index import SentenceIndex


@dataclass(frozen=True)
class SearchConfig:
    """How the scores are combined; the defaults are the ones tuned on the gold set."""

    lexical_weight: float = 0.03
    """Added to the cosine for a sentence holding all of the question's matched words."""
    neighbour_weight: float = 0.1
    """Share of the score taken from the best neighbouring sentence (same paragraph)."""
    candidates: int = 50
    """How many dense and lexical candidates are re-scored together."""
    use_dense: bool = True
    language_offsets: tuple[tuple[str, str, float], ...] = ()
    """(question language, article language, offset) subtracted from the cosine, so an article does not win
    by sharing the question's language; see :data:`BASE_MODEL_OFFSETS`. The tuned default model needs none."""


BASE_MODEL_OFFSETS = (("dutch", "dutch", 0.0223), ("dutch", "english", -0.0223),
                      ("english", "dutch", 0.0001), ("english", "english", -0.0001))
"""Language offsets of the untuned multilingual-e5-small, measured on the gold set's tune split with
:func:`language_bias`: its Dutch questions score Dutch sentences 0.045 higher, its English ones show no
bias. Fine-tuning removed the bias, and these offsets did not help the tuned model."""


@dataclass(frozen=True)
class Hit:
    """A sentence found for a question, with the scores that placed it."""

    passage: Sentence
    score: float
    dense: float
    lexical: float


class Searcher:
    """Searches one loaded index; built once, reused for every question."""

    def __init__(self, index: SentenceIndex) -> None:
        self.index = index
        self._lexical = index.lexical or lexical.build([p.text for p in index.passages])  # saved with the index, or small
        self._neighbours = self._neighbour_lists(index.passages)
        self.languages = self._article_languages(index.passages)

    @staticmethod
    def _article_languages(passages: tuple[Sentence, ...]) -> list[str]:
        """The language of each sentence's article (for :attr:`SearchConfig.language_offsets`)."""
        texts: dict[str, list[str]] = {}
        for p in passages:
            texts.setdefault(p.document, []).append(p.text)
        language = {name: guess_language(" ".join(t)) for name, t in texts.items()}
        return [language[p.document] for p in passages]

    @staticmethod
    def _neighbour_lists(passages: tuple[Sentence, ...]) -> list[list[int]]:
        """Ids of the sentences next to each one, within the same paragraph."""
        result = []
        for i, p in enumerate(passages):
            near = [j for j in (i - 1, i + 1) if 0 <= j < len(passages)
                    and passages[j].document == p.document and passages[j].paragraph == p.paragraph]
            result.append(near)
        return result

    def pool(self, question: str, vector: np.ndarray, *, wanted: int, allowed: np.ndarray | None = None) -> Pool:
        """Dense and lexical candidates from this index, only among the ``allowed`` sentence ids if given."""
        wanted = min(len(self.index.passages) if allowed is None else len(allowed), wanted)
        bm25 = self._lexical_scores(question)
        if allowed is not None:
            mask = np.zeros(len(bm25), dtype=bool)
            mask[allowed] = True
            bm25 = np.where(mask, bm25, 0).astype(np.float32)
        if wanted == 0:
            return Pool(self, [], np.zeros(0, dtype=np.float32), bm25)
        _, dense_ids = self.index.vectors.search(vector[None, :], wanted, params=_restricted(self.index.vectors, allowed))
        lexical_ids = (np.argpartition(-bm25, wanted - 1)[:wanted] if bm25.any()
                       else np.array([], dtype=int))
        if allowed is not None:
            lexical_ids = lexical_ids[mask[lexical_ids]]
        ids = [int(i) for i in dict.fromkeys([*dense_ids[0].tolist(), *lexical_ids.tolist()]) if i >= 0]
        return Pool(self, ids, self._dense_scores(ids, vector), bm25)

    def _dense_scores(self, ids: list[int], vector: np.ndarray) -> np.ndarray:
        if not ids:
            return np.zeros(0, dtype=np.float32)
        return self.index.vectors.reconstruct_batch(np.asarray(ids, dtype=np.int64)) @ vector

    def _lexical_scores(self, question: str) -> np.ndarray:
        """BM25 of every sentence, unscaled (all zeros when no word is shared); :func:`rank` scales it."""
        return lexical.scores(self._lexical, question, len(self.index.passages))


@dataclass(frozen=True)
class Pool:
    """The candidates one index offers for a question: sentence ids, their cosines, BM25 of every sentence."""

    searcher: Searcher
    ids: list[int]
    dense: np.ndarray
    lexical: np.ndarray


def _restricted(index, allowed: np.ndarray | None):
    """FAISS search parameters that only let the ``allowed`` ids through (None: no restriction)."""
    if allowed is None:
        return None
    selector = faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64))
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=index.hnsw.efSearch)
    return faiss.SearchParameters(sel=selector)


def rank(pools: list[Pool], config: SearchConfig, top_k: int, *, question: str) -> list[Hit]:
    """Score the candidates of every pool on one scale and keep the ``top_k`` best, best first
    (``question``'s language picks the language offsets).

    Cosines are comparable across indexes as they are; BM25 is scaled by the best score over
    all pools, so a sentence holding all matched words gets the full lexical nudge.
    """
    cfg = config
    offsets = {(q, a): value for q, a, value in cfg.language_offsets}
    language = guess_language(question) if offsets else ""  # once per question, and only when it matters
    top = max((float(p.lexical.max()) for p in pools if p.lexical.size), default=0.0)
    scaled = [p.lexical / top if top > 0 else np.zeros_like(p.lexical) for p in pools]
    hits = []
    for s, (pool, bm25) in enumerate(zip(pools, scaled)):
        for i, cosine in zip(pool.ids, pool.dense):
            offset = offsets.get((language, pool.searcher.languages[i]), 0.0)
            score = (cosine - offset if cfg.use_dense else 0.0) + cfg.lexical_weight * bm25[i]
            hits.append((score, (s, i), cosine))
    if cfg.neighbour_weight:
        by_id = {key: score for score, key, _ in hits}

        def with_neighbours(key: tuple[int, int], score: float) -> float:
            near = [by_id[(key[0], j)] for j in pools[key[0]].searcher._neighbours[key[1]] if (key[0], j) in by_id]
            return (1 - cfg.neighbour_weight) * score + cfg.neighbour_weight * max(near) if near else score

        hits = [(with_neighbours(key, score), key, c) for score, key, c in hits]
    hits.sort(key=lambda h: (-h[0], h[1]))
    return [Hit(pools[s].searcher.index.passages[i], float(score), float(c), float(scaled[s][i]))
            for score, (s, i), c in hits[:top_k]]


def language_bias(question_vectors: np.ndarray, question_languages: list[str], sentence_vectors: np.ndarray,
                  sentence_languages: list[str]) -> tuple[tuple[str, str, float], ...]:
    """Offsets for :attr:`SearchConfig.language_offsets`: per (question, sentence) language, the mean
    cosine, less the mean over sentence languages, so a question's own language earns nothing by itself."""
    q_lang, s_lang = np.asarray(question_languages), np.asarray(sentence_languages)
    cosines = question_vectors @ sentence_vectors.T
    result = []
    for q in sorted(set(question_languages)):
        means = {a: float(cosines[np.ix_(q_lang == q, s_lang == a)].mean()) for a in sorted(set(sentence_languages))}
        centre = float(np.mean(list(means.values())))
        result += [(q, a, round(m - centre, 4)) for a, m in means.items()]
    return tuple(result)
