"""Fine-tune the prepared multilingual-e5-small on question -> answering-sentence pairs.

Why: the small model ranks a long, general sentence of the right article ("hub") above the
one that answers, and an English question about a Dutch article scores the English article
on the same story higher. A few minutes of contrastive training on questions as readers
ask them (English and Dutch, over English and Dutch articles) fixes much of both; measured
in the README (Retrieval quality), including on articles whose questions were left out of training.

The pairs (``qa/data/tuning.jsonl``) come from the gold set's *tune* split only: each is a
question, its answering sentence, and the sentence of the same article the untuned model
wrongly liked best (a hard negative). Training is seeded and single-threaded, so the same
command gives the same weights on the same machine; the result is a prepared folder in the
cache next to the untuned one, written to a temporary folder first and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from .model_format import write_folder

TRAINING_PAIRS = Path(__file__).resolve().parent / "data" / "tuning.jsonl"
_MARKER = "TUNED_FROM"


@dataclass(frozen=True)
class TuningSettings:
    """Chosen on the tune split; changing any of them gives a new cache folder."""

    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    scale: float = 20.0  # inverse temperature of the in-batch softmax (MultipleNegativesRankingLoss's default)
    seed: int = 0


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negative: str


def read_pairs(path: Path = TRAINING_PAIRS) -> list[Pair]:
    """The training triples, one JSON object a line."""
    return [Pair(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def tuned_folder(base_folder: Path, settings: TuningSettings = TuningSettings(),
                 pairs_file: Path = TRAINING_PAIRS) -> Path:
    """Where the tuned model of ``base_folder`` lives: named by a digest of its data and settings."""
    digest = hashlib.sha256(pairs_file.read_bytes() + json.dumps(asdict(settings)).encode()).hexdigest()[:12]
    return base_folder.parent / f"{base_folder.name}-tuned-{digest}"


def prepare_tuned_model(base_folder: Path, *, progress: bool = True, settings: TuningSettings = TuningSettings(),
                        pairs_file: Path = TRAINING_PAIRS, force: bool = False) -> Path:
    """Return the tuned model's folder, training it from ``base_folder`` on first use (minutes on a CPU;
    ``force``: again, for a damaged folder)."""
    target = tuned_folder(base_folder, settings, pairs_file)
    if (target / _MARKER).is_file() and not force:
        return target
    model = train(base_folder, read_pairs(pairs_file), settings, progress=progress)

    def write(folder: Path) -> None:
        model.half().save(str(folder))
        (folder / _MARKER).write_text(json.dumps(
            {"base": str(base_folder), "pairs_sha256": hashlib.sha256(pairs_file.read_bytes()).hexdigest(),
             "settings": asdict(settings)}, indent=1), encoding="utf-8")

    write_folder(target, write)
    return target


def train(base_folder: Path, pairs: list[Pair], settings: TuningSettings, *, progress: bool = True):
    """Contrastive training: each question against every positive and hard negative in its batch.

    The 250k-row word-embedding table stays frozen (fast, and words absent from the
    pairs keep their meaning). Two questions in a batch that share an answering sentence
    are not pushed away from each other's positive.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(settings.seed)
    try:
        model = SentenceTransformer(str(base_folder), device="cpu", model_kwargs={"dtype": torch.float32})
        model[0].auto_model.embeddings.word_embeddings.weight.requires_grad_(False)
        prompts = model.prompts
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=settings.learning_rate, weight_decay=settings.weight_decay)
        rng = random.Random(settings.seed)
        order = list(pairs)

        def encode(texts: list[str], prompt: str):
            return model(model.preprocess([prompts[prompt] + t for t in texts]))["sentence_embedding"]

        model.train()
        epochs = tqdm(range(settings.epochs), desc="Tuning the embedding model", unit="epoch", disable=not progress)
        for _ in epochs:
            rng.shuffle(order)
            for batch in (order[i:i + settings.batch_size] for i in range(0, len(order), settings.batch_size)):
                queries = encode([p.query for p in batch], "query")
                documents = encode([p.positive for p in batch] + [p.negative for p in batch], "passage")
                logits = queries @ documents.T * settings.scale
                same_answer = torch.tensor([[j != i and j < len(batch) and batch[j].positive == batch[i].positive
                                             for j in range(2 * len(batch))] for i in range(len(batch))])
                loss = torch.nn.functional.cross_entropy(logits.masked_fill(same_answer, -1e4),
                                                         torch.arange(len(batch)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        model.eval()
        return model
    finally:
        torch.set_num_threads(threads)
