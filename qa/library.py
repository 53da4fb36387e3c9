"""The set of articles answered from: the operator's (base + added, on disk) and a web session's (in memory).

Questions are answered from an immutable :class:`Snapshot`. Adding or removing an article
builds a new snapshot next to the old one and swaps one reference, so a question that is
being answered meanwhile sees either the old set or the new one, never half an article.
Each added article has its own small exact FAISS index (a "part"), so adding embeds only
its sentences and removing drops its part; neither touches the rest.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from .documents import Document, DocumentError, renamed
from .embedding import Embedder
from .index import (StoredArticle, build_lock, library_dir, read_library, shard_for, write_library)
from .search import Pool, Searcher

SESSION_MAX_ARTICLES = 10
"""Most articles one web session may add."""
SESSION_MAX_BYTES = 5_000_000
"""Most text (UTF-8 bytes, summed over its articles) one web session may hold."""
EMBED_STEP = 64
"""Sentences embedded between two progress reports."""

Progress = Callable[[float, str], None]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@dataclass(frozen=True)
class ArticleInfo:
    """One article as listed to a reader."""

    name: str
    title: str
    language: str
    sentences: int
    source: str
    shared: bool  # True: the operator's (everyone sees it); False: this session's only


@dataclass(frozen=True)
class Part:
    """Documents searched through one index, and where each one's sentence ids lie in it."""

    searcher: Searcher
    documents: tuple[Document, ...]

    def ranges(self) -> dict[str, tuple[int, int]]:
        spans, start = {}, 0
        for d in self.documents:
            spans[d.name] = (start, start + len(d.sentences))
            start += len(d.sentences)
        return spans


def make_part(document: Document, vectors: np.ndarray) -> Part:
    return Part(Searcher(shard_for(document, vectors)), (document,))


@dataclass(frozen=True)
class Snapshot:
    """An immutable set of parts: what one question is answered from."""

    parts: tuple[Part, ...]
    shared: int  # the first ``shared`` parts are the operator's

    @property
    def documents(self) -> list[Document]:
        return [d for p in self.parts for d in p.documents]

    def document(self, name: str) -> Document:
        for d in self.documents:
            if d.name == name:
                return d
        raise DocumentError(f"no article named {name!r}")

    def with_sha(self, sha256: str) -> Document | None:
        return next((d for d in self.documents if d.sha256 == sha256), None)

    def articles(self) -> list[ArticleInfo]:
        return [ArticleInfo(d.name, d.title, d.language, len(d.sentences), d.source, n < self.shared)
                for n, p in enumerate(self.parts) for d in p.documents]

    def citations_info(self) -> dict[str, tuple[str, str]]:
        return {d.name: (d.title, d.source) for d in self.documents}

    def pools(self, question: str, vector: np.ndarray, *, wanted: int, articles: Iterable[str] | None) -> list[Pool]:
        """Candidates from every part, restricted to the named articles when given."""
        if articles is None:
            return [p.searcher.pool(question, vector, wanted=wanted) for p in self.parts]
        chosen = set(articles)
        unknown = sorted(chosen - {d.name for d in self.documents})
        if unknown:
            raise DocumentError(f"no article named {', '.join(map(repr, unknown))}")
        if not chosen:
            raise DocumentError("choose at least one article to search")
        pools = []
        for part in self.parts:
            spans = [span for name, span in part.ranges().items() if name in chosen]
            if not spans:
                continue
            whole = len(spans) == len(part.documents)
            allowed = None if whole else np.concatenate([np.arange(a, b) for a, b in spans])
            pools.append(part.searcher.pool(question, vector, wanted=wanted, allowed=allowed))
        return pools

    def unique_name(self, name: str) -> str:
        """``name``, or ``stem-2.ext`` etc. when an article of that name is already there."""
        taken = {d.name for d in self.documents}
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            stem, suffix = name, ""
        candidate, n = name, 1
        while candidate in taken:
            n += 1
            candidate = f"{stem}-{n}.{suffix}" if suffix else f"{stem}-{n}"
        return candidate


def embed(document: Document, embedder: Embedder, progress: Progress | None = None) -> np.ndarray:
    """The vectors of an article's sentences, reporting progress every EMBED_STEP sentences."""
    texts = [s.text for s in document.sentences]
    if not texts:
        raise DocumentError(f"{document.name}: no sentences to index")
    parts = []
    for start in range(0, len(texts), EMBED_STEP):
        if progress:
            progress(start / len(texts), f"embedding sentence {start + 1} of {len(texts)}")
        parts.append(embedder.passages(texts[start : start + EMBED_STEP]))
    if progress:
        progress(1.0, f"embedded {len(texts)} sentences")
    return np.vstack(parts)


class Library:
    """The operator's articles: the base ones given at start plus the added ones kept in the index folder.

    ``folder`` None keeps added articles in memory only (for tests and throw-away engines).
    """

    def __init__(self, base: Part, embedder: Embedder, folder: Path | None) -> None:
        self.embedder = embedder
        self.folder = folder
        self.base = base
        self._lock = threading.Lock()
        self._stored: list[StoredArticle] = []
        self._parts: dict[str, Part] = {}
        self.snapshot = Snapshot((base,), 1)
        if folder is not None:  # reading needs no lock: the manifest is replaced atomically
            self._use(read_library(folder, embedder, warn=_warn))
            if any(a.repaired for a in self._stored):
                with self._folder_lock():
                    self._sync()
                    write_library(folder, embedder.identity, self._stored)
                    self._use([replace(a, repaired=False) for a in self._stored])

    def _use(self, stored: list[StoredArticle]) -> None:
        """Swap in a new snapshot holding the base articles and ``stored``."""
        parts = {a.folder: self._parts.get(a.folder) or make_part(a.document, a.vectors) for a in stored}
        self._stored, self._parts = list(stored), parts
        self.snapshot = Snapshot((self.base, *parts.values()), 1 + len(parts))

    def _sync(self) -> None:
        """Pick up articles another process added or removed (call under the folder lock)."""
        if self.folder is None:
            return
        on_disk = read_library(self.folder, self.embedder, warn=_warn)
        if [a.folder for a in on_disk] != [a.folder for a in self._stored]:
            self._use(on_disk)

    def add(self, document: Document, *, progress: Progress | None = None) -> Document:
        """Index one article for everyone and keep it; the same content again returns the existing article."""
        existing = self.snapshot.with_sha(document.sha256)
        if existing:
            return existing
        vectors = embed(document, self.embedder, progress)
        with self._lock, self._folder_lock():
            self._sync()
            existing = self.snapshot.with_sha(document.sha256)
            if existing:
                return existing
            document = renamed(document, self.snapshot.unique_name(document.name))
            article = StoredArticle(document, vectors, document.sha256[:24])
            if self.folder is not None:
                write_library(self.folder, self.embedder.identity, [*self._stored, article])
            self._use([*self._stored, article])
        return document

    def remove(self, name: str) -> Document:
        """Take an added article out (for everyone, on disk too); base articles cannot be removed here."""
        with self._lock, self._folder_lock():
            self._sync()
            if any(d.name == name for d in self.base.documents):
                raise DocumentError(f"{name!r} is one of the base articles (seeds/ or the files given at start); "
                                    f"remove its file there instead")
            gone = next((a for a in self._stored if a.document.name == name), None)
            if gone is None:
                raise DocumentError(f"no added article named {name!r}")
            kept = [a for a in self._stored if a is not gone]
            if self.folder is not None:
                write_library(self.folder, self.embedder.identity, kept)
            self._use(kept)
        return gone.document

    def _folder_lock(self):
        from contextlib import nullcontext

        return build_lock(library_dir(self.folder)) if self.folder is not None else nullcontext()


class Session:
    """One reader's own articles, in memory only, searched together with the operator's.

    Bounded by SESSION_MAX_ARTICLES and SESSION_MAX_BYTES; ``close()`` frees them. Nothing a
    session adds is ever written to disk or seen by another session.
    """

    def __init__(self, engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._parts: tuple[Part, ...] = ()
        self._closed = False

    @property
    def snapshot(self) -> Snapshot:
        """The operator's current articles plus this session's."""
        shared = self._engine.library.snapshot
        return Snapshot(shared.parts + self._parts, shared.shared)

    def add_file(self, path: str | Path, *, title: str | None = None, name: str | None = None,
                 progress: Progress | None = None) -> Document:
        """An uploaded file; its type is read from its content. ``name``: the name the reader gave it."""
        from .ingest import from_file

        return self._add(from_file(path, title=title, name=name), progress)

    def add_text(self, text: str, *, title: str | None = None, progress: Progress | None = None) -> Document:
        """Pasted text, never interpreted as a path or URL."""
        from .ingest import from_text

        return self._add(from_text(text, title=title), progress)

    def add_url(self, url: str, *, title: str | None = None, progress: Progress | None = None) -> Document:
        """A web page, fetched with trafilatura."""
        from .ingest import from_url

        return self._add(from_url(url, title=title), progress)

    def _add(self, document: Document, progress: Progress | None) -> Document:
        self._check_open()
        existing = self.snapshot.with_sha(document.sha256)
        if existing:
            return existing
        size = len(document.text.encode("utf-8"))
        self._check_room(size)
        vectors = embed(document, self._engine.embedder, progress)
        with self._lock:
            self._check_open()
            existing = self.snapshot.with_sha(document.sha256)
            if existing:
                return existing
            self._check_room(size)
            document = renamed(document, self.snapshot.unique_name(document.name))
            self._parts = (*self._parts, make_part(document, vectors))
        return document

    def _check_open(self) -> None:
        if self._closed:
            raise DocumentError("this session is closed")

    def _check_room(self, size: int) -> None:
        mine = [d for p in self._parts for d in p.documents]
        if len(mine) >= SESSION_MAX_ARTICLES:
            raise DocumentError(f"this session already holds {len(mine)} articles, the most allowed "
                                f"({SESSION_MAX_ARTICLES}); remove one first")
        used = sum(len(d.text.encode("utf-8")) for d in mine)
        if used + size > SESSION_MAX_BYTES:
            raise DocumentError(f"this article ({size:,} bytes) would take the session over its "
                                f"{SESSION_MAX_BYTES:,}-byte limit ({used:,} bytes used); remove an article first")

    def articles(self) -> list[ArticleInfo]:
        """The operator's articles (shared=True), then this session's (shared=False)."""
        return self.snapshot.articles()

    def document(self, name: str) -> Document:
        return self.snapshot.document(name)

    def remove(self, name: str) -> Document:
        """Remove one of this session's articles (the operator's cannot be removed from a session)."""
        with self._lock:
            gone = next((d for p in self._parts for d in p.documents if d.name == name), None)
            if gone is None:
                if any(d.name == name for d in self._engine.library.snapshot.documents):
                    raise DocumentError(f"{name!r} is a shared article; only your own articles can be removed here")
                raise DocumentError(f"no article named {name!r} in this session")
            self._parts = tuple(p for p in self._parts if gone not in p.documents)
        return gone

    def ask(self, question: str, *, history: Sequence[str] = (), articles: Sequence[str] | None = None,
            top_k: int | None = None):
        """Answer from the operator's and this session's articles (or only the named ones)."""
        self._check_open()
        return self._engine.ask_many([question], histories=[history], top_k=top_k, articles=articles,
                                     snapshot=self.snapshot)[0]

    def close(self) -> None:
        """Free this session's articles; the session cannot be used afterwards."""
        with self._lock:
            self._parts = ()
            self._closed = True
