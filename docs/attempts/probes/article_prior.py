"""Probe: does an article-level signal added to the first stage's sentence score help on dev?"""
import sys, tempfile
from pathlib import Path
import numpy as np
from qa.reader_data import load
from qa.reader_training import first_stage

split = sys.argv[1] if len(sys.argv) > 1 else "dev"
documents, items = load({split})
with tempfile.TemporaryDirectory() as folder:
    engine = first_stage(documents, Path(folder))
    answers = engine.ask_many([i.question for i in items], top_k=60)
    emb = engine.embedder
    sent_vecs = {d.name: emb.passages([s.text for s in d.sentences]) for d in documents}
    title_vecs = {d.name: emb.passages([d.sentences[0].text])[0] for d in documents}
    qv = emb.queries([i.question for i in items])
centroid = {n: (v.mean(0) / np.linalg.norm(v.mean(0))) for n, v in sent_vecs.items()}
names = [d.name for d in documents]
def signals(row, q):
    cos = {n: sent_vecs[n] @ q for n in names}
    return {"top2": {n: np.sort(c)[-2:].mean() for n, c in cos.items()},
            "top3": {n: np.sort(c)[-3:].mean() for n, c in cos.items()},
            "centroid": {n: float(centroid[n] @ q) for n in names},
            "title": {n: float(title_vecs[n] @ q) for n in names}}
sigs = [signals(r, qv[r]) for r in range(len(items))]
def measure(kind, a):
    r1 = r3 = art = n = 0
    for it, ans, sg in zip(items, answers, sigs):
        if not it.answerable:
            continue
        hits = [(c.score + (a * sg[kind][c.document] if a else 0), c.document, c.sentence - 1) for c in ans.citations]
        hits.sort(key=lambda h: -h[0])
        n += 1
        r1 += it.is_answer(hits[0][1], hits[0][2])
        r3 += any(it.is_answer(d, s) for _, d, s in hits[:3])
        art += hits[0][1] == it.article or (it.twin is not None and hits[0][1] == it.twin.article)
    return r1 / n, r3 / n, art / n, n
print("base", measure("top2", 0))
for kind in ("top2", "top3", "centroid", "title"):
    for a in (0.05, 0.1, 0.2, 0.3, 0.5):
        print(kind, a, ["%.3f" % x for x in measure(kind, a)[:3]])
