"""Probe: a refusal threshold per question kind (Lagrangian allocation of the 5% budget), story-wise CV on dev."""
import pickle
import numpy as np
from qa.reader_data import load
documents, items = load({"dev"})
rows = pickle.load(open("second_look.pkl", "rb"))
ans = np.array([i.answerable for i in items])
s = np.array([max(x[2] for x in r[:r.index(None)]) for r in rows])
kind = np.array([i.kind for i in items]); story = np.array([i.story for i in items])
def group_of(k):
    return {"how many": "num", "how much": "num", "how far": "num", "how long": "num", "when": "when"}.get(k, k if k in ("who", "what", "which", "where", "yes-no") else "other")
grp = np.array([group_of(k) for k in kind])
def fit(mask, budget=0.05):
    groups = sorted(set(grp[mask]))
    best = None
    for lam in np.linspace(0.2, 6, 59):
        th = {}
        for g in groups:
            m = mask & (grp == g)
            cands = np.unique(np.concatenate([s[m], [-99]]))
            val = [((s[m & ~ans] < t).sum() - lam * (s[m & ans] < t).sum(), t) for t in cands]
            th[g] = max(val)[1]
        t_q = np.array([th.get(g, -99) for g in grp])
        fr = (s[mask & ans] < t_q[mask & ans]).mean()
        if fr <= budget:
            tr = (s[mask & ~ans] < t_q[mask & ~ans]).mean()
            if best is None or tr > best[0]:
                best = (tr, th)
    return best[1]
def single(mask, budget=0.05):
    return float(np.quantile(s[mask & ans], budget, method="lower"))
stories = sorted(set(story)); rng = np.random.default_rng(0); folds = np.array_split(rng.permutation(stories), 9)
out_k, out_s = np.zeros(len(s), bool), np.zeros(len(s), bool)
for f in folds:
    test = np.isin(story, f); train = ~test
    th = fit(train); t_q = np.array([th.get(g, -99) for g in grp])
    out_k[test] = s[test] < t_q[test]
    out_s[test] = s[test] < single(train)
for name, r in (("per kind", out_k), ("single", out_s)):
    print(name, "refused unans %.3f  ans %.3f" % (r[~ans].mean(), r[ans].mean()))
