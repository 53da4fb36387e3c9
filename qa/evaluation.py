"""Measure retrieval on a gold set: Recall@1/3, MRR, right article, refusals, with bootstrap 95% intervals.

A gold set is a JSON Lines file, one question a line::

    {"question": "Where is the plant?", "language": "en", "article": "000_e2981c027b46f4f0.txt",
     "answers": ["Alabuga"], "split": "tune"}

``answers`` holds distinctive phrases of the answering sentence(s) (any one counts), so
the file survives re-splitting and re-numbering; an empty list marks a question the
article does not answer. ``article`` names the file that answers (or that the question
is about); rows about an article that is not loaded are left out. ``split`` is ``tune``
(used to choose settings) or ``test`` (held out, never tuned on).

Two settings are measured: every article loaded together (the figures per configuration)
and each article alone (the multi-article table), because a question must find its
article among several, and no article may win because it shares the question's language.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

import qa

from .embedding import BASE_MODEL
from .index import open_index
from .search import BASE_MODEL_OFFSETS, SearchConfig

DEFAULT_GOLD = qa.ROOT / "tests" / "data" / "gold.jsonl"
DEFAULT_ARTICLES = (qa.ROOT / "seeds", qa.ROOT / "tests" / "data" / "articles")
RANKS_KEPT = 10
RESAMPLES = 1000

CONFIGURATIONS: dict[str, SearchConfig] = {
    "lexical only": SearchConfig(use_dense=False, lexical_weight=1.0, neighbour_weight=0.0),
    "dense only": SearchConfig(lexical_weight=0.0, neighbour_weight=0.0),
    "hybrid, no neighbours": SearchConfig(neighbour_weight=0.0),
    "hybrid + neighbours (default)": SearchConfig(),
}
UNTUNED_CONFIGURATIONS: dict[str, SearchConfig] = {
    "dense only": SearchConfig(lexical_weight=0.0, neighbour_weight=0.0),
    "hybrid + neighbours, no language offsets": SearchConfig(),
    "hybrid + neighbours + language offsets (its default)": SearchConfig(language_offsets=BASE_MODEL_OFFSETS),
}


@dataclass(frozen=True)
class GoldQuestion:
    question: str
    language: str
    answers: frozenset[int]  # positions in the index's passages; empty when unanswerable
    split: str
    article: str | None = None  # the file that answers (or that the question is about)


@dataclass(frozen=True)
class Result:
    """What one question got."""

    gold: GoldQuestion
    rank: int | None  # rank of the first right citation; None when absent or unanswerable
    refused: bool
    first_article: str | None  # the document of the first citation


@dataclass(frozen=True)
class Scores:
    """Figures for one group of questions; ``intervals`` holds a bootstrap 95% interval per figure."""

    questions: int
    recall_at_1: float
    recall_at_3: float
    mrr: float
    right_article: float  # answerable questions whose first citation is from their article
    refused_unanswerable: float  # share of unanswerable questions refused (higher is better)
    refused_answerable: float  # share of answerable questions wrongly refused (lower is better)
    intervals: dict[str, tuple[float, float]]


FIGURES = ("recall_at_1", "recall_at_3", "mrr", "right_article", "refused_unanswerable", "refused_answerable")


def load_gold(path: Path, engine: qa.Engine) -> list[GoldQuestion]:
    """Read a gold file, resolving each answer phrase to the sentence(s) of its article that contain it."""
    passages = engine.index.passages
    loaded = {d.name for d in engine.documents}
    gold = []
    for line_number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        article = row.get("article")
        if article is not None and article not in loaded:
            continue
        answers = set()
        for phrase in row.get("answers", []):
            found = {i for i, p in enumerate(passages) if phrase in p.text and article in (None, p.document)}
            if not found:
                raise ValueError(f"{path}:{line_number}: no sentence contains {phrase!r}")
            answers |= found
        gold.append(GoldQuestion(row["question"], row.get("language", "?"), frozenset(answers),
                                 row.get("split", "test"), article))
    return gold


def score(engine: qa.Engine, gold: list[GoldQuestion]) -> list[Result]:
    """Ask every question once and record where its answer came."""
    positions = {(p.document, p.number): i for i, p in enumerate(engine.index.passages)}
    answers = engine.ask_many([g.question for g in gold], top_k=RANKS_KEPT)
    results = []
    for g, a in zip(gold, answers):
        ranks = [r for r, c in enumerate(a.citations, start=1) if positions[(c.document, c.sentence)] in g.answers]
        results.append(Result(g, ranks[0] if ranks else None, not a.found,
                              a.citations[0].document if a.citations else None))
    return results


def _figures(results: list[Result]) -> np.ndarray:
    """Per question, one row of 0/1 (or 1/rank) values and NaN where a figure does not apply."""
    rows = []
    for r in results:
        if r.gold.answers:
            rows.append([r.rank == 1, r.rank is not None and r.rank <= 3, 1 / r.rank if r.rank else 0.0,
                         r.gold.article is None or r.first_article == r.gold.article, np.nan, r.refused])
        else:
            rows.append([np.nan] * 4 + [r.refused, np.nan])
    return np.asarray(rows, dtype=float).reshape(len(results), len(FIGURES))


def summarise(results: list[Result], *, resamples: int = RESAMPLES, seed: int = 0) -> Scores:
    """Figures of one group, each with a percentile bootstrap 95% interval (questions resampled)."""
    table = _figures(results)

    def means(t: np.ndarray) -> np.ndarray:
        counts = (~np.isnan(t)).sum(axis=-2)
        return np.where(counts > 0, np.nansum(t, axis=-2) / np.maximum(counts, 1), 0.0)

    point = means(table)
    rng = np.random.default_rng(seed)
    draws = means(table[rng.integers(0, len(table), size=(resamples, len(table)))])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return Scores(len(results), *map(float, point),
                  intervals={f: (float(lo), float(hi)) for f, lo, hi in zip(FIGURES, low, high)})


def group(results: list[Result]) -> dict[str, Scores]:
    """Scores per split x language, and per split overall."""
    groups: dict[str, Scores] = {}
    for split in ("tune", "test"):
        for language in sorted({r.gold.language for r in results}):
            part = [r for r in results if r.gold.split == split and r.gold.language == language]
            if part:
                groups[f"{split}/{language}"] = summarise(part)
        part = [r for r in results if r.gold.split == split]
        if part:
            groups[f"{split}/all"] = summarise(part)
    return groups


def evaluate(engine: qa.Engine, gold: list[GoldQuestion],
             configurations: dict[str, SearchConfig] | None = None) -> dict[str, dict[str, Scores]]:
    """Scores per configuration, then per group (all of the engine's articles loaded together)."""
    return {name: group(score(engine.with_config(config), gold))
            for name, config in (configurations or CONFIGURATIONS).items()}


def alone_and_together(engine: qa.Engine, gold_path: Path, folder: Path) -> dict[str, dict[str, Scores]]:
    """Each article searched alone vs all of them together, per article x split x language."""
    together = score(engine, load_gold(gold_path, engine))
    table: dict[str, dict[str, Scores]] = {}
    for n, document in enumerate(engine.documents):
        single = qa.Engine([document], open_index([document], engine.embedder, folder / str(n)), engine.embedder,
                           top_k=engine.top_k, threshold=engine.threshold, config=engine.config)
        alone = score(single, load_gold(gold_path, single))
        mine = [r for r in together if r.gold.article == document.name]
        for split in ("tune", "test"):
            for language in sorted({r.gold.language for r in alone}):
                part = [[r for r in rs if r.gold.split == split and r.gold.language == language] for rs in (alone, mine)]
                if part[0]:
                    table[f"{document.name} {split}/{language}"] = {"alone": summarise(part[0]),
                                                                     "together": summarise(part[1])}
        for setting, rs in (("alone", alone), ("together", mine)):
            table.setdefault("all articles, pooled", {}).setdefault(setting, []).extend(rs)
    pooled = table.pop("all articles, pooled")
    for split in ("tune", "test"):
        for language in sorted({r.gold.language for r in pooled["alone"]}):
            table[f"pooled {split}/{language}"] = {
                s: summarise([r for r in pooled[s] if r.gold.split == split and r.gold.language == language])
                for s in ("alone", "together")}
    return table


def _with_interval(s: Scores, figure: str, percent: bool = False) -> str:
    value, (low, high) = getattr(s, figure), s.intervals[figure]
    if percent:
        return f"{value:.0%} [{low:.0%}, {high:.0%}]"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def format_table(report: dict[str, dict[str, Scores]]) -> str:
    """A Markdown table, one row per configuration and group, each figure with its 95% interval."""
    lines = ["| configuration | group | n | R@1 | R@3 | MRR | right article | unanswerable refused "
             "| answerable refused |", "|---|---|---|---|---|---|---|---|---|"]
    for name, groups in report.items():
        for group_name, s in groups.items():
            lines.append(f"| {name} | {group_name} | {s.questions} | {_with_interval(s, 'recall_at_1')} | "
                         f"{_with_interval(s, 'recall_at_3')} | {_with_interval(s, 'mrr')} | "
                         f"{_with_interval(s, 'right_article', True)} | "
                         f"{_with_interval(s, 'refused_unanswerable', True)} | "
                         f"{_with_interval(s, 'refused_answerable', True)} |")
    return "\n".join(lines)


def format_articles(table: dict[str, dict[str, Scores]]) -> str:
    """A Markdown table: each article alone vs all loaded together."""
    lines = ["| article, group | n | R@1 alone | R@1 together | right article together "
             "| unanswerable refused alone / together | answerable refused alone / together |",
             "|---|---|---|---|---|---|---|"]
    for key, s in table.items():
        alone, together = s["alone"], s["together"]
        lines.append(f"| {key} | {alone.questions} | {_with_interval(alone, 'recall_at_1')} | "
                     f"{_with_interval(together, 'recall_at_1')} | {_with_interval(together, 'right_article', True)} | "
                     f"{alone.refused_unanswerable:.0%} / {together.refused_unanswerable:.0%} | "
                     f"{alone.refused_answerable:.0%} / {together.refused_answerable:.0%} |")
    return "\n".join(lines)


def _as_json(scores: Scores) -> dict:
    return {f.name: getattr(scores, f.name) for f in fields(scores)}


def main(args: argparse.Namespace) -> int:
    sources = args.sources or list(DEFAULT_ARTICLES)
    gold_path = Path(args.file) if args.file else DEFAULT_GOLD
    with tempfile.TemporaryDirectory() as folder:
        engine = qa.load(sources, index_dir=args.index, model=args.model, progress=False, backend=args.backend)
        gold = load_gold(gold_path, engine)
        report = evaluate(engine, gold, CONFIGURATIONS if args.model in (None, qa.DEFAULT_MODEL) else
                          {"default": engine.config})
        articles = {"": alone_and_together(engine, gold_path, Path(folder) / "alone")}
        if args.untuned:
            untuned = qa.load(sources, index_dir=Path(folder) / "untuned", model=BASE_MODEL, progress=False,
                              backend=args.backend)
            report |= {f"untuned: {name}": groups
                       for name, groups in evaluate(untuned, gold, UNTUNED_CONFIGURATIONS).items()}
            articles["untuned: "] = alone_and_together(untuned, gold_path, Path(folder) / "untuned-alone")
    articles = {f"{prefix}{key}": row for prefix, table in articles.items() for key, row in table.items()}
    if args.json:
        print(json.dumps({"configurations": {name: {g: _as_json(s) for g, s in groups.items()}
                                             for name, groups in report.items()},
                          "articles": {k: {s: _as_json(v) for s, v in row.items()} for k, row in articles.items()}},
                         indent=1))
    else:
        print(f"{len(gold)} questions over {len(engine.documents)} articles, threshold {engine.threshold:.3f}, "
              f"model {engine.embedder.name}; [95% bootstrap interval, {RESAMPLES} resamples]\n")
        print(format_table(report))
        print("\nEach article alone vs all articles loaded together (default configuration of each model):\n")
        print(format_articles(articles))
    return 0
