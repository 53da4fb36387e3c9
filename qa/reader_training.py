"""Train the reader: ``python -m qa train-reader`` (tens of minutes), writing ``qa/weights/reader/``.

Data: the team's articles and questions of the "train" split (:mod:`qa.reader_data`). For every
question the shipped first stage, with all training articles loaded together, offers its top
candidates (an answerable question's own sentence is put in if the first stage missed it), so the
reader learns on the near misses it will meet. The loss is listwise: one softmax over "none of
them answers" and the candidates, so choosing one of k and refusing are the same decision; the
answer span's start and end are learned on the answering candidate.

The refusal threshold and the weights of the first stage's cosine in the order and in the score are
chosen on the "dev" stories, which the shipped reader never trains on; the held-out "test" stories are
only measured (``python -m qa eval``). Seeded, with a fixed number of threads, so one command gives the
same adapter on the same machine.
"""

from __future__ import annotations

import random
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from .adapters import adapter_digest, data_digest, read_manifest, write_adapter, write_manifest
from .embedding import ADAPTER as EMBEDDER_ADAPTER
from .embedding import BASE_MODEL, DEFAULT_BACKEND
from .reader import (ADAPTER, HEADS, Features, Reader, ReaderSettings, Serving, answers_first, batch_arrays, encode,
                     truncated_encoder)
from .reader_data import SPARE, Item, data_files, dev_digest, load, story_of

COMMAND = "python -m qa train-reader"
CANDIDATE_COUNTS = (2, 3)
"""How many first-stage candidates the reader may read per question. At most what fits the 30 ms it may
add to ``ask()`` on a 2-core machine (read together in one row: about 13 ms for one, 20 for two, 28 for
three, 31 for four; ``python -m qa bench`` prints each count's cost), and at least two, so that
a second article's answer can be shown beside the first, and the reader has a say in the order
(docs/reader.md, attempts 6 and 19)."""


@dataclass(frozen=True)
class TrainingSettings:
    reader: ReaderSettings = field(default_factory=ReaderSettings)
    candidates: int = 4
    """First-stage candidates per question in training (one more than the most served), shown in an order
    drawn with the seed, so that the reader judges them by what they say rather than where they stand."""
    off_topic: float = 0.3
    """Share of the questions also put, as questions to refuse, to the other stories' articles only: the
    on-topic unanswerable questions teach near misses, never a question the articles are not about."""
    candidate_model: Literal["untuned", "shipped"] = "shipped"
    """Which first stage offers them: "shipped" (the pairs served, so training sees serving's near misses;
    attempts 16 and 17 in docs/reader.md) or "untuned" (harder near misses, the same whatever embedder
    adapter ships; attempt 11)."""
    erased: float = 0.0
    """Share of the answerable questions also put with their answer cut out of the answering sentence (the
    rest of the sentence and the other candidates kept), as questions to refuse: a near miss that differs from
    the answer by the asked detail alone, so that the topic of a sentence is not taken for its answer."""
    epochs: int = 3
    questions_per_step: int = 4
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup: float = 0.06
    rank: int = 32
    alpha: float = 64.0
    span_weight: float = 0.5
    seed: int = 0
    threads: int = 2
    """Torch threads while training: the same command gives the same adapter on the same machine."""
    targets: str = (r"encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
                    r"intermediate\.dense|output\.dense)")


@dataclass(frozen=True)
class Example:
    """One question with its candidates: the answering one's position (or None) and its answer's tokens."""

    item: Item
    candidates: list[tuple[str, int]]  # (article, 0-based sentence)
    features: Features
    label: int | None
    span: tuple[int, int] | None  # token indices within the answering candidate's tokens


def first_stage(documents, folder: Path, model: str | None = None, backend: str = DEFAULT_BACKEND, *,
                embedder=None):
    """A first stage (no reader; the shipped model by default, or ``embedder`` already loaded) over
    ``documents`` loaded together, its index in ``folder``."""
    import qa

    from .index import open_index

    embedder = embedder or qa.Embedder.load(model, backend=backend, progress=False)
    return qa.Engine(documents, open_index(documents, embedder, folder), embedder)


def candidates_for(engine, items: list[Item], count: int) -> list[list[tuple[str, int]]]:
    """The first stage's top ``count`` sentences (article, 0-based number) for each question, leaving out the
    other language's article of the question's own story (:meth:`Item.unlabelled`: as "does not answer" it
    taught the reader to refuse answers)."""
    answers = engine.ask_many([i.question for i in items], top_k=count + SPARE)
    return [[(c.document, c.sentence - 1) for c in a.citations if not i.unlabelled(c.document)][:count]
            for i, a in zip(items, answers)]


def off_topic_questions(engine, items: list[Item], settings: TrainingSettings) -> tuple[list[Item], list[list]]:
    """``settings.off_topic`` of the questions (drawn with the seed), each with the first stage's candidates
    from the other stories' articles only, and no answer."""
    rng = random.Random(settings.seed)
    chosen = [replace(i, answer=None, kind="off-topic", twin=None) for i in items if rng.random() < settings.off_topic]
    stories = {d.name: story_of(d.name) for d in engine.documents}
    strays, found = [], []
    for story in sorted({i.story for i in chosen}):
        group = [i for i in chosen if i.story == story]
        others = [name for name, s in stories.items() if s != story]
        answers = engine.ask_many([i.question for i in group], top_k=settings.candidates, articles=others)
        strays += group
        found += [[(c.document, c.sentence - 1) for c in a.citations] for a in answers]
    return strays, found


def make_examples(items: list[Item], documents, candidates: list[list[tuple[str, int]]], tokenizer,
                  settings: ReaderSettings, *, include_gold: bool, seed: int = 0) -> list[Example]:
    """Token features per question, its candidates shuffled with ``seed``; ``include_gold`` puts a missed
    answering sentence in place of the last candidate."""
    rng = random.Random(seed)
    by_name = {d.name: d for d in documents}
    examples = []
    for item, found in zip(items, candidates):
        gold = (item.article, item.sentence)
        found = list(found)
        if include_gold and item.answer is not None and gold not in found:
            found = [*found[:-1], gold]
        if not found:  # every candidate was the other language's article: nothing to learn from
            continue
        rng.shuffle(found)
        features = encode(tokenizer, item.question, [by_name[a].sentences[i].text for a, i in found], settings)
        label = found.index(gold) if item.answer is not None and gold in found else None
        span = None
        if label is not None:
            text = by_name[item.article].sentences[item.sentence].text
            start = text.index(item.answer)
            span = token_span(features.offsets[label], start, start + len(item.answer))
        examples.append(Example(item, found, features, label, span))
    return examples


def erase(text: str, answer: str) -> str | None:
    """``text`` without ``answer`` (spaces before punctuation and doubled spaces mended), or None where the
    answer is not in it or is most of it (nothing would be left to read)."""
    if answer not in text or len(answer) > 0.6 * len(text):
        return None
    cut = re.sub(r"\s+([,.;:!?)])", r"\1", text.replace(answer, " "))
    return re.sub(r"\s{2,}", " ", re.sub(r"\(\s*\)", "", cut)).strip(" ,;:")


def erased_examples(examples: list[Example], documents, tokenizer, settings: TrainingSettings) -> list[Example]:
    """For ``settings.erased`` of the answerable examples (drawn with the seed), the same question and
    candidates with the answer cut out of the answering one, and no answer. Left out where another
    candidate also holds the answer's words (it would still answer)."""
    rng = random.Random(settings.seed + 1)
    by_name = {d.name: d for d in documents}
    made = []
    for example in examples:
        if example.label is None or rng.random() >= settings.erased:
            continue
        item = example.item
        texts = [by_name[a].sentences[i].text for a, i in example.candidates]
        cut = erase(texts[example.label], item.answer)
        if cut is None or any(item.answer in t for k, t in enumerate(texts) if k != example.label):
            continue
        texts[example.label] = cut
        features = encode(tokenizer, item.question, texts, settings.reader)
        made.append(Example(replace(item, answer=None, kind="erased", twin=None), example.candidates, features, None, None))
    return made


def token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """A candidate's tokens (given by their character ``offsets``) covering characters [start, end) (None if
    cut off by the length limit)."""
    inside = [t for t, (s, e) in enumerate(offsets) if e > start and s < end]
    return (inside[0], inside[-1]) if inside else None


class ReaderModel:
    """The trainable reader: truncated e5 with LoRA, a score head, a span head and a "none" score."""

    def __init__(self, base_folder: Path, settings: TrainingSettings) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        encoder = truncated_encoder(base_folder, settings.reader.layers, torch.float32)
        self.encoder = get_peft_model(encoder, LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                                                          lora_dropout=0.0, target_modules=settings.targets))
        hidden = encoder.config.hidden_size
        self.score = torch.nn.Linear(hidden, 1)
        self.span = torch.nn.Linear(hidden, 2)
        self.null = torch.nn.Parameter(torch.zeros(1))
        torch.nn.init.normal_(self.score.weight, std=0.02)
        torch.nn.init.zeros_(self.score.bias)

    def parameters(self):
        return [p for p in self.encoder.parameters() if p.requires_grad] + [
            *self.score.parameters(), *self.span.parameters(), self.null]

    def train(self, mode: bool = True) -> None:
        self.encoder.train(mode)

    def forward(self, features: list[Features]):
        """Per question, each candidate's score against "none", and start and end logits per token."""
        import torch

        ids, mask, candidates = (torch.from_numpy(a) for a in batch_arrays(features))
        states = self.encoder(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        pooled = candidates @ states / candidates.sum(2, keepdim=True).clamp(min=1)
        spans = self.span(states)
        return self.score(pooled)[..., 0] - self.null, spans[..., 0], spans[..., 1]

    def heads(self) -> dict[str, np.ndarray]:
        return {"score.weight": self.score.weight.detach().numpy(), "score.bias": self.score.bias.detach().numpy(),
                "span.weight": self.span.weight.detach().numpy(), "span.bias": self.span.bias.detach().numpy(),
                "null": self.null.detach().numpy()}


def loss_of(model: ReaderModel, examples: list[Example], span_weight: float):
    """Listwise loss over [none, candidates...] per question, plus the span loss on the answering candidate."""
    import torch

    scores, starts, ends = model.forward([e.features for e in examples])
    cross_entropy = torch.nn.functional.cross_entropy
    total = 0.0
    for row, e in enumerate(examples):
        logits = torch.cat([torch.zeros(1), scores[row, :len(e.candidates)]])
        total = total + cross_entropy(logits[None], torch.tensor([0 if e.label is None else e.label + 1]))
        if e.span is not None:
            first, n = e.features.firsts[e.label], len(e.features.offsets[e.label])
            total = total + span_weight * (cross_entropy(starts[row, first:first + n][None], torch.tensor([e.span[0]]))
                                           + cross_entropy(ends[row, first:first + n][None], torch.tensor([e.span[1]])))
    return total / len(examples)


def train(examples: list[Example], base_folder: Path, settings: TrainingSettings, *, progress: bool = True) -> ReaderModel:
    import torch
    from tqdm.auto import tqdm

    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    try:
        model = ReaderModel(base_folder, settings)
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
        steps = settings.epochs * -(-len(examples) // settings.questions_per_step)
        warmup = max(1, int(settings.warmup * steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
        rng = random.Random(settings.seed)
        order = list(examples)
        model.train()
        bar = tqdm(total=steps, desc="Training the reader", unit="step", disable=not progress)
        for _ in range(settings.epochs):
            rng.shuffle(order)
            for i in range(0, len(order), settings.questions_per_step):
                loss = loss_of(model, order[i:i + settings.questions_per_step], settings.span_weight)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(loss=f"{float(loss):.3f}")
        bar.close()
        model.train(False)
        return model
    finally:
        torch.set_num_threads(threads)


def train_reader(*, settings: TrainingSettings = TrainingSettings(), adapter: Path = ADAPTER,
                 progress: bool = True) -> Path:
    """Train on the "train" stories, choose how to serve it on "dev", write adapter, heads and manifest."""
    from safetensors.numpy import save_file
    from transformers import AutoTokenizer

    from .model_format import prepare_default_model

    base = prepare_default_model(progress=progress)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    documents, items = load({"train"})
    with tempfile.TemporaryDirectory() as folder:
        offering = first_stage(documents, Path(folder), BASE_MODEL if settings.candidate_model == "untuned" else None)
        found = candidates_for(offering, items, settings.candidates)
        strays, stray_found = off_topic_questions(offering, items, settings)
    examples = make_examples(items + strays, documents, found + stray_found, tokenizer, settings.reader,
                             include_gold=True, seed=settings.seed)
    erased = erased_examples(examples, documents, tokenizer, settings)
    examples += erased
    model = train(examples, base, settings, progress=progress)
    manifest = {"command": COMMAND, "data_sha256": data_digest(data_files("train")), "settings": asdict(settings),
                "trained_on": {"articles": len(documents), "questions": len(items),
                               "off_topic_questions": len(strays), **({"erased_questions": len(erased)} if erased else {})}}
    write_adapter(model.encoder, adapter, manifest)
    save_file(model.heads(), str(adapter / HEADS))
    return choose_and_record(adapter, progress=progress)


def choose_and_record(adapter: Path = ADAPTER, *, progress: bool = True) -> Path:
    """Choose how to serve the adapter on "dev" (:func:`choose_serving`) and record it in its manifest;
    alone (``python -m qa train-reader --serving-only``) it re-chooses without retraining."""
    serving, figures = choose_serving(Reader.load(adapter=adapter, serving=Serving(), progress=progress))
    write_manifest(adapter, {**read_manifest(adapter), "serving": asdict(serving), "dev": figures,
                             "dev_sha256": dev_digest(), "first_stage": adapter_digest(EMBEDDER_ADAPTER)})
    return adapter


SEED_CHECKS = (
    ("Where is the factory?", 6), ("Where will the drones be built?", 6),
    ("In which Russian region is the planned drone plant located?", 6),
    ("When could the plant be running at full capacity?", 7), ("Which port do the drones pass through?", 9),
    ("What fighter jet does Iran want to buy?", 13), ("Who is the White House spokesman?", 3),
    ("Which newspaper reported the deal in November?", 10), ("Waar staat de fabriek?", 6),
    ("In welke Russische republiek ligt de Alabuga-zone?", 6), ("Welk gevechtsvliegtuig wil Iran kopen?", 13),
    ("Welke straaljager koopt Iran van Rusland?", 13), ("Wie heeft sancties opgelegd?", 21),
    ("What is the capital of France?", None), ("How many goals did Ajax score last Sunday?", None),
    ("Wie wint de verkiezingen in Nederland?", None),
)
"""Questions on the seed article, the one the product ships with, that a serving setting must get right:
the sentence (1-based) its first citation must be, or None where it must refuse. The tests ask them too
(tests/test_answers.py). Questions of the gold set's held-out third are left out, so that its figures are
not chosen on."""

FUSIONS = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)
"""Weights of the first stage's cosine tried in the order and in the refusal score. At 1000 the reader's
log-odds (about -10 to +10) overturn only cosine gaps under about 0.02; in the order, None (the first
stage's own order, :attr:`Serving.order_fusion`) is tried too: for a first stage that orders better than
the reader, which then only refuses and finds the answer's words."""


class _Keeping(Reader):
    """The reader as it is, keeping what it judged (each question's candidates, log-odds and spans), so that
    every weight of the cosine can be scored from one pass."""

    def __init__(self, reader: Reader, candidates: int) -> None:
        super().__init__(reader.session, reader.tokenizer, reader.heads, reader.settings,
                         Serving(candidates, -np.inf), reader.version)
        self.kept: list[tuple[list, np.ndarray, list]] = []

    def judge(self, question, hits):
        log_odds, spans = super().judge(question, hits)
        self.kept.append((list(hits), log_odds, spans))
        return log_odds, spans


def _passes(serving: Serving, threshold: float, kept: list) -> bool:
    """Whether ``serving`` at ``threshold`` answers each of :data:`SEED_CHECKS` as it must (``kept``: their
    readings, in order)."""
    for (_, sentence), readings in zip(SEED_CHECKS, kept, strict=True):
        ordered, answering = answers_first(serving.readings(*readings), threshold)
        if (answering > 0) != (sentence is not None) or (answering and ordered[0].hit.passage.number != sentence):
            return False
    return True


def choose_serving(reader: Reader, *, most_false_refusals: float = 0.05) -> tuple[Serving, dict]:
    """On the "dev" stories: how many candidates to read (of :data:`CANDIDATE_COUNTS`) and the cosine's
    weights in the order and in the score (of :data:`FUSIONS`), with the refusal threshold that wrongly
    refuses at most ``most_false_refusals`` of the answerable questions. Kept: the best R@1 plus share of
    unanswerable questions refused, among the settings whose R@1 is at least the first stage's and that
    answer :data:`SEED_CHECKS` right. Each setting is scored the way :class:`qa.Engine` serves it
    (:meth:`Serving.readings`, :func:`answers_first`). Where ``twins/`` labels a story, what its other
    language's version answers is right too, and a question only that version answers is answerable
    (:meth:`Item.is_answer`): all of dev is loaded together."""
    import qa

    from .documents import read_document

    documents, items = load({"dev"})
    questions = [i.question for i in items]
    answerable = np.array([i.answerable for i in items])
    passes, checks = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        engine = first_stage(documents, Path(folder) / "dev")
        seed = first_stage([read_document(qa.ROOT / "seeds" / qa.SEED_ARTICLE)], Path(folder) / "seed",
                           embedder=engine.embedder)
        alone = engine.ask_many(questions, top_k=1)
        for candidates in CANDIDATE_COUNTS:  # one pass per count: the candidates read together judge each other
            passes[candidates] = _Keeping(reader, candidates)
            engine.with_config(reader=passes[candidates]).ask_many(questions, top_k=1)
            checks[candidates] = _Keeping(reader, candidates)
            seed.with_config(reader=checks[candidates]).ask_many([q for q, _ in SEED_CHECKS], top_k=1)
    floor = np.mean([i.is_answer(a.citations[0].document, a.citations[0].sentence - 1)
                     for a, i in zip(alone, items, strict=True) if i.answerable])
    best: tuple[float, Serving, dict] | None = None
    for candidates, keeping in passes.items():
        for order_fusion in (*FUSIONS, None):
            for answer_fusion in FUSIONS:
                serving = Serving(candidates, -np.inf, order_fusion, answer_fusion)
                readings = [serving.readings(*kept) for kept in keeping.kept]
                scores = np.array([max(r.score for r in rs) for rs in readings])
                threshold = float(np.quantile(scores[answerable], most_false_refusals, method="lower"))
                tops = [answers_first(rs, threshold)[0][0].hit.passage for rs in readings]
                right = np.array([i.is_answer(t.document, t.number - 1) for t, i in zip(tops, items, strict=True)])
                figures = {"candidates": candidates, "order_fusion": order_fusion, "answer_fusion": answer_fusion,
                           "threshold": round(threshold, 4), "recall_at_1": round(float(right[answerable].mean()), 4),
                           "refused_unanswerable": round(float((scores[~answerable] < threshold).mean()), 4),
                           "refused_answerable": round(float((scores[answerable] < threshold).mean()), 4)}
                value = figures["recall_at_1"] + figures["refused_unanswerable"]
                if (figures["recall_at_1"] >= floor and (best is None or value > best[0] + 1e-9)  # never worse order
                        and _passes(serving, threshold, checks[candidates].kept)):
                    best = (value, Serving(candidates, threshold, order_fusion, answer_fusion), figures)
    if best is None:
        raise ValueError("no serving setting orders the dev questions as well as the first stage alone and "
                         "answers the seed article's checks (SEED_CHECKS)")
    return best[1], best[2]
