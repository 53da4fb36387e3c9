"""Build, save, load and check the sentence index on disk (FAISS vectors + the sentences).

Files in the index folder:

- ``vectors.faiss``   FAISS index, inner product over unit vectors (cosine)
- ``passages.json``   the sentences, in FAISS id order, with their source positions
- ``lexical/``        the BM25 index of the same sentences (memory-mapped when loaded; indexes
                      written before it existed load without it and build BM25 in memory)
- ``manifest.json``   the model, the dimension, each source's checksum and each file's checksum

Each file is written to a temporary name and renamed into place, the manifest last. The
manifest holds the other files' checksums, so an interrupted or corrupted write is seen
at the next load and the index is rebuilt instead of being trusted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import bm25s
import faiss
import numpy as np

from . import lexical
from .documents import Document, Sentence
from .embedding import Embedder

FORMAT_VERSION = 1
EXACT_LIMIT = 50_000
"""Up to this many sentences the index is exact (flat, about 7 ms a search here); above it, HNSW."""

_FILES = ("vectors.faiss", "passages.json")


class IndexProblem(RuntimeError):
    """The index on disk cannot be used as it is; the message says why."""


@dataclass(frozen=True)
class SourceInfo:
    """What the manifest records of each article the index was built from."""

    name: str
    sha256: str
    language: str
    sentences: int


@dataclass(frozen=True)
class Manifest:
    """Which model and which sources made an index, and checksums of its files."""

    format: int
    model: str
    dimension: int
    kind: str
    sources: tuple[SourceInfo, ...]
    files: dict[str, str]
    built: str

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        return cls(
            format=int(data["format"]), model=str(data["model"]), dimension=int(data["dimension"]),
            kind=str(data["kind"]), sources=tuple(SourceInfo(**s) for s in data["sources"]),
            files=dict(data["files"]), built=str(data["built"]),
        )


@dataclass
class SentenceIndex:
    """The sentences and their vectors, ready to search."""

    manifest: Manifest
    vectors: faiss.Index
    passages: tuple[Sentence, ...]
    lexical: bm25s.BM25 | None = None

    def matches(self, documents: list[Document], model: str) -> bool:
        """True when this index was built from exactly these documents with this model."""
        wanted = [(d.name, d.sha256) for d in documents]
        have = [(s.name, s.sha256) for s in self.manifest.sources]
        same_split = [p.text for p in self.passages] == [s.text for d in documents for s in d.sentences]
        return self.manifest.model == model and wanted == have and same_split


def _sha256_file(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` and rename the result over ``path`` (fsynced first)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_faiss_index(vectors: np.ndarray) -> tuple[faiss.Index, str]:
    """Exact search for small collections, HNSW graph search for large ones."""
    dimension = vectors.shape[1]
    if len(vectors) <= EXACT_LIMIT:
        index, kind = faiss.IndexFlatIP(dimension), "flat"
    else:
        index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 256  # recall@10 against exact >= 0.95 at 1M (python -m qa bench)
        kind = "hnsw"
    index.add(vectors)
    return index, kind


def _reusable_vectors(folder: Path, model: str) -> dict[tuple[str, ...], np.ndarray]:
    """Vectors of an existing valid index by sentence texts of each source, so only new text is embedded."""
    try:
        old = load_index(folder)
    except IndexProblem:
        return {}
    if old.manifest.model != model:
        return {}
    reused, offset = {}, 0
    for source in old.manifest.sources:
        texts = tuple(p.text for p in old.passages[offset : offset + source.sentences])
        reused[texts] = old.vectors.reconstruct_n(offset, source.sentences)
        offset += source.sentences
    return reused


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """One build at a time per index folder; a second one waits for the first to finish."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_index(documents: list[Document], embedder: Embedder, folder: Path, *, progress: bool = False) -> SentenceIndex:
    """Embed the sentences of ``documents`` (reusing unchanged ones) and save the index in ``folder``."""
    with build_lock(Path(folder)):
        return _build_unlocked(documents, embedder, Path(folder), progress)


def _build_unlocked(documents: list[Document], embedder: Embedder, folder: Path, progress: bool) -> SentenceIndex:
    if not any(d.sentences for d in documents):
        raise IndexProblem("no sentences to index: every article was empty or unreadable")
    reused = _reusable_vectors(folder, embedder.identity)
    parts = []
    for doc in documents:
        vectors = reused.get(tuple(s.text for s in doc.sentences))
        if vectors is None:
            vectors = embedder.passages([s.text for s in doc.sentences], progress=progress)
        parts.append(vectors)
    vectors = np.ascontiguousarray(np.vstack(parts), dtype=np.float32)
    index, kind = make_faiss_index(vectors)
    passages = tuple(s for d in documents for s in d.sentences)
    bm25 = lexical.build([p.text for p in passages])
    _write_atomic(folder / "vectors.faiss", lambda p: faiss.write_index(index, str(p)))
    _write_atomic(folder / "passages.json", lambda p: p.write_text(
        json.dumps([asdict(s) for s in passages], ensure_ascii=False), encoding="utf-8"))
    _write_lexical(folder, bm25)
    manifest = Manifest(
        format=FORMAT_VERSION, model=embedder.identity, dimension=embedder.dimension, kind=kind,
        sources=tuple(SourceInfo(d.name, d.sha256, d.language, len(d.sentences)) for d in documents),
        files={name: _sha256_file(folder / name) for name in (*_FILES, *lexical.FILES)},
        built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    _write_atomic(folder / "manifest.json", lambda p: p.write_text(
        json.dumps(asdict(manifest), ensure_ascii=False, indent=1), encoding="utf-8"))
    return SentenceIndex(manifest, index, passages, bm25)


def _write_lexical(folder: Path, bm25: bm25s.BM25) -> None:
    """Save the BM25 index into ``folder/lexical/``, each file fsynced and renamed into place (the
    manifest, written after, holds their checksums)."""
    (folder / lexical.FOLDER).mkdir(exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".lexical.", dir=folder))
    try:
        lexical.save(bm25, staging)
        for name in lexical.FILES:
            staged = staging / Path(name).name
            with open(staged, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(staged, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_index(folder: Path) -> SentenceIndex:
    """Load and verify an index; raises IndexProblem saying what is missing or corrupt."""
    folder = Path(folder)
    try:
        manifest = Manifest.from_json(json.loads((folder / "manifest.json").read_text(encoding="utf-8")))
    except FileNotFoundError as exc:
        raise IndexProblem(f"no index in {folder} (manifest.json is missing)") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexProblem(f"{folder / 'manifest.json'} is corrupt: {exc}") from exc
    if manifest.format != FORMAT_VERSION:
        raise IndexProblem(f"the index in {folder} has format {manifest.format}, this version reads {FORMAT_VERSION}")
    saved_lexical = all(name in manifest.files for name in lexical.FILES)
    for name in (*_FILES, *(lexical.FILES if saved_lexical else ())):
        path = folder / name
        if not path.is_file():
            raise IndexProblem(f"{path} is missing")
        if _sha256_file(path) != manifest.files.get(name):
            raise IndexProblem(f"{path} does not match its checksum in the manifest (corrupt or half-written)")
    try:
        vectors = faiss.read_index(str(folder / "vectors.faiss"))
        passages = tuple(Sentence(**p) for p in json.loads((folder / "passages.json").read_text(encoding="utf-8")))
        bm25 = lexical.load(folder / lexical.FOLDER) if saved_lexical else None
    except (RuntimeError, ValueError, TypeError, KeyError, OSError) as exc:
        raise IndexProblem(f"the index in {folder} cannot be read: {exc}") from exc
    expected = sum(s.sentences for s in manifest.sources)
    lexical_size = len(passages) if bm25 is None else int(bm25.scores["num_docs"])
    if (vectors.ntotal != len(passages) or len(passages) != expected or vectors.d != manifest.dimension
            or lexical_size != len(passages)):
        raise IndexProblem(f"the index in {folder} is inconsistent: {vectors.ntotal} vectors, {len(passages)} passages, "
                           f"{lexical_size} in the lexical index")
    return SentenceIndex(manifest, vectors, passages, bm25)


def open_index(documents: list[Document], embedder: Embedder, folder: Path, *, progress: bool = False) -> SentenceIndex:
    """The index for these documents and this model: loaded when it matches, else rebuilt."""
    folder = Path(folder)
    index = _load_matching(documents, embedder.identity, folder)
    if index is None:
        with build_lock(folder):  # another process may have built it while we waited
            index = _load_matching(documents, embedder.identity, folder)
            if index is None:
                index = _build_unlocked(documents, embedder, folder, progress)
    return index


def _load_matching(documents: list[Document], model: str, folder: Path) -> SentenceIndex | None:
    try:
        index = load_index(folder)
    except IndexProblem:
        return None
    # an index written before BM25 was saved with it is rebuilt once, reusing its vectors
    return index if index.matches(documents, model) and index.lexical is not None else None


# --- The operator's added articles: one small exact index per article, kept in ``<index>/library/``.
#
# Each article has a folder named after its checksum holding ``article.json`` (its text, title and
# source, so the index folder is self-contained) and ``vectors.npy``; ``library/manifest.json`` lists
# the folders in the order they were added, with each file's checksum. A new article's folder is
# written completely before the manifest names it, and a removed one is deleted only after the
# manifest stops naming it, so a process killed half-way leaves the previous library whole; folders
# no manifest names are swept away by the next change.

LIBRARY_FOLDER = "library"
_ARTICLE_FILES = ("article.json", "vectors.npy")


@dataclass(frozen=True)
class Shard:
    """Sentences searched through one FAISS index of their own (one added article)."""

    passages: tuple[Sentence, ...]
    vectors: faiss.Index
    lexical: None = None  # an article is small: its Searcher builds BM25 in memory


@dataclass(frozen=True)
class StoredArticle:
    """An added article as read back from the index folder."""

    document: Document
    vectors: np.ndarray
    folder: str
    repaired: bool = False  # its vectors were damaged and embedded again: write them back


def shard_for(document: Document, vectors: np.ndarray) -> Shard:
    """An exact index over one article's sentence vectors."""
    index, _ = make_faiss_index(np.ascontiguousarray(vectors, dtype=np.float32))
    return Shard(document.sentences, index)


def library_dir(index_folder: Path) -> Path:
    return Path(index_folder) / LIBRARY_FOLDER


def read_library(index_folder: Path, embedder: Embedder, *, warn=print) -> list[StoredArticle]:
    """The added articles in the order they were added; damaged vectors are re-embedded from the
    stored text, a damaged article is dropped with a warning (the rest still load)."""
    from .documents import make_document

    folder = library_dir(index_folder)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        entries = list(manifest["articles"])
        model = str(manifest["model"])
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        # never answer with an empty library here: the next change would write it and sweep every folder
        warn(f"the article library in {folder} has a damaged manifest ({exc}); its articles are read from their "
             f"folders and their vectors embedded again")
        entries = [{"folder": p.name} for p in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)
                   if p.is_dir() and not p.name.startswith(".") and (p / "article.json").is_file()]
        model = ""
    stored = []
    for entry in entries:
        where = folder / str(entry.get("folder", ""))
        try:
            if "files" in entry and _sha256_file(where / "article.json") != entry["files"]["article.json"]:
                raise IndexProblem("article.json does not match its checksum")
            meta = json.loads((where / "article.json").read_text(encoding="utf-8"))
            document = make_document(meta["text"], name=meta["name"], sha256=meta["sha256"], title=meta["title"],
                                     source=meta["source"], language=meta["language"])
        except (OSError, ValueError, KeyError, TypeError, IndexProblem) as exc:
            warn(f"skipped a damaged article in {where}: {exc}")
            continue
        vectors = None
        try:
            if model == embedder.identity and _sha256_file(where / "vectors.npy") == entry["files"]["vectors.npy"]:
                vectors = np.load(where / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError, KeyError):
            vectors = None
        repaired = vectors is None or vectors.shape != (len(document.sentences), embedder.dimension)
        if repaired:
            warn(f"the vectors of {document.name} in {where} were damaged or from another model; embedded again")
            vectors = embedder.passages([s.text for s in document.sentences])
        stored.append(StoredArticle(document, vectors, where.name, repaired))
    return stored


def write_library(index_folder: Path, model: str, articles: list[StoredArticle]) -> None:
    """Make the library on disk hold exactly ``articles`` (call under :func:`build_lock`).

    New article folders are written first, then the manifest, then unlisted folders are removed.
    """
    folder = library_dir(index_folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for article in articles:
        where = folder / article.folder
        if article.repaired or not _article_complete(where):
            _write_article_folder(where, article)
        entries.append({"folder": article.folder, "name": article.document.name,
                        "files": {name: _sha256_file(where / name) for name in _ARTICLE_FILES}})
    manifest = {"format": FORMAT_VERSION, "model": model, "articles": entries}
    _write_atomic(folder / "manifest.json", lambda p: p.write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8"))
    sweep_library(index_folder, {a.folder for a in articles})


def _article_complete(where: Path) -> bool:
    return all((where / name).is_file() for name in _ARTICLE_FILES)


def _write_article_folder(where: Path, article: StoredArticle) -> None:
    """Write into a temporary folder, fsync, and rename it into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{where.name}.", dir=where.parent))
    try:
        d = article.document
        (tmp / "article.json").write_text(json.dumps(
            {"name": d.name, "title": d.title, "source": d.source, "language": d.language, "sha256": d.sha256,
             "text": d.text}, ensure_ascii=False), encoding="utf-8")
        np.save(tmp / "vectors.npy", np.ascontiguousarray(article.vectors, dtype=np.float32), allow_pickle=False)
        for name in _ARTICLE_FILES:
            with open(tmp / name, "rb") as fh:
                os.fsync(fh.fileno())
        if where.exists():
            shutil.rmtree(where)
        os.replace(tmp, where)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def sweep_library(index_folder: Path, keep: set[str]) -> None:
    """Remove article folders (and leftovers of interrupted writes) that the manifest does not name."""
    folder = library_dir(index_folder)
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir() and path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
