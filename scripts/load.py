"""Load test: the Gradio API and the JSON API side by side, many clients at once, over loopback only.

    python scripts/load.py [--clients 20] [--questions 10] [--single 50] [--soak 1000]

Starts `app.py` on a free local port, then for each API (Gradio's /chat through gradio_client, and
POST /api/v1/ask through requests): (1) one client asks 50 questions in turn (the round trip);
(2) 20 concurrent clients ask 10 questions each. Every answer must cite the right sentence
first. (3) 1,000 more questions (half through each API) are asked and the server's resident
memory is compared before and after. Prints p50/p95 latency and errors per API; exits non-zero
on any wrong answer or error, growth past MAX_GROWTH_MB, or a missed JSON target
(single-client p50 <= JSON_SINGLE_P50_MS; with 20 clients a p95 under Gradio's).
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
import requests
from gradio_client import Client

ROOT = Path(__file__).resolve().parent.parent
MAX_GROWTH_MB = 150
"""Allowed growth of the server's resident memory over the soak (caches warming up, allocator slack)."""
JSON_SINGLE_P50_MS = 25
"""Target: one JSON client's round trip, median, on loopback."""
WARM_UP = 10
"""Questions asked through each API before anything is timed."""
# (question, sentence that must be cited first): seed questions the shipped reader answers right (tests/test_answers.py)
QUESTIONS = [
    ("Where is the factory?", 6), ("Welk gevechtsvliegtuig wil Iran kopen?", 13),
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


def gradio_asker(url: str):
    """Ask through Gradio's API (/chat, queued, the reply as Markdown messages): True when the right
    sentence is cited first."""
    client = Client(url, verbose=False)

    def asks(question: str, sentence: int) -> bool:
        reply = client.predict(message=question, api_name="/chat")
        return len(reply) > 1 and f", sentence {sentence} " in reply[1]["content"].splitlines()[0]

    return asks


def json_asker(url: str):
    """Ask through the JSON API (one keep-alive connection per client)."""
    session = requests.Session()

    def asks(question: str, sentence: int) -> bool:
        reply = session.post(f"{url}api/v1/ask", json={"question": question}, timeout=60)
        reply.raise_for_status()
        citations = reply.json()["citations"]
        return bool(citations) and citations[0]["sentence"] == sentence

    return asks


def one_client(make_asker, url: str, questions: list[tuple[str, int]]) -> list[tuple[float, bool]]:
    asks = make_asker(url)
    results = []
    for question, sentence in questions:
        t0 = time.perf_counter()
        try:
            ok = asks(question, sentence)
        except Exception as exc:  # counted, reported, and failing the run
            print(f"error: {question!r}: {exc}", file=sys.stderr)
            ok = False
        results.append((time.perf_counter() - t0, ok))
    return results


def run(make_asker, url: str, clients: int, per_client: int) -> list[tuple[float, bool]]:
    plans = [[QUESTIONS[(c + i) % len(QUESTIONS)] for i in range(per_client)] for c in range(clients)]
    with ThreadPoolExecutor(max_workers=clients) as pool:
        return [r for batch in pool.map(lambda plan: one_client(make_asker, url, plan), plans) for r in batch]


def summary(results: list[tuple[float, bool]]) -> tuple[float, float, int]:
    """p50 and p95 in ms, and the number of wrong or failed answers."""
    latencies = sorted(t * 1000 for t, _ in results)
    return (statistics.median(latencies), latencies[int(0.95 * (len(latencies) - 1))],
            sum(not ok for _, ok in results))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--questions", type=int, default=10, help="per client")
    parser.add_argument("--single", type=int, default=50, help="questions asked by the lone client")
    parser.add_argument("--soak", type=int, default=1000, help="questions asked between the memory readings")
    args = parser.parse_args()

    port = _free_port()
    server = start_server(port)
    url = f"http://127.0.0.1:{port}/"
    process = psutil.Process(server.pid)
    apis = {"Gradio /chat": gradio_asker, "JSON /api/v1/ask": json_asker}
    try:
        wrong, figures = 0, {}
        for name, asker in apis.items():
            run(asker, url, 1, WARM_UP)
            single = summary(run(asker, url, 1, args.single))
            many = summary(run(asker, url, args.clients, args.questions))
            figures[name] = single, many
            wrong += single[2] + many[2]
            print(f"{name:17} 1 client x {args.single}: p50 {single[0]:5.1f} ms, p95 {single[1]:5.1f} ms, "
                  f"{single[2]} wrong or failed | {args.clients} clients x {args.questions}: p50 {many[0]:5.0f} ms, "
                  f"p95 {many[1]:5.0f} ms, {many[2]} wrong or failed", flush=True)
        (_, gradio_many), (json_single, json_many) = figures.values()
        targets = {f"JSON single-client p50 <= {JSON_SINGLE_P50_MS} ms": json_single[0] <= JSON_SINGLE_P50_MS,
                   f"JSON {args.clients} clients: 0 wrong or failed": json_many[2] == 0,
                   f"JSON {args.clients} clients: p95 under Gradio's": json_many[1] < gradio_many[1]}
        for target, met in targets.items():
            print(f"target {'met   ' if met else 'MISSED'} {target}")
        before = process.memory_info().rss / 2**20
        soak = [r for asker in apis.values()
                for r in run(asker, url, args.clients, max(1, args.soak // len(apis) // args.clients))]
        after = process.memory_info().rss / 2**20
        wrong += sum(not ok for _, ok in soak)
        print(f"server memory: {before:.0f} MB before, {after:.0f} MB after {len(soak)} more questions "
              f"(growth {after - before:+.0f} MB, bound {MAX_GROWTH_MB} MB)")
        failed = wrong > 0 or after - before > MAX_GROWTH_MB or not all(targets.values())
        print("FAILED" if failed else "OK")
        return 1 if failed else 0
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
