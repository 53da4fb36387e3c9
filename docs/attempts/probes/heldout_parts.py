"""The held-out ("test") stories all loaded together, as ``python -m qa eval`` measures them, with the figures
also given for the nine stories added on 7 December alone and for the twelve articles before them
(each question judged with all 21 articles loaded). Optional argument: a reader adapter folder."""
import json
import sys
import tempfile
from pathlib import Path

import qa
from qa.evaluation import RANKS_KEPT, format_table, judge, news_gold, news_groups
from qa.index import open_index
from qa.reader import Reader
from qa.reader_data import SPLIT, load

FRESH = set(json.loads(SPLIT.read_text())["test"][10:])
documents, items = load({"test"})
reader = Reader.load(adapter=Path(sys.argv[1]), progress=False) if len(sys.argv) > 1 else None
with tempfile.TemporaryDirectory() as folder:
    base = qa.load(progress=False)
    engine = qa.Engine(documents, open_index(documents, base.embedder, Path(folder)), base.embedder,
                       top_k=base.top_k, threshold=base.threshold, config=base.config, reader=reader or base.reader)
    gold = news_gold(engine, items)
    answers = engine.ask_many([g.question for g in gold], top_k=RANKS_KEPT)
results = judge(engine, gold, answers)
story = {i.question + i.article: i.story for i in items}
parts = {"all 21 articles": results,
         "12 articles before 7 Dec": [r for r in results if story[r.gold.question + r.gold.article] not in FRESH],
         "9 fresh articles (7 Dec)": [r for r in results if story[r.gold.question + r.gold.article] in FRESH]}
print(format_table({name: news_groups(rs) for name, rs in parts.items()}))
