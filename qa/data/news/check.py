"""Check the reader's data: ``python qa/data/news/check.py [ARTICLE ...]`` (all articles by default).

Every question must name one sentence of its article and, when answerable, a minimal answer span
occurring once in it; the format is described in :mod:`qa.reader_data`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run as a script from anywhere

from qa.reader_data import ARTICLES, check_all, summary  # noqa: E402


def main(argv: list[str]) -> int:
    paths = [ARTICLES / Path(a).name for a in argv] or sorted(ARTICLES.glob("*.txt"))
    items, problems = check_all(paths)
    print(summary(items) if items else "no questions")
    print("\n".join(problems) if problems else "OK")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
