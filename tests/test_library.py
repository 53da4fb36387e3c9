"""The reader's own articles: add, ask across, restrict, remove; persisted, atomic, concurrent; sessions; CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import qa
import qa.__main__ as cli
from conftest import SEED
from qa import library as library_module
from qa.documents import DocumentError
from qa.index import library_dir, open_index

BAKERY = """Bakery opens in Kazan

The new bakery in Kazan opened on Monday with forty workers from the neighbourhood.
It sells bread made from rye flour grown on farms within fifty kilometres of the city.

The owner, Alsu Garipova, said she plans a second shop in Yelabuga before the end of the year.
"""
WEATHER = """Storm over Utrecht

Heavy rain fell on Utrecht all Sunday and the river Vecht rose by almost a metre.
The city closed two bridges for cyclists until Tuesday morning.
"""
BAKERY_Q = "How many workers does the new bakery in Kazan have?"
WEATHER_Q = "By how much did the river Vecht rise?"


@pytest.fixture()
def folder(embedder, seed_document, tmp_path) -> Path:
    """An index folder holding the seed article's index, as `qa.load` leaves it."""
    open_index([seed_document], embedder, tmp_path / "index")
    return tmp_path / "index"


def engine_on(folder: Path, embedder, seed_document) -> qa.Engine:
    """An engine as `qa.load` makes it (seed article as base, added articles from the folder)."""
    return qa.Engine([seed_document], open_index([seed_document], embedder, folder), embedder, folder=folder)


@pytest.fixture()
def engine(folder, embedder, seed_document) -> qa.Engine:
    return engine_on(folder, embedder, seed_document)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def names(articles) -> list[str]:
    return [a.name for a in articles]


def test_add_ask_remove_persists(engine, folder, embedder, seed_document, tmp_path):
    doc = engine.add(write(tmp_path / "bakery.txt", BAKERY))
    assert doc.title == "Bakery opens in Kazan" and doc.source == str(tmp_path / "bakery.txt")
    info = engine.articles()[-1]
    assert (info.name, info.title, info.sentences, info.shared) == ("bakery.txt", doc.title, 3, True)
    answer = engine.ask(BAKERY_Q)
    assert answer.found and answer.citations[0].document == "bakery.txt"
    assert "forty workers" in answer.citations[0].text
    assert (answer.citations[0].title, answer.citations[0].source) == (doc.title, doc.source)
    assert answer.to_dict()["citations"][0]["title"] == doc.title

    (tmp_path / "bakery.txt").unlink()  # the index folder keeps its own copy of the text
    again = engine_on(folder, embedder, seed_document)
    assert names(again.articles()) == [seed_document.name, "bakery.txt"]
    assert again.document("bakery.txt").text == doc.text
    assert again.ask(BAKERY_Q).citations[0].document == "bakery.txt"

    removed = again.remove("bakery.txt")
    assert removed.name == "bakery.txt"
    assert names(engine_on(folder, embedder, seed_document).articles()) == [seed_document.name]
    assert [p.name for p in library_dir(folder).iterdir() if p.is_dir()] == []


def test_adding_embeds_only_the_new_sentences(engine, embedder, tmp_path, monkeypatch):
    engine.add_text(WEATHER)
    embedded = []
    original = embedder.passages
    monkeypatch.setattr(embedder, "passages", lambda texts, **kw: embedded.extend(texts) or original(texts, **kw))
    doc = engine.add(write(tmp_path / "bakery.txt", BAKERY))
    assert embedded == [s.text for s in doc.sentences]


def test_same_content_twice_is_indexed_once(engine, tmp_path):
    first = engine.add(write(tmp_path / "bakery.txt", BAKERY))
    second = engine.add(write(tmp_path / "copy-of-bakery.txt", BAKERY))
    assert second == first
    assert names(engine.articles()).count("bakery.txt") == 1 and len(engine.articles()) == 2


def test_same_name_other_content_gets_a_free_name(engine, tmp_path):
    engine.add(write(tmp_path / "news.txt", BAKERY))
    (tmp_path / "b").mkdir()
    other = engine.add(write(tmp_path / "b" / "news.txt", WEATHER))
    assert other.name == "news-2.txt" and all(s.document == "news-2.txt" for s in other.sentences)


def test_bad_additions_and_removals_say_why_and_change_nothing(engine, seed_document, tmp_path):
    before = engine.articles()
    with pytest.raises(DocumentError, match="empty"):
        engine.add(write(tmp_path / "empty.txt", ""))
    with pytest.raises(DocumentError, match="no such file"):
        engine.add(str(tmp_path / "missing.txt"))
    with pytest.raises(DocumentError, match="no added article named 'nope'"):
        engine.remove("nope")
    with pytest.raises(DocumentError, match="base articles"):
        engine.remove(seed_document.name)
    assert engine.articles() == before


def test_ask_restricted_to_articles(engine, seed_document, tmp_path):
    engine.add(write(tmp_path / "bakery.txt", BAKERY))
    engine.add_text(WEATHER)
    weather = engine.articles()[-1].name
    only_seed = engine.ask(BAKERY_Q, articles=[seed_document.name])
    assert {c.document for c in only_seed.citations} == {seed_document.name}
    both = engine.ask(WEATHER_Q, articles=["bakery.txt", weather])
    assert both.citations[0].document == weather and {c.document for c in both.citations} <= {"bakery.txt", weather}
    with pytest.raises(DocumentError, match="no article named 'nope'"):
        engine.ask(BAKERY_Q, articles=["nope"])


def test_small_article_inside_a_big_index_is_found_when_restricted(embedder, seed_document, tmp_path):
    """Restricting inside one FAISS index (an IDSelector) finds the small article's best sentences
    even when the big article's sentences are closer to the question."""
    small = qa.ingest.from_text(BAKERY)
    documents = [seed_document, small]
    engine = qa.Engine(documents, open_index(documents, embedder, tmp_path / "i"), embedder)
    question = "Which drones does Iran supply to Russia?"  # answered by the seed article, not the bakery
    assert engine.ask(question).citations[0].document == seed_document.name
    restricted = engine.ask(question, articles=[small.name], top_k=3)
    alone = qa.Engine([small], open_index([small], embedder, tmp_path / "j"), embedder).ask(question, top_k=3)
    assert [(c.document, c.sentence) for c in restricted.citations] == [(c.document, c.sentence) for c in alone.citations]
    assert [c.score for c in restricted.citations] == pytest.approx([c.score for c in alone.citations], abs=1e-4)


def test_session_articles_are_private_bounded_and_in_memory(engine, folder, tmp_path, monkeypatch):
    on_disk = sorted(str(p) for p in folder.rglob("*"))
    one, other = engine.session(), engine.session()
    doc = one.add_text(WEATHER, title="Rain")
    assert doc.title == "Rain" and doc.source == "pasted text"
    assert [(a.name, a.shared) for a in one.articles()][-1] == (doc.name, False)
    assert names(other.articles()) == names(engine.articles()) and doc.name not in names(engine.articles())
    answer = one.ask(WEATHER_Q)
    assert answer.citations[0].document == doc.name and answer.citations[0].title == "Rain"
    assert other.ask(WEATHER_Q).citations[0].document != doc.name
    assert one.add_text(WEATHER) == doc  # same content: not added twice
    assert one.document(doc.name).text == WEATHER
    assert one.ask(WEATHER_Q).citations[0].sentence == 1
    assert engine.surroundings(answer.citations[0], session=one) == ("", "The city closed two bridges for cyclists "
                                                                         "until Tuesday morning.")
    with pytest.raises(DocumentError, match="refusing to fetch an address on this machine"):
        one.add_url("http://127.0.0.1:9/story")
    assert sorted(str(p) for p in folder.rglob("*")) == on_disk  # nothing written

    with pytest.raises(DocumentError, match="shared article"):
        one.remove(engine.articles()[0].name)
    monkeypatch.setattr(library_module, "SESSION_MAX_ARTICLES", 2)
    one.add_file(write(tmp_path / "bakery.txt", BAKERY))
    with pytest.raises(DocumentError, match="most allowed"):
        one.add_text("A third article.\nWith two lines.")
    one.remove(doc.name)
    assert doc.name not in names(one.articles())
    monkeypatch.setattr(library_module, "SESSION_MAX_BYTES", 100)
    with pytest.raises(DocumentError, match="100-byte limit"):
        one.add_text(WEATHER)
    one.close()
    with pytest.raises(DocumentError, match="closed"):
        one.ask(WEATHER_Q)


def test_session_and_operator_articles_are_ranked_on_one_scale(engine, tmp_path):
    engine.add(write(tmp_path / "bakery.txt", BAKERY))
    session = engine.session()
    weather = session.add_text(WEATHER)
    assert session.ask(WEATHER_Q).citations[0].document == weather.name
    assert session.ask(BAKERY_Q).citations[0].document == "bakery.txt"
    assert {c.document for c in session.ask(BAKERY_Q, articles=[weather.name]).citations} == {weather.name}


def test_session_progress_is_reported(engine):
    seen = []
    engine.session().add_text(WEATHER, progress=lambda fraction, message: seen.append((fraction, message)))
    assert seen[0][0] == 0.0 and seen[-1][0] == 1.0 and "embedded" in seen[-1][1]


def test_question_never_sees_a_half_added_article(engine, tmp_path):
    """Questions answered in a thread while articles are added and removed see whole snapshots only."""
    stop, problems, answered = threading.Event(), [], []

    def ask_loop():
        while not stop.is_set():
            snapshot = engine.library.snapshot
            for part in snapshot.parts:
                total = sum(len(d.sentences) for d in part.documents)
                if part.searcher.index.vectors.ntotal != total or len(part.searcher.index.passages) != total:
                    problems.append("a part with vectors and sentences out of step")
            answer = engine.ask(BAKERY_Q)
            known = {d.name for d in engine.documents} | {d.name for d in snapshot.documents}
            problems.extend(c.document for c in answer.citations if c.document not in known)
            answered.append(answer)

    thread = threading.Thread(target=ask_loop)
    thread.start()
    try:
        for round_ in range(3):
            doc = engine.add(write(tmp_path / f"bakery{round_}.txt", BAKERY + f"\nRound {round_}.\n"))
            engine.remove(doc.name)
    finally:
        stop.set()
        thread.join()
    assert not problems and answered


def test_two_adds_at_once_in_threads(engine, tmp_path):
    docs, errors = [], []

    def add(path):
        try:
            docs.append(engine.add(path))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(write(tmp_path / n, t),)) for n, t in
               (("bakery.txt", BAKERY), ("weather.txt", WEATHER))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(names(engine.articles())[1:]) == ["bakery.txt", "weather.txt"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qa", *args], cwd=qa.ROOT, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def test_two_processes_adding_at_once_both_land(folder, embedder, seed_document, tmp_path):
    paths = [write(tmp_path / "bakery.txt", BAKERY), write(tmp_path / "weather.txt", WEATHER)]
    runs = [subprocess.Popen([sys.executable, "-m", "qa", "add", str(p), "--index", str(folder)], cwd=qa.ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in paths]
    outputs = [r.communicate(timeout=600) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    assert sorted(names(engine_on(folder, embedder, seed_document).articles())[1:]) == ["bakery.txt", "weather.txt"]


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import qa, qa.index
    from qa.embedding import Embedder
    where, what, path = sys.argv[1], sys.argv[2], sys.argv[3]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    engine = qa.load([qa.ROOT / "seeds" / qa.SEED_ARTICLE], index_dir=sys.argv[4], progress=False)
    if where == "embedding":
        Embedder.passages = die
    else:  # after the article's files are written, before the manifest names them
        real = qa.index._write_atomic
        qa.index._write_atomic = lambda p, w: die() if p.name == "manifest.json" else real(p, w)
    engine.add(path) if what == "add" else engine.remove(path)
""")


@pytest.mark.parametrize("where", ["embedding", "manifest"])
def test_add_killed_half_way_leaves_the_previous_library_whole(folder, embedder, seed_document, tmp_path, where):
    engine = engine_on(folder, embedder, seed_document)
    engine.add(write(tmp_path / "weather.txt", WEATHER))
    before = sorted(p.name for p in library_dir(folder).iterdir())
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, where, "add", str(write(tmp_path / "bakery.txt", BAKERY)),
                             str(folder)], cwd=qa.ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    reloaded = engine_on(folder, embedder, seed_document)
    assert names(reloaded.articles()) == [seed_document.name, "weather.txt"]
    assert reloaded.ask(WEATHER_Q).citations[0].document == "weather.txt"
    reloaded.add(tmp_path / "bakery.txt")  # the next change sweeps what the killed one left behind
    assert len([p for p in library_dir(folder).iterdir() if p.is_dir()]) == 2
    assert set(before) <= {p.name for p in library_dir(folder).iterdir()}


def test_remove_killed_half_way_keeps_the_article(folder, embedder, seed_document, tmp_path):
    engine_on(folder, embedder, seed_document).add(write(tmp_path / "weather.txt", WEATHER))
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, "manifest", "remove", "weather.txt", str(folder)],
                            cwd=qa.ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    assert names(engine_on(folder, embedder, seed_document).articles())[-1] == "weather.txt"


def test_damaged_article_vectors_are_embedded_again(folder, embedder, seed_document, tmp_path, capsys):
    engine_on(folder, embedder, seed_document).add(write(tmp_path / "bakery.txt", BAKERY))
    vectors = next(library_dir(folder).glob("*/vectors.npy"))
    vectors.write_bytes(b"garbage")
    again = engine_on(folder, embedder, seed_document)
    assert "embedded again" in capsys.readouterr().err
    assert again.ask(BAKERY_Q).citations[0].document == "bakery.txt"
    engine_on(folder, embedder, seed_document)
    assert "embedded again" not in capsys.readouterr().err  # written back once repaired


def test_damaged_library_manifest_is_reported_and_loses_no_article(folder, embedder, seed_document, tmp_path, capsys):
    engine_on(folder, embedder, seed_document).add(write(tmp_path / "bakery.txt", BAKERY))
    (library_dir(folder) / "manifest.json").write_text("{not json", encoding="utf-8")
    again = engine_on(folder, embedder, seed_document)
    assert "damaged manifest" in capsys.readouterr().err
    assert names(again.articles()) == [seed_document.name, "bakery.txt"]  # read back from its folder
    again.add(write(tmp_path / "weather.txt", WEATHER))  # the next change writes a whole manifest again
    assert names(engine_on(folder, embedder, seed_document).articles()) == [seed_document.name, "bakery.txt",
                                                                            "weather.txt"]
    assert "damaged" not in capsys.readouterr().err


@pytest.fixture()
def in_process_cli(embedder, monkeypatch):
    """The command line run in this process, with the session's model instead of loading it again."""
    monkeypatch.setattr(qa.Embedder, "load", classmethod(lambda cls, name=None, **options: embedder))

    def run(*args: str) -> int:
        return cli.main(list(args))

    return run


def test_cli_add_list_ask_remove(in_process_cli, folder, tmp_path, capsys):
    seed = str(SEED)
    common = ["--index", str(folder), "--sources", seed]
    page = tmp_path / "page.html"
    page.write_bytes((Path(__file__).parent / "test_ingest.py").read_text().split('ARTICLE_HTML = b"""')[1]
                     .split('"""')[0].encode())
    assert in_process_cli("add", str(write(tmp_path / "weather.txt", WEATHER)), str(page), *common) == 0
    out = capsys.readouterr().out
    assert "added weather.txt: 'Storm over Utrecht'" in out and "added page.html: 'Bakery opens in Kazan'" in out
    assert in_process_cli("add", str(tmp_path / "missing.txt"), *common) == 2
    assert "no such file" in capsys.readouterr().err

    assert in_process_cli("list", *common) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in listing] == [qa.SEED_ARTICLE, "weather.txt", "page.html"]

    assert in_process_cli("ask", WEATHER_Q, "--article", "weather.txt", *common) == 0
    out = capsys.readouterr().out
    assert "[1] weather.txt, sentence 1 (score" in out and f" — Storm over Utrecht, {tmp_path / 'weather.txt'}\n" in out
    assert in_process_cli("ask", BAKERY_Q, "--article", "page.html", "--json", *common) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["document"] for c in data["citations"]} == {"page.html"}
    assert data["citations"][0]["title"] == "Bakery opens in Kazan" and "page.html" in data["citations"][0]["source"]

    assert in_process_cli("remove", "weather.txt", *common) == 0
    assert in_process_cli("remove", "weather.txt", *common) == 2
    assert "no added article named 'weather.txt'" in capsys.readouterr().err
    assert in_process_cli("ask", WEATHER_Q, "--article", "weather.txt", *common) == 2
    assert in_process_cli("list", *common) == 0
    assert "weather.txt" not in capsys.readouterr().out


def test_committed_index_still_loads_unchanged(in_process_cli, tmp_path):
    shutil.copytree(qa.ROOT / "index", tmp_path / "index", ignore=shutil.ignore_patterns("sources-*", "library"))
    stamp = (tmp_path / "index" / "vectors.faiss").stat().st_mtime_ns
    engine = qa.load(index_dir=tmp_path / "index", progress=False)
    assert (tmp_path / "index" / "vectors.faiss").stat().st_mtime_ns == stamp
    assert names(engine.articles()) == [qa.SEED_ARTICLE]
