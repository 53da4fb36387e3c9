"""Second stage: a trained cross-encoder reads the question with the candidate sentences, all in one row,
scores whether each answers, and finds the answer's words in it.

Why: one vector per sentence cannot tell the sentence that names the answer from its neighbour that
shares more of the question's words, nor see that a sentence is about the right thing but lacks the
asked detail. The reader sees question and sentences together: the same multilingual-e5-small
(:attr:`ReaderSettings.layers` of its layers, all 12 as shipped), with a LoRA adapter trained by
:mod:`qa.reader_training` on the team's own articles (shipped in ``qa/weights/reader``), merged on first
use into the shipped ONNX graph of those layers as the embedder's is (:mod:`qa.graph_template`). Its
small heads (a score, a start and an end per token, and the score of "no candidate answers") are
matrices applied in numpy.

Input: the question with all the candidates read for it, in one row, so that each is judged against the
others: ``<s> query: QUESTION </s> « CANDIDATE 1 » « CANDIDATE 2 » … </s>``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .adapters import WEIGHTS, adapter_digest, read_manifest
from .graph_template import template_onnx_file
from .model_format import ModelError, prepare_default_model
from .search import Hit

ADAPTER = WEIGHTS / "reader"
HEADS = "heads.safetensors"
OPEN, CLOSE = "«", "»"
"""Marks around each candidate sentence (single pieces of e5's vocabulary)."""


@dataclass(frozen=True)
class ReaderSettings:
    """The reader's shape; training records them in the manifest and serving reads them back."""

    layers: int = 12
    """Layers of e5-small kept (of 12): all of them read better than the first 6 on dev and held out
    (attempt 17 in docs/reader.md), at about twice the time per question, within the budget."""
    question_tokens: int = 40
    sentence_tokens: int = 80
    answer_tokens: int = 24
    """Longest answer span, in tokens."""
    int8: bool = True
    """Served with its matrix products in int8 (ONNX Runtime's dynamic quantisation, per channel; trained
    in float32): about half the time of float32, the same dev figures (docs/reader.md)."""


@dataclass(frozen=True)
class Reading:
    """What the reader made of one candidate."""

    hit: Hit
    score: float | None
    """Log-odds that this sentence answers, against "none of them does", plus :attr:`Serving.answer_fusion`
    times the cosine: what is compared with :attr:`Serving.threshold`. None for a hit the reader did not read."""
    answer: tuple[int, int]
    """Character span of the answer in ``hit.passage.text``."""
    order_score: float | None = None
    """What orders the candidates read: the log-odds plus :attr:`Serving.order_fusion` times the cosine (or,
    where that is None, minus the first stage's rank)."""


@dataclass(frozen=True)
class Features:
    """One question with its candidates as one row of token ids: where each candidate's tokens lie in it, and
    the characters of each of those tokens in its sentence."""

    ids: list[int]
    firsts: list[int]  # index in ids of each candidate's first token
    offsets: list[list[tuple[int, int]]]  # per candidate, the character span of each of its tokens


def encode(tokenizer, question: str, sentences: Sequence[str], settings: ReaderSettings) -> Features:
    """Token ids for a question and its candidates, read together (training uses the same function, so both
    see the same input)."""
    q = tokenizer("query: " + question, add_special_tokens=False)["input_ids"][:settings.question_tokens]
    ids = [tokenizer.bos_token_id, *q, tokenizer.eos_token_id]
    opening, closing = (tokenizer.convert_tokens_to_ids("▁" + mark) for mark in (OPEN, CLOSE))
    firsts, offsets = [], []
    for sentence in sentences:
        c = tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=True)
        ids.append(opening)
        firsts.append(len(ids))
        ids += c["input_ids"][:settings.sentence_tokens]
        ids.append(closing)
        offsets.append([(s + (sentence[s:e][:1] == " "), e)  # Metaspace pieces carry their space
                        for s, e in c["offset_mapping"][:settings.sentence_tokens]])
    return Features([*ids, tokenizer.eos_token_id], firsts, offsets)


def batch_arrays(features: Sequence[Features]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded ids, attention mask, and per row and candidate the mask of that candidate's tokens."""
    width = max(len(f.ids) for f in features)
    ids = np.ones((len(features), width), dtype=np.int64)  # 1 is e5's padding id
    mask = np.zeros_like(ids)
    candidates = np.zeros((len(features), max(len(f.firsts) for f in features), width), dtype=np.float32)
    for row, f in enumerate(features):
        ids[row, :len(f.ids)] = f.ids
        mask[row, :len(f.ids)] = 1
        for k, (first, offsets) in enumerate(zip(f.firsts, f.offsets)):
            candidates[row, k, first:first + len(offsets)] = 1
    return ids, mask, candidates


def best_span(start: np.ndarray, end: np.ndarray, longest: int) -> tuple[int, int]:
    """Token indices (first, last) maximising start + end logits with first <= last < first + longest."""
    n = len(start)
    pair = start[:, None] + end[None, :]
    i, j = np.indices((n, n))
    pair = np.where((j >= i) & (j < i + longest), pair, -np.inf)
    first, last = np.unravel_index(int(np.argmax(pair)), pair.shape)
    return int(first), int(last)


@dataclass(frozen=True)
class Serving:
    """How the reader is used; chosen on the "dev" stories and recorded in the manifest."""

    candidates: int = 2
    """First-stage candidates read per question."""
    threshold: float = 0.0
    """Score (:attr:`Reading.score`) below which a candidate is taken not to answer."""
    order_fusion: float | None = 0.0
    """Weight of the first stage's cosine added to the reader's log-odds to order the candidates; None keeps
    the first stage's order (the reader then refuses and finds the answer's words only)."""
    answer_fusion: float = 0.0
    """Weight of the cosine in the score compared with the threshold: chosen apart from the order's, since
    on dev the best order and the best refusal wanted different weights."""

    def readings(self, hits: Sequence[Hit], log_odds: np.ndarray, spans: Sequence[tuple[int, int]]) -> list[Reading]:
        """The reader's judgement of ``hits`` (:meth:`Reader.judge`) as readings, in this serving's order."""
        cosines = np.array([h.dense for h in hits])
        scores = log_odds + self.answer_fusion * cosines
        order = -np.arange(len(hits)) if self.order_fusion is None else log_odds + self.order_fusion * cosines
        readings = [Reading(h, float(s), span, float(o)) for h, s, span, o in zip(hits, scores, spans, order)]
        return sorted(readings, key=lambda r: -r.order_score)


class Reader:
    """The trained reader, run by ONNX Runtime; load once with :meth:`load`."""

    def __init__(self, session, tokenizer, heads: dict[str, np.ndarray], settings: ReaderSettings,
                 serving: Serving, version: str = "") -> None:
        self.session = session
        self.tokenizer = tokenizer
        self.heads = heads
        self.settings = settings
        self.serving = serving
        self.version = version

    def with_serving(self, serving: Serving) -> Reader:
        """The same model used another way (for choosing the settings, and for evaluation)."""
        return Reader(self.session, self.tokenizer, self.heads, self.settings, serving, self.version)

    @classmethod
    def load(cls, *, adapter: Path = ADAPTER, serving: Serving | None = None, progress: bool = True) -> Reader:
        """Fill the shipped graph template of the reader's layers of e5-small with the adapter merged in (once,
        seconds, :mod:`qa.graph_template`), and open it, served as its manifest says (or as ``serving`` says:
        a reader just trained has no serving settings yet)."""
        import onnxruntime
        from safetensors.numpy import load_file
        from transformers import AutoTokenizer

        from .embedding import _session_options

        manifest = read_manifest(adapter)
        try:
            settings = ReaderSettings(**manifest["settings"]["reader"])
            serving = serving or Serving(**manifest["serving"])
        except (KeyError, TypeError) as exc:
            raise ModelError(f"{adapter / 'manifest.json'} does not describe this reader ({exc!r}): restore it "
                             "with git checkout, or choose its serving again with "
                             "`python -m qa train-reader --serving-only`") from exc
        base = prepare_default_model(progress=progress)

        def open_session(force: bool):
            path = template_onnx_file(base, adapter, settings.layers, int8=settings.int8, force=force)
            return onnxruntime.InferenceSession(str(path), _session_options(), providers=["CPUExecutionProvider"])

        try:
            try:
                session = open_session(False)
            except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... kinds
                print(f"The reader's ONNX file is damaged ({str(exc).strip()}); making it again.", file=sys.stderr)
                session = open_session(True)
            heads = load_file(str(adapter / HEADS))
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime and safetensors raise their own kinds
            raise ModelError(f"the reader cannot be opened ({exc}); restore qa/weights/reader with git checkout") from exc
        return cls(session, AutoTokenizer.from_pretrained(str(base)), heads, settings, serving,
                   f"{base.name}-reader-{adapter_digest(adapter)}")

    def read(self, question: str, hits: Sequence[Hit]) -> list[Reading]:
        """The first :attr:`Serving.candidates` hits read with the question, in the order."""
        hits = hits[:self.serving.candidates]
        return self.serving.readings(hits, *self.judge(question, hits)) if hits else []

    def judge(self, question: str, hits: Sequence[Hit]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Each hit's log-odds that it answers (against "none of them does") and the character span of its
        answer, in the hits' order. The hits are read together, so a hit's figures depend on the others
        read with it: judge the hits that are served together."""
        features = encode(self.tokenizer, question, [h.passage.text for h in hits], self.settings)
        ids, mask, candidates = batch_arrays([features])
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        states = self.session.run(None, {i.name: feed[i.name] for i in self.session.get_inputs()})[0]
        log_odds, starts, ends = apply_heads(self.heads, states, candidates)
        spans = []
        for first, offsets in zip(features.firsts, features.offsets):
            if not offsets:
                spans.append((0, 0))
                continue
            n = len(offsets)
            start, end = best_span(starts[0, first:first + n], ends[0, first:first + n], self.settings.answer_tokens)
            spans.append((offsets[start][0], offsets[end][1]))
        return log_odds[0].astype(np.float64), spans


def answers_first(readings: Sequence[Reading], threshold: float, *, most: int = 3) -> tuple[list[Reading], int]:
    """The readings with those that answer moved to the front, in their order, and how many answer: the
    first of each article scoring at least ``threshold``, at most ``most`` (several articles answering is
    how a reader sees whether sources agree). So the first citation is the answer the reply gives."""
    chosen: dict[str, int] = {}
    for i, r in enumerate(readings):
        if (len(chosen) < most and r.score is not None and r.score >= threshold
                and r.hit.passage.document not in chosen):
            chosen[r.hit.passage.document] = i
    front = sorted(chosen.values())
    return [readings[i] for i in front] + [r for i, r in enumerate(readings) if i not in front], len(front)


def apply_heads(heads: dict[str, np.ndarray], states: np.ndarray, candidates: np.ndarray):
    """Each candidate's score (against "none answers"), and start and end logits per token, from the encoder's
    token states (rows, tokens, hidden) and the candidates' token masks (rows, candidates, tokens)."""
    pooled = candidates @ states / np.maximum(candidates.sum(2, keepdims=True), 1)
    scores = pooled @ heads["score.weight"][0] + heads["score.bias"][0] - heads["null"][0]
    spans = states @ heads["span.weight"].T + heads["span.bias"]
    return scores, spans[..., 0], spans[..., 1]


def truncated_encoder(base_folder: Path, layers: int, dtype):
    """The prepared e5-small's BERT model with only its first ``layers`` layers (the reader's starting point)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # with fewer than 12, the layers left out are reported as unused: expected
    try:
        return AutoModel.from_pretrained(str(base_folder), num_hidden_layers=layers, dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
