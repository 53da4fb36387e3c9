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
import re
import tempfile
from collections import Counter
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
    span: str | None = None  # the minimal answer, where the gold set gives one
    twin: tuple[int, str, str] | None = None
    """Where the other language's version of the story answers too (qa/data/news/twins/, counted only in
    the report that says so): its sentence's position, its article and its answer span."""

    @property
    def answerable(self) -> bool:
        return bool(self.answers) or self.twin is not None

    def right(self, position: int) -> bool:
        return position in self.answers or (self.twin is not None and position == self.twin[0])

    def span_of(self, position: int | None) -> str | None:
        """The gold answer to compare an answer taken from ``position`` with."""
        return self.twin[2] if self.twin is not None and position == self.twin[0] else self.span

    def right_article(self, article: str | None) -> bool:
        return self.article is None or article == self.article or (self.twin is not None and article == self.twin[1])


@dataclass(frozen=True)
class Result:
    """What one question got."""

    gold: GoldQuestion
    rank: int | None  # rank of the first right citation; None when absent or unanswerable
    refused: bool
    first_article: str | None  # the document of the first citation
    answer: str = ""  # the answer words the reply opens with ("" when refused or not read)
    right_answer_sentence: bool = False  # the reply's first answer comes from a right sentence
    answered_from: int | None = None  # the position of the sentence the reply's first answer comes from


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
    span_exact: float  # answerable questions with a gold span: the reply's answer is exactly it
    span_f1: float  # ... token F1 of the reply's answer against it (0 when refused or not read)
    span_f1_read: float  # ... the same, only where the answer came from the right sentence (the reader's part)
    intervals: dict[str, tuple[float, float]]


FIGURES = ("recall_at_1", "recall_at_3", "mrr", "right_article", "refused_unanswerable", "refused_answerable",
           "span_exact", "span_f1", "span_f1_read")


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(predicted: str, gold: str) -> float:
    """SQuAD's token F1 (lower case, punctuation dropped), for any language."""
    p, g = _tokens(predicted), _tokens(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


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
    return judge(engine, gold, engine.ask_many([g.question for g in gold], top_k=RANKS_KEPT))


def judge(engine: qa.Engine, gold: list[GoldQuestion], answers: list) -> list[Result]:
    """Where each question's answer (from ``engine``) came, against its gold."""
    positions = {(p.document, p.number): i for i, p in enumerate(engine.index.passages)}
    results = []
    for g, a in zip(gold, answers, strict=True):
        ranks = [r for r, c in enumerate(a.citations, start=1) if g.right(positions[(c.document, c.sentence)])]
        first = a.citations[a.answering[0] - 1] if a.answering else None
        source = positions[(first.document, first.sentence)] if first else None
        results.append(Result(g, ranks[0] if ranks else None, not a.found,
                              a.citations[0].document if a.citations else None, first.answer if first else "",
                              source is not None and g.right(source), source))
    return results


def _figures(results: list[Result]) -> np.ndarray:
    """Per question, one row of 0/1 (or 1/rank) values and NaN where a figure does not apply."""
    rows = []
    for r in results:
        if r.gold.answerable:
            spans, span = [np.nan] * 3, r.gold.span_of(r.answered_from)
            if span is not None:
                f1 = token_f1(r.answer, span)
                spans = [r.answer == span, f1, f1 if r.right_answer_sentence else np.nan]
            rows.append([r.rank == 1, r.rank is not None and r.rank <= 3, 1 / r.rank if r.rank else 0.0,
                         r.gold.right_article(r.first_article), np.nan, r.refused, *spans])
        else:
            rows.append([np.nan] * 4 + [r.refused] + [np.nan] * 4)
    return np.asarray(rows, dtype=float).reshape(len(results), len(FIGURES))


def summarise(results: list[Result], *, resamples: int = RESAMPLES, seed: int = 0) -> Scores:
    """Figures of one group, each with a percentile bootstrap 95% interval (questions resampled)."""
    table = _figures(results)

    def means(t: np.ndarray) -> np.ndarray:
        counts = (~np.isnan(t)).sum(axis=-2)
        return np.where(counts > 0, np.nansum(t, axis=-2) / np.maximum(counts, 1), np.nan)  # NaN: no such question

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
                           top_k=engine.top_k, threshold=engine.threshold, config=engine.config, reader=engine.reader)
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
    if np.isnan(value):
        return "—"
    if percent:
        return f"{value:.0%} [{low:.0%}, {high:.0%}]"
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def format_table(report: dict[str, dict[str, Scores]]) -> str:
    """A Markdown table, one row per configuration and group, each figure with its 95% interval."""
    spans = any(not np.isnan(s.span_f1) for groups in report.values() for s in groups.values())
    extra = " span exact | span F1 | span F1, right sentence |" if spans else ""
    lines = ["| configuration | group | n | R@1 | R@3 | MRR | right article | unanswerable refused "
             "| answerable refused |" + extra, "|---|---|---|---|---|---|---|---|---|" + "---|" * (3 * spans)]
    for name, groups in report.items():
        for group_name, s in groups.items():
            lines.append(f"| {name} | {group_name} | {s.questions} | {_with_interval(s, 'recall_at_1')} | "
                         f"{_with_interval(s, 'recall_at_3')} | {_with_interval(s, 'mrr')} | "
                         f"{_with_interval(s, 'right_article', True)} | "
                         f"{_with_interval(s, 'refused_unanswerable', True)} | "
                         f"{_with_interval(s, 'refused_answerable', True)} |"
                         + (f" {_with_interval(s, 'span_exact', True)} | {_with_interval(s, 'span_f1')} | "
                            f"{_with_interval(s, 'span_f1_read')} |" if spans else ""))
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
    def plain(value):
        return None if isinstance(value, float) and np.isnan(value) else value
    return {f.name: plain(getattr(scores, f.name)) if f.name != "intervals" else
            {k: [plain(v) for v in pair] for k, pair in scores.intervals.items()} for f in fields(scores)}


def news_gold(engine: qa.Engine, items, *, twins: bool = False) -> list[GoldQuestion]:
    """The reader's data as gold questions, for an engine that has their articles loaded; with ``twins``,
    what the other language's version of a story answers counts as right too (:class:`qa.reader_data.TwinAnswer`)."""
    positions = {(p.document, p.number): i for i, p in enumerate(engine.index.passages)}
    return [GoldQuestion(i.question, i.language, frozenset() if i.answer is None else
                         frozenset({positions[(i.article, i.sentence + 1)]}), "test", i.article, i.answer,
                         (positions[(i.twin.article, i.twin.sentence + 1)], i.twin.article, i.twin.answer)
                         if twins and i.twin else None)
            for i in items]


def news_groups(results: list[Result]) -> dict[str, Scores]:
    """Scores of English questions, Dutch questions, questions asked across languages, and all."""
    groups = {"en questions": [r for r in results if r.gold.language == "en"],
              "nl questions": [r for r in results if r.gold.language == "nl"],
              "across languages": [r for r in results if r.gold.language != r.gold.article[:2]],
              "all": results}
    return {name: summarise(rs) for name, rs in groups.items() if rs}


def news_engine(engine: qa.Engine, folder: Path) -> tuple[qa.Engine, list]:
    """The reader's held-out ("test") stories all loaded together (index in ``folder``), served as ``engine``
    is, and their checked questions."""
    from .reader_data import load

    documents, items = load({"test"})
    return qa.Engine(documents, open_index(documents, engine.embedder, folder), engine.embedder, top_k=engine.top_k,
                     threshold=engine.threshold, config=engine.config, reader=engine.reader), items


def news_report(engine: qa.Engine, folder: Path) -> dict[str, dict[str, Scores]]:
    """The reader's held-out ("test") stories, all loaded together: the first stage alone and with the reader,
    each also with the twin's answers counted where ``twins/`` labels them (a citation of the other
    language's version that answers is not a mistake; the plain rows count it as one, as the targets do)."""
    news, items = news_engine(engine, folder)
    gold, twinned = news_gold(news, items), news_gold(news, items, twins=True)
    servings = {"first stage alone": news.with_config(reader=False)} | (
        {"with the reader (default)": news} if engine.reader else {})
    report = {}
    for name, served in servings.items():
        answers = served.ask_many([g.question for g in gold], top_k=RANKS_KEPT)
        report[name] = news_groups(judge(served, gold, answers))
        if twinned != gold:
            report[f"{name}, the twin's answers counted"] = news_groups(judge(served, twinned, answers))
    return report


def main(args: argparse.Namespace) -> int:
    sources = args.sources or list(DEFAULT_ARTICLES)
    gold_path = Path(args.file) if args.file else DEFAULT_GOLD
    with tempfile.TemporaryDirectory() as folder:
        engine = qa.load(sources, index_dir=args.index, model=args.model, progress=False, backend=args.backend)
        gold = load_gold(gold_path, engine)
        first = engine.with_config(reader=False)
        report = evaluate(first, gold, CONFIGURATIONS if args.model in (None, qa.DEFAULT_MODEL) else
                          {"default": engine.config})
        report = {f"first stage, {name}": groups for name, groups in report.items()}
        report["with the reader (default)"] = group(score(engine, gold))
        articles = {"": alone_and_together(engine, gold_path, Path(folder) / "alone")}
        if args.untuned:
            untuned = qa.load(sources, index_dir=Path(folder) / "untuned", model=BASE_MODEL, progress=False,
                              backend=args.backend, reader=False)
            report |= {f"untuned: {name}": groups
                       for name, groups in evaluate(untuned, gold, UNTUNED_CONFIGURATIONS).items()}
            articles["untuned: "] = alone_and_together(untuned, gold_path, Path(folder) / "untuned-alone")
        news = news_report(engine, Path(folder) / "news") if not args.file else {}
    articles = {f"{prefix}{key}": row for prefix, table in articles.items() for key, row in table.items()}
    if args.json:
        print(json.dumps({"configurations": {name: {g: _as_json(s) for g, s in groups.items()}
                                             for name, groups in report.items()},
                          "articles": {k: {s: _as_json(v) for s, v in row.items()} for k, row in articles.items()},
                          "news": {name: {g: _as_json(s) for g, s in groups.items()} for name, groups in news.items()}},
                         indent=1))
    else:
        print(f"{len(gold)} questions over {len(engine.documents)} articles, model {engine.embedder.name}, "
              f"first-stage threshold {engine.threshold:.3f}; [95% bootstrap interval, {RESAMPLES} resamples]\n")
        print(format_table(report))
        print("\nEach article alone vs all articles loaded together (default configuration of each model):\n")
        print(format_articles(articles))
        if news:
            print("\nThe reader's held-out stories (qa/data/news, split test), all loaded together:\n")
            print(format_table(news))
    return 0
