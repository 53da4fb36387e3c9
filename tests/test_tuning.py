"""Fine-tuning: a short real run on a few pairs writes a complete model folder once, atomically."""

from __future__ import annotations

import json

import numpy as np

from qa.embedding import Embedder, prepare_default_model
from qa.tuning import TRAINING_PAIRS, TuningSettings, prepare_tuned_model, read_pairs, tuned_folder


def test_training_pairs_are_question_answer_and_hard_negative():
    pairs = read_pairs()
    assert len(pairs) >= 100
    assert all(p.query and p.positive and p.negative and p.positive != p.negative for p in pairs)


def test_a_short_tuning_run_writes_a_loadable_folder_once(tmp_path):
    base = tmp_path / "base"
    base.symlink_to(prepare_default_model(progress=False))  # the tuned folder is written next to it, in tmp
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in [
        {"query": "Where is the factory?", "positive": "The plant is in the Alabuga zone in Tatarstan.",
         "negative": "The White House released images."},
        {"query": "Waar staat de fabriek?", "positive": "De fabriek staat in Alabuga, Tatarstan.",
         "negative": "Het Witte Huis gaf beelden vrij."}]), encoding="utf-8")
    settings = TuningSettings(epochs=1, batch_size=2, learning_rate=1e-4)
    folder = prepare_tuned_model(base, progress=False, settings=settings, pairs_file=pairs_file)
    assert folder == tuned_folder(base, settings, pairs_file) and folder.parent == tmp_path
    assert json.loads((folder / "TUNED_FROM").read_text())["settings"]["epochs"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging-")]  # staging cleaned up
    before = folder.stat().st_mtime_ns
    assert prepare_tuned_model(base, progress=False, settings=settings, pairs_file=pairs_file) == folder
    assert folder.stat().st_mtime_ns == before  # built once
    # PyTorch: an ONNX conversion of this throw-away folder would stay in the model cache
    tuned = Embedder.load(str(folder), backend="torch").queries(["Where is the factory?"])
    original = Embedder.load(str(base), backend="torch").queries(["Where is the factory?"])
    assert tuned.shape == original.shape and not np.allclose(tuned, original, atol=1e-4)
    assert TRAINING_PAIRS.is_file()
