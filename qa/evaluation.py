"""Measure retrieval on a gold set: Recall@1, Recall@3, MRR and refusals, per language and split.

A gold set is a JSON Lines file, one question a line::

    {"question": "Where is the plant?", "language": "en", "answers": ["Alabuga"], "split": "tune"}

``answers`` holds distinctive phrases of the answering sentence(s) (any one counts), so
the file survives re-splitting and re-numbering; an empty list marks a question the
article does not answer. ``split`` is ``tune`` (used to choose settings) or ``test``
(held out, never tuned on).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import qa

from .search import SearchConfig

DEFAULT_GOLD = qa.ROOT / "tests" / "data" / "gold.jsonl"
RANKS_KEPT = 10

CONFIGURATIONS: dict[str, SearchConfig] = {
    "lexical only": SearchConfig(use_dense=False, lexical_weight=1.0, neighbour_weight=0.0),
    "dense only": SearchConfig(lexical_weight=0.0, neighbour_weight=0.0),
    "hybrid, naive 50/50": SearchConfig(lexical_weight=1.0, neighbour_weight=0.0),
    "hybrid, no neighbours": SearchConfig(neighbour_weight=0.0),
    "hybrid + neighbours (default)": SearchConfig(),
}


@dataclass(frozen=True)
class GoldQuestion:
    question: str
    language: str
    answers: frozenset[int]  # positions in the index's passages; empty when unanswerable
    split: str


@dataclass(frozen=True)
class Scores:
    """Figures for one group of questions."""

    questions: int
    recall_at_1: float
    recall_at_3: float
    mrr: float
    refused_unanswerable: float  # share of unanswerable questions refused (higher is better)
    refused_answerable: float  # share of answerable questions wrongly refused (lower is better)


def load_gold(path: Path, engine: qa.Engine) -> list[GoldQuestion]:
    """Read a gold file, resolving each answer phrase to the sentence(s) that contain it."""
    passages = engine.index.passages
    gold = []
    for line_number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        answers = set()
        for phrase in row.get("answers", []):
            found = {i for i, p in enumerate(passages) if phrase in p.text}
            if not found:
                raise ValueError(f"{path}:{line_number}: no sentence contains {phrase!r}")
            answers |= found
        gold.append(GoldQuestion(row["question"], row.get("language", "?"), frozenset(answers), row.get("split", "test")))
    return gold


def _rank(answer: qa.Answer, wanted: frozenset[int], engine: qa.Engine) -> int | None:
    positions = {(p.document, p.number): i for i, p in enumerate(engine.index.passages)}
    for rank, citation in enumerate(answer.citations, start=1):
        if positions[(citation.document, citation.sentence)] in wanted:
            return rank
    return None


def score(engine: qa.Engine, gold: list[GoldQuestion]) -> list[tuple[GoldQuestion, int | None, bool]]:
    """(question, rank of the first right citation or None, whether the answer was refused)."""
    answers = engine.ask_many([g.question for g in gold], top_k=RANKS_KEPT)
    return [(g, _rank(a, g.answers, engine) if g.answers else None, not a.found) for g, a in zip(gold, answers)]


def summarise(results: list[tuple[GoldQuestion, int | None, bool]]) -> Scores:
    answerable = [(r, refused) for g, r, refused in results if g.answers]
    unanswerable = [refused for g, _, refused in results if not g.answers]
    n = len(answerable) or 1
    return Scores(
        questions=len(results),
        recall_at_1=sum(r == 1 for r, _ in answerable) / n,
        recall_at_3=sum(r is not None and r <= 3 for r, _ in answerable) / n,
        mrr=sum(1 / r for r, _ in answerable if r) / n,
        refused_unanswerable=sum(unanswerable) / (len(unanswerable) or 1),
        refused_answerable=sum(refused for _, refused in answerable) / n,
    )


def evaluate(engine: qa.Engine, gold: list[GoldQuestion],
             configurations: dict[str, SearchConfig] | None = None) -> dict[str, dict[str, Scores]]:
    """Scores per configuration, then per group: each split x language, and each split overall."""
    report = {}
    for name, config in (configurations or CONFIGURATIONS).items():
        results = score(engine.with_config(config), gold)
        groups: dict[str, Scores] = {}
        for split in ("tune", "test"):
            for language in sorted({g.language for g in gold}):
                part = [r for r in results if r[0].split == split and r[0].language == language]
                if part:
                    groups[f"{split}/{language}"] = summarise(part)
            part = [r for r in results if r[0].split == split]
            if part:
                groups[f"{split}/all"] = summarise(part)
        report[name] = groups
    return report


def format_table(report: dict[str, dict[str, Scores]]) -> str:
    """A Markdown table, one row per configuration and group."""
    lines = ["| configuration | group | n | R@1 | R@3 | MRR | unanswerable refused | answerable refused |",
             "|---|---|---|---|---|---|---|---|"]
    for name, groups in report.items():
        for group, s in groups.items():
            lines.append(f"| {name} | {group} | {s.questions} | {s.recall_at_1:.2f} | {s.recall_at_3:.2f} | "
                         f"{s.mrr:.2f} | {s.refused_unanswerable:.0%} | {s.refused_answerable:.0%} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    engine = qa.load(args.sources or None, index_dir=args.index, model=args.model, progress=False)
    gold = load_gold(Path(args.file) if args.file else DEFAULT_GOLD, engine)
    report = evaluate(engine, gold)
    if args.json:
        print(json.dumps({name: {g: asdict(s) for g, s in groups.items()} for name, groups in report.items()},
                         indent=1))
    else:
        print(f"{len(gold)} questions, threshold {engine.threshold:.3f}, model {engine.embedder.name}\n")
        print(format_table(report))
    return 0
