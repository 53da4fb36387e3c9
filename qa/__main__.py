"""Command line: ``python -m qa ask QUESTION``, ``add``, ``list``, ``remove``, ``build``, ``eval``, ``tune``,
``train-reader`` and ``bench``."""

from __future__ import annotations

import argparse
import json
import sys

import qa


def _print_answer(answer: qa.Answer) -> None:
    print(answer.text)
    if answer.citations:
        print()
        for c in answer.citations:
            about = ", ".join(x for x in (c.title if c.title != c.document else "", c.source) if x)
            read = f", reader {c.reader_score:+.2f}" if c.reader_score is not None else ""
            print(f"[{c.number}] {c.document}, sentence {c.sentence} (score {c.score:.3f}{read})"
                  + (f" — {about}" if about else ""))


def _engine(args: argparse.Namespace, *, reader: bool = False, **kwargs) -> qa.Engine:
    """The engine over the command's articles; the reader is loaded only for commands that answer."""
    return qa.load(args.sources or None, index_dir=args.index, model=args.model, backend=args.backend,
                   reader=reader, **kwargs)


def _ask(args: argparse.Namespace) -> int:
    engine = _engine(args, reader=True, top_k=args.top_k)
    answer = engine.ask(" ".join(args.question), articles=args.article)
    if args.json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=1))
    else:
        _print_answer(answer)
    return 0


def _add(args: argparse.Namespace) -> int:
    engine = _engine(args, progress=False)
    failed = 0
    for item in args.items:
        try:
            doc = engine.add(item, title=args.title)
        except qa.DocumentError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"added {doc.name}: {doc.title!r}, {len(doc.sentences)} sentences, {doc.language} ({doc.source})")
    return 2 if failed else 0


def _list(args: argparse.Namespace) -> int:
    for a in _engine(args, progress=False).articles():
        print(f"{a.name}\t{a.title}\t{a.language}\t{a.sentences} sentences\t{a.source}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    engine = _engine(args, progress=False)
    for name in args.names:
        engine.remove(name)
        print(f"removed {name}")
    return 0


def _build(args: argparse.Namespace) -> int:
    engine = _engine(args)
    manifest = engine.index.manifest
    print(f"Index ({manifest.kind}, {manifest.model}, built {manifest.built}): {engine.describe()}")
    return 1 if engine.skipped else 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluation import main as evaluate

    return evaluate(args)


def _tune(args: argparse.Namespace) -> int:
    from .adapters import MANIFEST
    from .tuning import choose_threshold, tune

    adapter = choose_threshold() if args.threshold_only else tune()
    print(f"wrote {adapter}; its figures are in {adapter / MANIFEST}")
    return 0


def _train_reader(args: argparse.Namespace) -> int:
    from .adapters import MANIFEST
    from .reader_training import choose_and_record, train_reader

    adapter = choose_and_record() if args.serving_only else train_reader()
    print(f"wrote {adapter}; the settings chosen on the dev stories are in {adapter / MANIFEST}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .benchmark import main as bench

    return bench(args)


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", default=None, help="sentence-transformers model name or folder "
                        f"(default: the bundled {qa.DEFAULT_MODEL}; {qa.BASE_MODEL} is it untuned)")
    common.add_argument("--backend", choices=qa.BACKENDS, default=qa.DEFAULT_BACKEND,
                        help=f"run the model with ONNX Runtime or PyTorch (default {qa.DEFAULT_BACKEND})")
    common.add_argument("--index", default=None, help="index folder (default: index/, or index/sources-<hash>/ for other articles)")
    common.add_argument("--sources", nargs="*", default=None, metavar="PATH",
                        help="article files or folders (default: seeds/)")
    main = argparse.ArgumentParser(prog="python -m qa", description="Cited answers from news articles.")
    commands = main.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", parents=[common], help="answer a question with citations")
    ask.add_argument("question", nargs="+")
    ask.add_argument("--top-k", type=_positive, default=3, help="how many sentences to cite (default 3)")
    ask.add_argument("--json", action="store_true", help="print the answer as JSON")
    ask.add_argument("--article", action="append", default=None, metavar="NAME",
                     help="search only this article (repeat for several; see `list`)")
    ask.set_defaults(run=_ask)
    add = commands.add_parser("add", parents=[common], help="add articles (files or http(s) URLs) for everyone")
    add.add_argument("items", nargs="+", metavar="FILE_OR_URL", help=".txt, .md, .html, .pdf file, or a URL")
    add.add_argument("--title", default=None, help="the article's title (default: from the page, PDF or first line)")
    add.set_defaults(run=_add)
    listing = commands.add_parser("list", parents=[common], help="list the articles answered from")
    listing.set_defaults(run=_list)
    remove = commands.add_parser("remove", parents=[common], help="remove added articles by name")
    remove.add_argument("names", nargs="+", metavar="NAME")
    remove.set_defaults(run=_remove)
    build = commands.add_parser("build", parents=[common], help="index seeds/ or the given files")
    build.add_argument("paths", nargs="*", metavar="PATH", help="article files or folders (default: seeds/)")
    build.set_defaults(run=_build)
    evaluate = commands.add_parser("eval", parents=[common], help="measure retrieval on a gold set")
    evaluate.add_argument("file", nargs="?", default=None, help="gold set (default: tests/data/gold.jsonl)")
    evaluate.add_argument("--json", action="store_true", help="print the figures as JSON")
    evaluate.add_argument("--untuned", action="store_true", help=f"also measure {qa.BASE_MODEL}, the bundled "
                          "model before fine-tuning")
    evaluate.set_defaults(run=_eval)
    tune = commands.add_parser("tune", help="retrain the default model's shipped adapter (qa/weights/embedder) "
                               "on qa/data/tuning.jsonl and the reader data's train stories, choose its "
                               "threshold on the dev stories and score it on the gold set (about 35 minutes)")
    tune.add_argument("--threshold-only", action="store_true", help="keep the trained adapter; only choose "
                      "its refusal threshold again on the dev stories and score it on the gold set (a minute)")
    tune.set_defaults(run=_tune)
    reader = commands.add_parser("train-reader", help="retrain the reader's shipped adapter (qa/weights/reader) "
                                 "on qa/data/news and choose its settings on the dev stories (tens of minutes)")
    reader.add_argument("--serving-only", action="store_true", help="keep the trained adapter; only choose again "
                        "how many candidates it reads, the cosine's weights and the threshold (a minute)")
    reader.set_defaults(run=_train_reader)
    bench = commands.add_parser("bench", parents=[common], help="measure speed and memory")
    bench.add_argument("--quick", action="store_true", help="skip the large synthetic index sizes")
    bench.set_defaults(run=_bench)
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "build" and args.paths:
        args.sources = args.paths
    try:
        return args.run(args)
    except (qa.DocumentError, qa.IndexProblem, qa.ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
