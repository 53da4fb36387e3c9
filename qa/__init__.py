"""Cited answers from news articles: ``qa.load()`` once, then ``.ask(question)``.

Articles can be added for everyone (``engine.add``, kept in the index folder) or for one web
reader only (``engine.session()``, in memory); see the README for the whole API.

>>> import qa
>>> engine = qa.load()                        # doctest: +SKIP
>>> a = engine.ask("Where is the factory?")   # doctest: +SKIP
>>> a.found, a.citations[0].sentence          # doctest: +SKIP
(True, 6)
"""

from __future__ import annotations

import hashlib
import os
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .adapters import read_manifest
from .answer import Answer, Citation, compose, empty_answer, truncation_notice
from .conversation import context_for
from .documents import Document, DocumentError, read_documents
from .embedding import ADAPTER as EMBEDDER_ADAPTER
from .embedding import BACKENDS, BASE_MODEL, DEFAULT_BACKEND, DEFAULT_MODEL, Embedder, ModelError
from .index import IndexProblem, SentenceIndex, open_index
from .ingest import from_any, from_text
from .library import (SESSION_MAX_ARTICLES, SESSION_MAX_BYTES, ArticleInfo, Library, Part, Progress, Session,
                      Snapshot)
from .reader import Reader, Reading, answers_first
from .search import BASE_MODEL_OFFSETS, Hit, SearchConfig, Searcher, rank

__all__ = ["load", "Engine", "Session", "Document", "ArticleInfo", "Answer", "Citation", "SearchConfig", "Reader",
           "BACKENDS", "DEFAULT_BACKEND", "DEFAULT_MODEL", "BASE_MODEL", "DocumentError", "IndexProblem", "ModelError", "SESSION_MAX_ARTICLES",
           "SESSION_MAX_BYTES",
           "OTHER_MODEL_THRESHOLD",
           "MAX_QUESTION_CHARS", "ROOT", "SEED_ARTICLE"]

ROOT = Path(__file__).resolve().parent.parent
"""The project folder: ``seeds/`` and ``index/`` live here."""
SEED_ARTICLE = "000_e2981c027b46f4f0.txt"
"""The article the product ships with (in ``seeds/``), which the tests, the benchmark and the reader's
serving checks ask about."""
MAX_QUESTION_CHARS = 1000
"""Longer questions are cut to this many characters, and the answer says so."""
UNTUNED_THRESHOLD = 0.795
"""Without the reader, the untuned model's best cosine below which the articles are taken not to answer:
the highest value that wrongly refuses at most 5% of the gold set's tune-split answerable questions,
each article loaded alone."""


def default_threshold(model: str) -> float:
    """The first stage's refusal threshold (used without the reader) for a bundled model: the tuned
    default's was chosen the same way on the reader data's dev stories (never trained on) and is kept in
    its adapter's manifest (``python -m qa tune``); any other model gets :data:`OTHER_MODEL_THRESHOLD`."""
    if model == DEFAULT_MODEL:
        return float(read_manifest(EMBEDDER_ADAPTER).get("threshold", OTHER_MODEL_THRESHOLD))
    return UNTUNED_THRESHOLD if model == BASE_MODEL else OTHER_MODEL_THRESHOLD


MODEL_CONFIG = {BASE_MODEL: SearchConfig(language_offsets=BASE_MODEL_OFFSETS)}
"""Search settings per bundled model where they differ from ``SearchConfig()``."""
OTHER_MODEL_THRESHOLD = 0.5
"""For any other model the scale of cosines differs: an uncalibrated default; pass ``threshold=``."""
FOLLOW_UP_WEIGHT = 0.5
"""How much the previous question pulls a follow-up question's vector (see Engine.ask)."""


def clean_question(question: str) -> str:
    """Drop control and invisible formatting characters, and collapse white space."""
    kept = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in question if unicodedata.category(ch) not in ("Cf", "Cs", "Co", "Cn")
    )
    return " ".join(kept.split())


@dataclass(frozen=True)
class _Prepared:
    """A question made ready for search, or the answer it gets without one."""

    text: str
    notice: str = ""
    answer: Answer | None = None


class Engine:
    """Answers questions from the operator's articles; load it once with :func:`load`.

    ``documents`` and ``index`` are the base articles; articles added later (``add``) live in
    ``library`` and, given ``folder``, persist there. With a ``reader`` the first stage's candidates are
    read and it decides the answer, whether the articles answer at all and (unless its serving keeps the
    first stage's) the order; without one the first stage's order stands and its best cosine against
    ``threshold`` decides.
    """

    def __init__(self, documents: list[Document], index: SentenceIndex, embedder: Embedder, *,
                 skipped: Sequence[DocumentError] = (), top_k: int = 3, threshold: float | None = None,
                 config: SearchConfig | None = None, folder: Path | None = None,
                 library: Library | None = None, reader: Reader | None = None) -> None:
        self.base_documents = documents
        self.reader = reader
        self.skipped = tuple(skipped)
        self.index = index
        self.embedder = embedder
        self.top_k = top_k
        self.threshold = threshold if threshold is not None else default_threshold(embedder.name)
        self.config = config or MODEL_CONFIG.get(embedder.name, SearchConfig())
        # another Engine's library (with_config) already holds a searcher of the same base index
        self.library = library or Library(Part(Searcher(index), tuple(documents)), embedder, folder)
        self.searcher = self.library.base.searcher

    @property
    def documents(self) -> list[Document]:
        """Every operator article: the base ones, then the added ones."""
        return self.library.snapshot.documents

    def with_config(self, config: SearchConfig | None = None, *, threshold: float | None = None,
                    reader: Reader | None | bool = True) -> Engine:
        """The same articles, index and models, searched another way (for evaluation); ``reader``: True
        keeps this engine's, False drops it, or another one."""
        return Engine(self.base_documents, self.index, self.embedder, skipped=self.skipped, top_k=self.top_k,
                      threshold=self.threshold if threshold is None else threshold, config=config or self.config,
                      library=self.library,
                      reader=self.reader if reader is True else (reader or None))

    def add(self, source: str | Path, *, title: str | None = None, progress: Progress | None = None) -> Document:
        """Add an article for everyone, kept in the index folder: a path, an http(s) URL, or text
        with a line break in it (use :meth:`add_text` for text that may be one line)."""
        return self.library.add(from_any(source, title=title), progress=progress)

    def add_text(self, text: str, *, title: str | None = None, progress: Progress | None = None) -> Document:
        """Add pasted text as an article for everyone (never taken for a path or URL)."""
        return self.library.add(from_text(text, title=title), progress=progress)

    def add_document(self, document: Document, *, progress: Progress | None = None) -> Document:
        """Add an article already read (e.g. by ``qa.ingest.from_bytes`` or ``from_url``) for everyone:
        for callers that choose how it is read, such as the JSON API (uploads, public URLs only)."""
        return self.library.add(document, progress=progress)

    def remove(self, name: str) -> Document:
        """Remove an added article (DocumentError when unknown or a base article)."""
        return self.library.remove(name)

    def articles(self) -> list[ArticleInfo]:
        """The operator's articles, base first, in the order they were added."""
        return self.library.snapshot.articles()

    def document(self, name: str) -> Document:
        """One article by name (DocumentError when unknown)."""
        return self.library.snapshot.document(name)

    def session(self) -> Session:
        """A reader's own in-memory set of articles on top of the operator's (see :class:`Session`)."""
        return Session(self)

    def ask(self, question: str, *, history: Sequence[str] = (), top_k: int | None = None,
            articles: Sequence[str] | None = None) -> Answer:
        """Answer one question, citing the articles' sentences.

        ``history`` holds the conversation's earlier questions, oldest first. A follow-up
        ("When will it be ready?") is searched with its vector pulled towards the question
        it leans on; a question that stands on its own is searched as it is. ``articles``
        names the articles to search (None: all).
        """
        return self.ask_many([question], histories=[history], top_k=top_k, articles=articles)[0]

    def ask_many(self, questions: Sequence[str], *, histories: Sequence[Sequence[str]] | None = None,
                 top_k: int | None = None, articles: Sequence[str] | None = None,
                 snapshot: Snapshot | None = None) -> list[Answer]:
        """Answer several questions, embedding them in one batch (faster than one by one)."""
        snapshot = snapshot or self.library.snapshot  # one snapshot for the whole call
        histories = histories or [()] * len(questions)
        if len(histories) != len(questions):
            raise ValueError("give one history per question (or none at all)")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be 1 or more, not {top_k}")
        prepared = [self._prepare(q) for q in questions]
        pending = [(i, p, self._context(p.text, h)) for i, (p, h) in enumerate(zip(prepared, histories))
                   if p.answer is None]
        texts = [p.text for _, p, _ in pending] + [c for _, _, c in pending if c]
        vectors = self.embedder.queries(texts) if texts else None
        context_vectors = iter(vectors[len(pending):] if texts else [])
        answers = [p.answer for p in prepared]
        info = snapshot.citations_info()
        top_k = self.top_k if top_k is None else top_k
        wanted = max(top_k, self.reader.serving.candidates if self.reader else 0)
        for row, (i, p, context) in enumerate(pending):
            hits = self._search(snapshot, p.text, vectors[row], next(context_vectors) if context else None,
                                wanted, articles)
            readings, chosen = self._read(p.text, hits, top_k)
            answers[i] = compose(p.text, readings, answering=chosen, notice=p.notice, articles=info)
        return answers

    def _read(self, question: str, hits: list[Hit], top_k: int) -> tuple[list[Reading], list[int]]:
        """The candidates to cite, in order (those that answer first), and the positions of those that answer."""
        if self.reader is None:
            found = bool(hits) and max(h.dense for h in hits) >= self.threshold
            return [Reading(h, None, (0, 0)) for h in hits[:top_k]], [0] if found else []
        readings = self.reader.read(question, hits)
        readings += [Reading(h, None, (0, 0)) for h in hits[len(readings):]]
        readings, answering = answers_first(readings, self.reader.serving.threshold)
        return readings[:max(top_k, answering)], list(range(answering))  # an answer is always cited

    def _search(self, snapshot: Snapshot, question: str, vector: np.ndarray, context: np.ndarray | None,
                top_k: int, articles: Sequence[str] | None):
        if context is not None:
            vector = vector + FOLLOW_UP_WEIGHT * context
            vector = vector / np.linalg.norm(vector)
        pools = snapshot.pools(question, vector, wanted=max(self.config.candidates, top_k), articles=articles)
        return rank(pools, self.config, top_k, question=question)

    @staticmethod
    def _context(question: str, history: Sequence[str] | str) -> str:
        history = [history] if isinstance(history, str) else history
        earlier = [clean_question(h)[:MAX_QUESTION_CHARS] for h in history if isinstance(h, str)]
        return context_for(question, earlier)

    @staticmethod
    def _prepare(question: str) -> _Prepared:
        if not isinstance(question, str):
            raise TypeError(f"a question must be a str, not {type(question).__name__}")
        text = clean_question(question)
        if not text:
            return _Prepared(text, answer=empty_answer(question))
        if len(text) > MAX_QUESTION_CHARS:
            return _Prepared(text[:MAX_QUESTION_CHARS], notice=truncation_notice(text, MAX_QUESTION_CHARS))
        return _Prepared(text)

    def surroundings(self, citation: Citation, *, session: Session | None = None) -> tuple[str, str]:
        """The sentences just before and after a cited one, within its paragraph ("" where none)."""
        document = (session or self).document(citation.document)
        near = {s.number: s.text for s in document.sentences
                if s.paragraph == citation.paragraph and abs(s.number - citation.sentence) == 1}
        return near.get(citation.sentence - 1, ""), near.get(citation.sentence + 1, "")

    def describe(self) -> str:
        """One line naming the articles answered from."""
        documents = self.documents
        names = ", ".join(d.name for d in documents)
        return f"{sum(len(d.sentences) for d in documents)} sentences from {len(documents)} article(s): {names}"


def default_index_dir(sources: Sequence[str | Path] | None) -> Path:
    """``index/`` for the bundled articles; ``index/sources-<hash>/`` for any other set of paths,
    so that asking about another article never throws away the bundled article's index."""
    if not sources:
        return ROOT / "index"
    key = "\n".join(sorted(str(Path(s).resolve()) for s in sources))
    return ROOT / "index" / f"sources-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load(sources: Sequence[str | Path] | None = None, *, index_dir: str | Path | None = None,
         model: str | None = None, top_k: int = 3, threshold: float | None = None,
         config: SearchConfig | None = None, progress: bool = True, backend: str = DEFAULT_BACKEND,
         reader: bool = True) -> Engine:
    """Read the articles, prepare the models, and open (or build) the index.

    By default the articles are the ``.txt`` files in ``seeds/`` and the index lives in
    ``index/`` (other articles get a folder of their own inside it, see
    :func:`default_index_dir`). Unreadable articles are reported on stderr and skipped.
    ``backend`` runs the embedding model with "onnx" (ONNX Runtime) or "torch" (PyTorch); same vectors.
    ``reader=False`` answers from the first stage alone (see :class:`Engine`).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    documents, skipped = read_documents(list(sources) if sources else [ROOT / "seeds"])
    for error in skipped:
        print(f"skipped: {error}", file=sys.stderr)
    if not documents:
        raise DocumentError("no readable article to answer from" + "".join(f"\n  {e}" for e in skipped))
    embedder = Embedder.load(model, backend=backend, progress=progress)
    folder = Path(index_dir) if index_dir else default_index_dir(sources)
    index = open_index(documents, embedder, folder, progress=progress)
    return Engine(documents, index, embedder, skipped=skipped, top_k=top_k, threshold=threshold, config=config,
                  folder=folder, reader=Reader.load(progress=progress) if reader else None)
