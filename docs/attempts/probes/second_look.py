"""Probe: when the reader's first three candidates do not answer, read the next three before refusing (dev)."""
import pickle, tempfile
from pathlib import Path
from qa.reader import Reader
from qa.reader_data import load
from qa.reader_training import first_stage

documents, items = load({"dev"})
reader = Reader.load(progress=False)
serving = reader.serving
print(serving)
rows = []
with tempfile.TemporaryDirectory() as folder:
    engine = first_stage(documents, Path(folder))
    snapshot = engine.library.snapshot
    vectors = engine.embedder.queries([i.question for i in items])
    for it, v in zip(items, vectors):
        hits = engine._search(snapshot, it.question, v, None, 9, None)
        first = serving.readings(hits[:3], *reader.judge(it.question, hits[:3]))
        second = serving.readings(hits[3:6], *reader.judge(it.question, hits[3:6])) if len(hits) > 3 else []
        rows.append([(r.hit.passage.document, r.hit.passage.number - 1, r.score) for r in first] +
                    [None] + [(r.hit.passage.document, r.hit.passage.number - 1, r.score) for r in second])
pickle.dump(rows, open("second_look.pkl", "wb"))
