"""The embedder's adapter: the shipped one matches its training data, and a short real run writes one
that merges into the base model once, atomically."""

from __future__ import annotations

import json

import numpy as np

from qa.adapters import MANIFEST, adapter_digest, data_digest, read_manifest
from qa.embedding import ADAPTER, Embedder, prepare_default_model
from qa.model_format import prepare_adapted_model
from qa.reader_data import dev_digest
from qa.tuning import COMMAND, TRAINING_PAIRS, TuningSettings, _gold_figures, read_pairs, training_files, tune


def test_training_pairs_are_question_answer_and_hard_negative():
    pairs = read_pairs()
    assert len(pairs) >= 100
    assert all(p.query and p.positive and p.negative and p.positive != p.negative for p in pairs)


def test_the_shipped_adapter_was_trained_on_the_committed_data():
    """Fails when qa/data/tuning.jsonl or the reader data's train stories changed after the adapter was
    trained (run `python -m qa tune`), or its dev stories after its threshold was chosen (`python -m qa
    tune --threshold-only`); commit qa/weights/embedder."""
    manifest = read_manifest(ADAPTER)
    assert manifest["data_sha256"] == data_digest(training_files()), f"retrain: {COMMAND}"
    assert manifest["dev_sha256"] == dev_digest(), f"choose again: {COMMAND} --threshold-only"
    assert manifest["command"] == COMMAND and manifest["settings"] == json.loads(json.dumps(vars(TuningSettings())))
    assert {"test/en", "test/nl", "test/all"} <= set(manifest["figures"])
    assert sum(p.stat().st_size for p in ADAPTER.iterdir()) < 10_000_000  # a few MB, never the model


def test_the_shipped_adapters_gold_figures_are_measured_at_its_threshold():
    """The manifest's held-out figures are what the shipped model gives now, at the manifest's threshold
    (they were once measured before the threshold was written, at the fallback one)."""
    manifest = read_manifest(ADAPTER)
    assert manifest["figures"] == _gold_figures(manifest["threshold"])


def test_a_short_tuning_run_writes_an_adapter_that_merges_once(tmp_path):
    base = tmp_path / "base"
    base.symlink_to(prepare_default_model(progress=False))  # the merged folder is written next to it, in tmp
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in [
        {"query": "Where is the factory?", "positive": "The plant is in the Alabuga zone in Tatarstan.",
         "negative": "The White House released images."},
        {"query": "Waar staat de fabriek?", "positive": "De fabriek staat in Alabuga, Tatarstan.",
         "negative": "Het Witte Huis gaf beelden vrij."}]), encoding="utf-8")
    adapter = tune(settings=TuningSettings(epochs=1, batch_size=2, learning_rate=1e-3), pairs_file=pairs_file,
                   adapter=tmp_path / "adapter", measure=False, news=False, progress=False)
    assert read_manifest(adapter)["settings"]["epochs"] == 1
    assert (adapter / MANIFEST).is_file() and (adapter / "adapter_model.safetensors").stat().st_size < 10_000_000
    folder = prepare_adapted_model(base, adapter, progress=False)
    assert folder.parent == tmp_path and folder.name.endswith(adapter_digest(adapter))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging-")]  # staging cleaned up
    before = folder.stat().st_mtime_ns
    assert prepare_adapted_model(base, adapter, progress=False) == folder
    assert folder.stat().st_mtime_ns == before  # merged once
    # PyTorch: an ONNX conversion of this throw-away folder would stay in the model cache
    tuned = Embedder.load(str(folder), backend="torch").queries(["Where is the factory?"])
    original = Embedder.load(str(base), backend="torch").queries(["Where is the factory?"])
    assert tuned.shape == original.shape and not np.allclose(tuned, original, atol=1e-4)
