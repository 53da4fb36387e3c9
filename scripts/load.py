"""Load test: many clients at once against the running web app, over loopback only.

    python scripts/load.py [--clients 20] [--questions 10] [--soak 1000]

Starts `app.py` on a free local port, then (1) 20 concurrent gradio_client clients ask 10
questions each and every answer must cite the right sentence first; (2) 1,000 more questions
are asked and the server's resident memory is compared before and after. Prints p50/p95
latency and the memory figures; exits non-zero on any wrong answer, error, or growth past
MAX_GROWTH_MB.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent
MAX_GROWTH_MB = 150
"""Allowed growth of the server's resident memory over the soak (caches warming up, allocator slack)."""
# (question, sentence that must be cited first)
QUESTIONS = [
    ("Where is the factory?", 6), ("Which port do the drones pass through?", 9),
    ("What fighter jet does Iran want to buy?", 13), ("Who is the White House spokesman?", 3),
    ("Which newspaper reported the deal in November?", 10), ("Wanneer kan de fabriek volledig draaien?", 7),
    ("Welke straaljager koopt Iran van Rusland?", 13), ("Via welke zee worden de drones vervoerd?", 9),
    ("Wie heeft sancties opgelegd?", 21), ("Who is Anthony Ruggiero?", 19),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        line = server.stdout.readline()
        if line.startswith("Local:"):
            return server
        if server.poll() is not None:
            break
    server.kill()
    raise SystemExit("the app did not start")


def one_client(url: str, questions: list[tuple[str, int]]) -> list[tuple[float, bool]]:
    client = Client(url, verbose=False)
    results = []
    for question, sentence in questions:
        t0 = time.perf_counter()
        try:
            reply = client.predict(message=question, api_name="/chat")
            ok = len(reply) > 1 and f", sentence {sentence} " in reply[1]["content"].splitlines()[0]
        except Exception as exc:  # counted, reported, and failing the run
            print(f"error: {question!r}: {exc}", file=sys.stderr)
            ok = False
        results.append((time.perf_counter() - t0, ok))
    return results


def run(url: str, clients: int, per_client: int) -> list[tuple[float, bool]]:
    plans = [[QUESTIONS[(c + i) % len(QUESTIONS)] for i in range(per_client)] for c in range(clients)]
    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [r for batch in pool.map(lambda plan: one_client(url, plan), plans) for r in batch]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--questions", type=int, default=10, help="per client")
    parser.add_argument("--soak", type=int, default=1000, help="questions asked between the memory readings")
    args = parser.parse_args()

    port = _free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/"
    process = psutil.Process(server.pid)
    try:
        results = run(url, args.clients, args.questions)
        latencies = sorted(t * 1000 for t, _ in results)
        wrong = sum(not ok for _, ok in results)
        print(f"{args.clients} clients x {args.questions} questions: {len(results)} answers, {wrong} wrong or failed")
        print(f"latency p50 {statistics.median(latencies):.0f} ms, "
              f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.0f} ms (with {args.clients} clients at once)")
        before = process.memory_info().rss / 2**20
        soak = run(url, args.clients, max(1, args.soak // args.clients))
        after = process.memory_info().rss / 2**20
        wrong += sum(not ok for _, ok in soak)
        print(f"server memory: {before:.0f} MB before, {after:.0f} MB after {len(soak)} more questions "
              f"(growth {after - before:+.0f} MB, bound {MAX_GROWTH_MB} MB)")
        failed = wrong > 0 or after - before > MAX_GROWTH_MB
        print("FAILED" if failed else "OK")
        return 1 if failed else 0
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
