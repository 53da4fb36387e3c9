"""The gold set fits its articles: every answer phrase sits in one sentence of its own article only (no model)."""

from __future__ import annotations

import importlib.util
import json

import qa

_spec = importlib.util.spec_from_file_location("check_gold", qa.ROOT / "tests" / "data" / "check_gold.py")
check_gold = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_gold)


def _rows():
    return [json.loads(line) for line in check_gold.GOLD.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_answer_phrase_is_in_exactly_its_own_article():
    assert check_gold.problems(_rows(), check_gold.load_articles()) == []


def test_gold_set_covers_six_articles_in_both_languages():
    rows = _rows()
    assert len(rows) >= 170
    table = check_gold.counts(rows)
    articles = {r["article"] for r in rows}
    assert len(articles) >= 6
    for article in articles:  # each article is asked about in both languages, answerable and not, in both splits
        for language in ("en", "nl"):
            assert sum(n for (a, lang, _, answerable), n in table.items()
                       if a == article and lang == language and answerable) >= 2, (article, language)
        assert any(not answerable for (a, _, _, answerable) in table if a == article), article
        assert {split for (a, _, split, _) in table if a == article} == {"tune", "test"}, article


def test_checker_catches_a_phrase_shared_with_another_article_or_missing():
    articles = {"a.txt": ["The plant is in Izhevsk.", "It opens in May."], "b.txt": ["Izhevsk is a city."]}
    row = {"question": "q", "language": "en", "article": "a.txt", "split": "tune"}
    assert check_gold.problems([{**row, "answers": ["opens in May"]}], articles) == []
    shared = check_gold.problems([{**row, "answers": ["Izhevsk"]}], articles)
    assert shared == ["line 1: 'Izhevsk' is also in ['b.txt']"]
    missing = check_gold.problems([{**row, "answers": ["Kazan"]}], articles)
    assert missing == ["line 1: 'Kazan' is in 0 sentences of a.txt, expected exactly 1"]
    unknown = check_gold.problems([{**row, "article": "c.txt", "answers": []}], articles)
    assert len(unknown) == 1 and "no article 'c.txt'" in unknown[0]
