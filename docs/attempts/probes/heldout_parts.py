"""The held-out ("test") stories all loaded together, as ``python -m qa eval`` measures them, with the figures
also given for the nine stories added on 7 December alone and for the twelve articles before them
(each question judged with all 21 articles loaded). Optional argument: a reader adapter folder."""
import json
import sys
import tempfile
from pathlib import Path

import qa
from qa.evaluation import RANKS_KEPT, format_table, judge, news_engine, news_gold, news_groups
from qa.reader import Reader
from qa.reader_data import SPLIT

FRESH = set(json.loads(SPLIT.read_text())["test"][10:])  # split.json lists the ten stories of before 7 Dec first
engine = qa.load(progress=False)
if len(sys.argv) > 1:
    engine = engine.with_config(reader=Reader.load(adapter=Path(sys.argv[1]), progress=False))
with tempfile.TemporaryDirectory() as folder:
    news, items = news_engine(engine, Path(folder))
    gold = news_gold(news, items)
    results = judge(news, gold, news.ask_many([g.question for g in gold], top_k=RANKS_KEPT))
story = {(i.article, i.question): i.story for i in items}
parts = {"all 21 articles": results,
         "12 articles before 7 Dec": [r for r in results if story[r.gold.article, r.gold.question] not in FRESH],
         "9 fresh articles (7 Dec)": [r for r in results if story[r.gold.article, r.gold.question] in FRESH]}
print(format_table({name: news_groups(rs) for name, rs in parts.items()}))
