"""The evaluation command, and a guard: retrieval quality cannot silently drop below what was measured."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import qa
from qa.evaluation import DEFAULT_GOLD, evaluate, load_gold
from qa.search import SearchConfig

# Measured with the default configuration on tests/data/gold.jsonl (README, "Retrieval quality").
MEASURED = {  # group: (R@1, R@3, answerable wrongly refused)
    "tune/en": (0.81, 0.85, 0.04), "tune/nl": (0.88, 1.00, 0.00), "tune/all": (0.84, 0.91, 0.02),
    "test/en": (0.46, 0.69, 0.00), "test/nl": (0.88, 1.00, 0.00), "test/all": (0.62, 0.81, 0.00),
}
MARGIN = 0.04  # about one question in a group of 26


@pytest.fixture(scope="module")
def report(engine):
    gold = load_gold(DEFAULT_GOLD, engine)
    return evaluate(engine, gold, {"default": SearchConfig(), "dense only": SearchConfig(lexical_weight=0.0,
                                                                                          neighbour_weight=0.0)})


def test_gold_set_shape(engine):
    gold = load_gold(DEFAULT_GOLD, engine)
    answerable = [g for g in gold if g.answers]
    assert len(gold) >= 60
    assert sum(g.language == "en" for g in answerable) >= 30 and sum(g.language == "nl" for g in answerable) >= 20
    assert sum(not g.answers for g in gold) >= 10
    assert {g.split for g in gold} == {"tune", "test"}


@pytest.mark.parametrize("group", sorted(MEASURED))
def test_figures_do_not_drop(report, group):
    r1, r3, wrongly_refused = MEASURED[group]
    scores = report["default"][group]
    assert scores.recall_at_1 >= r1 - MARGIN, scores
    assert scores.recall_at_3 >= r3 - MARGIN, scores
    assert scores.refused_answerable <= wrongly_refused + MARGIN, scores


def test_default_is_at_least_as_good_as_dense_alone_where_tuned(report):
    assert report["default"]["tune/all"].mrr >= report["dense only"]["tune/all"].mrr


def test_unknown_answer_phrase_is_a_clear_error(engine, tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"question": "q", "answers": ["no such phrase"]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no such phrase"):
        load_gold(gold, engine)


def test_eval_command_prints_the_comparison(tmp_path):
    result = subprocess.run([sys.executable, "-m", "qa", "eval", "--json", "--index", str(tmp_path)],
                            cwd=qa.ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"lexical only", "dense only", "hybrid + neighbours (default)"} <= set(data)
    assert data["hybrid + neighbours (default)"]["test/all"]["recall_at_1"] >= MEASURED["test/all"][0] - MARGIN
