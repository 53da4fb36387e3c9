"""Speed and memory, measured on this machine: ``python -m qa bench``.

Every figure is a median over repeated runs, and the floor (the bare model encoding one
question plus the FAISS search) is measured in the same run as ``ask()``, so their ratio
holds even on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
t1 = time.perf_counter()
embedder = Embedder.load(sys.argv[2] or None)
t2 = time.perf_counter()
documents, _ = read_documents([qa.ROOT / "seeds"])
index = load_index(sys.argv[1])
engine = qa.Engine(documents, index, embedder)
t3 = time.perf_counter()
answer = engine.ask("Where is the factory?")
t4 = time.perf_counter()
mem = memory_mb()
print(json.dumps({"interpreter start": float(sys.argv[3]), "imports": t1 - t0, "model load": t2 - t1,
                  "index load": t3 - t2, "first answer": t4 - t3, "total": t4 - t0 + float(sys.argv[3]),
                  "resident MB after first answer": mem["VmRSS"], "peak resident MB": mem["VmHWM"]}))
"""

_BUILD = _MEMORY + r"""
import json, sys, time
import qa
from qa.documents import parse_document
from qa.embedding import Embedder
from qa.index import build_index
embedder = Embedder.load(sys.argv[2] or None)
seed = (qa.ROOT / "seeds" / "000_e2981c027b46f4f0.txt").read_text(encoding="utf-8")
docs = [parse_document((f"Artikel {i}.\n" + seed).encode(), name=f"{i}.txt") for i in range(int(sys.argv[3]))]
before = memory_mb()["VmRSS"]
t0 = time.perf_counter()
index = build_index(docs, embedder, sys.argv[1])
seconds = time.perf_counter() - t0
print(json.dumps({"sentences": len(index.passages), "seconds": seconds, "resident MB before": before,
                  "peak resident MB": memory_mb()["VmHWM"]}))
"""


def _run_python(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line of figures."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=qa.ROOT,
                         timeout=900)
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


def cold_start(index_dir: Path, model: str | None, runs: int) -> dict:
    """Fresh processes: imports, model load, index load, first answer (interpreter start added)."""
    startup = _interpreter_start()
    return _median_dicts([_run_python(_COLD_START, str(index_dir), model or "", f"{startup:.4f}")
                          for _ in range(runs)])


def build_throughput(model: str | None, copies: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        result = _run_python(_BUILD, folder, model or "", str(copies))
    result["sentences per second"] = result["sentences"] / result["seconds"]
    return result


def warm_latency(engine: qa.Engine, questions: list[str], rounds: int) -> dict:
    """ask() and its floor (encode one question + FAISS search), interleaved in one loop."""
    asks, floors = [], []
    engine.ask(questions[0])  # warm-up
    for _ in range(rounds):
        for question in questions:
            t0 = time.perf_counter()
            engine.ask(question)
            t1 = time.perf_counter()
            vector = engine.embedder.queries([question])
            engine.index.vectors.search(vector, engine.top_k)
            t2 = time.perf_counter()
            asks.append((t1 - t0) * 1000)
            floors.append((t2 - t1) * 1000)
    many = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        engine.ask_many(questions)
        many.append((time.perf_counter() - t0) * 1000 / len(questions))
    return {
        "ask p50 ms": _percentile(asks, 50), "ask p95 ms": _percentile(asks, 95),
        "floor p50 ms": _percentile(floors, 50), "floor p95 ms": _percentile(floors, 95),
        "ask / floor (p50)": _percentile(asks, 50) / _percentile(floors, 50),
        "ask_many ms per question (median)": statistics.median(many),
    }


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


def _table(title: str, data: dict) -> str:
    lines = [f"\n{title}", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in data.items()]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import faiss
    import psutil

    engine = qa.load(args.sources or None, index_dir=args.index, model=args.model, progress=False)
    index_dir = Path(args.index) if args.index else qa.ROOT / "index"
    print(f"Machine: {psutil.cpu_count()} cores; FAISS {faiss.__version__}; model {engine.embedder.name}")
    print(_table("Cold start (s), median of 3 fresh processes", cold_start(index_dir, args.model, 3)))
    print(_table("Index build, 40 copies of the seed article", build_throughput(args.model, 40)))
    from .evaluation import DEFAULT_GOLD, load_gold

    questions = [g.question for g in load_gold(DEFAULT_GOLD, engine)]
    print(_table(f"Warm ask(), {len(questions)} questions x 5 rounds", warm_latency(engine, questions, 5)))
    sizes = [10_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows = faiss_scale(sizes)
    print("\nFAISS by size (generated 384-d vectors with 48-d structure, see faiss_scale; 200 queries)")
    print("| sentences | index | build s | bytes/vector | search p50 ms | recall@10 vs exact |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sentences']:,} | {r['kind']} | {r['build s']:.1f} | {r['bytes per vector']:.0f} | "
              f"{r['search p50 ms']:.3f} | {r['recall@10 vs exact']:.3f} |")
    return 0
