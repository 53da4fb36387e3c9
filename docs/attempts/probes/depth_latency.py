"""How long the packed reader's int8 graph takes per question at a given depth and number of candidates
(untrained weights: the time does not depend on them), side by side on 200 dev questions, one at a time.
Exported and fused like the shipped graphs (qa.model_format), quantised like the reader's (qa.graph_template)."""
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from qa.embedding import _session_options
from qa.graph_template import _quantised
from qa.model_format import _export_onnx, _fused, prepare_default_model
from qa.reader import ReaderSettings, batch_arrays, encode, truncated_encoder
from qa.reader_data import load
from qa.reader_training import first_stage

import onnxruntime
import torch
from transformers import AutoTokenizer

base = prepare_default_model(progress=False)
tokenizer = AutoTokenizer.from_pretrained(str(base))
documents, items = load({"dev"})
items = items[::len(items) // 200][:200]
with tempfile.TemporaryDirectory() as folder:
    engine = first_stage(documents, Path(folder) / "index")
    found = [[c.text for c in a.citations] for a in engine.ask_many([i.question for i in items], top_k=6)]
    sessions = {}
    for layers in (6, 8, 12):
        model_dir = Path(folder) / f"e5-{layers}"
        truncated_encoder(base, layers, torch.float32).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        config = _export_onnx(model_dir, model_dir / "model.onnx")
        (model_dir / "q").mkdir()
        int8 = _quantised(_fused(model_dir / "model.onnx", config), model_dir / "q")
        onnx.save_model(int8, model_dir / "int8.onnx")
        sessions[layers] = onnxruntime.InferenceSession(str(model_dir / "int8.onnx"), _session_options(),
                                                        providers=["CPUExecutionProvider"])
    settings = ReaderSettings()
    rows = {k: [batch_arrays([encode(tokenizer, i.question, f[:k], settings)]) for i, f in zip(items, found)]
            for k in (3, 4, 6)}
    times = {}
    for _ in range(3):  # rounds, every setting in turn, so that drift touches all alike
        for layers, session in sessions.items():
            names = {i.name for i in session.get_inputs()}
            for k, arrays in rows.items():
                for ids, mask, _ in arrays:
                    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
                    start = time.perf_counter()
                    session.run(None, {n: v for n, v in feed.items() if n in names})
                    times.setdefault((layers, k), []).append(time.perf_counter() - start)
for (layers, k), t in sorted(times.items()):
    print(f"{layers:2d} layers, {k} candidates: p50 {1000 * np.median(t):.1f} ms, p95 {1000 * np.percentile(t, 95):.1f} ms")
