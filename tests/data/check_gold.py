"""Check the gold set against its articles, without the model: ``python tests/data/check_gold.py``.

Every answer phrase must lie inside one sentence of the article its row names, as the project's
own splitter cuts it, and in no sentence of any other article: with several articles loaded
together, a phrase found twice would make a hit on the wrong article count as right.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, like the tests do

from qa.documents import read_document  # noqa: E402

GOLD = ROOT / "tests" / "data" / "gold.jsonl"
ARTICLE_FOLDERS = (ROOT / "seeds", ROOT / "tests" / "data" / "articles")
FIELDS = {"question", "language", "article", "answers", "split"}


def load_articles() -> dict[str, list[str]]:
    """Sentence texts of every article the gold set may name, by file name."""
    paths = [p for folder in ARTICLE_FOLDERS for p in sorted(folder.glob("*.txt"))]
    return {p.name: [s.text for s in read_document(p).sentences] for p in paths}


def problems(rows: list[dict], articles: dict[str, list[str]]) -> list[str]:
    """Everything wrong with the rows, one message each, naming the line."""
    found, seen = [], set()
    for line, row in enumerate(rows, start=1):
        if set(row) != FIELDS:
            found.append(f"line {line}: fields {sorted(row)}, expected {sorted(FIELDS)}")
            continue
        if row["language"] not in ("en", "nl") or row["split"] not in ("tune", "test"):
            found.append(f"line {line}: language {row['language']!r} / split {row['split']!r}")
        if (row["article"], row["question"]) in seen:
            found.append(f"line {line}: question asked twice about {row['article']}: {row['question']!r}")
        seen.add((row["article"], row["question"]))
        if row["article"] not in articles:
            found.append(f"line {line}: no article {row['article']!r} in {[str(f) for f in ARTICLE_FOLDERS]}")
            continue
        for phrase in row["answers"]:
            hits = {name: sum(phrase in s for s in sentences) for name, sentences in articles.items()}
            if hits[row["article"]] != 1:
                found.append(f"line {line}: {phrase!r} is in {hits[row['article']]} sentences of "
                             f"{row['article']}, expected exactly 1")
            elsewhere = sorted(name for name, n in hits.items() if n and name != row["article"])
            if elsewhere:
                found.append(f"line {line}: {phrase!r} is also in {elsewhere}")
    return found


def counts(rows: list[dict]) -> Counter:
    """Questions per (article, language, split, answerable)."""
    return Counter((r["article"], r["language"], r["split"], bool(r["answers"])) for r in rows)


def main() -> int:
    rows = [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines() if line.strip()]
    articles = load_articles()
    table = counts(rows)
    print(f"{len(rows)} questions over {len({r['article'] for r in rows})} articles\n")
    print(f"{'article':36} {'sentences':>9} {'lang':>4} {'tune ans':>8} {'tune un':>7} {'test ans':>8} {'test un':>7}")
    for article in sorted({r["article"] for r in rows}):
        for language in ("en", "nl"):
            cells = [table[(article, language, split, answerable)]
                     for split in ("tune", "test") for answerable in (True, False)]
            print(f"{article:36} {len(articles.get(article, [])):9} {language:>4} "
                  + " ".join(f"{c:>{w}}" for c, w in zip(cells, (8, 7, 8, 7))))
    for key, name in ((1, "language"), (2, "split")):
        print(f"per {name}: " + ", ".join(f"{v} {sum(n for k, n in table.items() if k[key] == v)}"
                                           for v in sorted({k[key] for k in table})))
    print(f"answerable {sum(bool(r['answers']) for r in rows)}, unanswerable {sum(not r['answers'] for r in rows)}")
    found = problems(rows, articles)
    print("\n" + ("\n".join(found) if found else "OK: every answer phrase is in exactly one sentence of its own article only"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
