"""Time from `python app.py` to its page being served, from an empty model cache or a warm one.

    python scripts/first_start.py --cold      # a new, empty $QA_CACHE_DIR: prepares and converts everything
    python scripts/first_start.py --warm DIR  # an existing cache folder: what every later start costs

Starts app.py on a free local port, asks for the page every 0.1 s until it answers 200, prints the
seconds, stops the app. Under `farm-bench -n 3 -- python scripts/first_start.py --cold` the process
as a whole is timed too (docs/performance.md has the figures and the command that made them).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_SECONDS = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_page(cache: Path) -> float:
    port = free_port()
    env = {**os.environ, "QA_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "NO_PROXY": "127.0.0.1,localhost"}
    start = time.monotonic()
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while time.monotonic() - start < LIMIT_SECONDS:
            if app.poll() is not None:
                raise SystemExit(f"app.py exited with {app.returncode}: {app.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as page:
                    if page.status == 200:
                        return time.monotonic() - start
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"no page after {LIMIT_SECONDS} s")
    finally:
        app.terminate()
        try:
            app.wait(timeout=20)
        except subprocess.TimeoutExpired:
            app.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--cold", action="store_true", help="start from a new, empty model cache")
    group.add_argument("--warm", type=Path, metavar="DIR", help="start with this (already filled) model cache")
    args = parser.parse_args()
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="qa-cold-cache-") as cache:
            print(f"cold start: page served after {time_to_page(Path(cache)):.1f} s", flush=True)
    else:
        print(f"warm start: page served after {time_to_page(args.warm):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
