"""Questions in English and Dutch, paraphrased as people ask them, cited to the right sentence."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import qa
from qa.answer import compose, mark, markdown_unescape
from qa.documents import parse_document
from qa.reader import Reading
from qa.reader_training import SEED_CHECKS
from qa.search import Hit

# (question, sentence number that must be cited first): the checks the reader's serving is chosen to pass,
# and questions of the gold set's held-out third that it is not chosen on
ANSWERABLE = [(q, n) for q, n in SEED_CHECKS if n is not None] + [
    ("Wanneer kan de fabriek volledig draaien?", 7),
    ("Via welke zee worden de drones vervoerd?", 9),
]
UNANSWERABLE = [q for q, n in SEED_CHECKS if n is None] + ["Wat is het recept voor appeltaart?"]


@pytest.mark.parametrize("question, sentence", ANSWERABLE)
def test_first_citation_is_the_answering_sentence(engine, question, sentence):
    answer = engine.ask(question)
    assert answer.found and answer.answering[0] == 1, answer.text
    assert answer.citations[0].sentence == sentence, [(c.sentence, c.score) for c in answer.citations]
    assert answer.citations[0].text in answer.text.replace("**", "") and "[1]" in answer.text


@pytest.mark.parametrize("question", UNANSWERABLE)
def test_unanswerable_questions_are_said_so_and_still_list_passages(engine, question):
    answer = engine.ask(question)
    assert not answer.found
    assert "does not seem to answer" in answer.text or "geen antwoord" in answer.text
    assert len(answer.citations) == 3


def test_citation_fields(engine, factory_answer, seed_document):
    answer = factory_answer
    first = answer.citations[0]
    assert (first.number, first.document, first.sentence) == (1, qa.SEED_ARTICLE, 6)
    assert "Alabuga Special Economic Zone" in first.text and "Tatarstan" in first.text
    assert seed_document.text[first.start:first.end] == first.text
    assert [c.number for c in answer.citations] == [1, 2, 3]
    read = engine.reader.serving.candidates  # the candidates read come first, each with the reader's score
    assert all(c.reader_score is not None for c in answer.citations[:read])
    assert all(c.reader_score is None and not c.answer for c in answer.citations[read:])


def test_dutch_question_gets_a_dutch_reply(engine):
    assert engine.ask("Wat is het recept voor appeltaart?").text.startswith("Het artikel lijkt")
    assert engine.ask("What is the capital of France?").text.startswith("The article does not seem")


def test_without_the_reader_the_first_stage_quotes_its_best_sentence(engine):
    first_stage = engine.with_config(reader=False)
    answer = first_stage.ask("Where is the factory?")
    assert answer.text.startswith("According to the article: “Het Witte Huis heeft beelden")
    assert answer.citations[0].reader_score is None and answer.citations[0].answer == ""
    assert first_stage.ask("Waar staat de fabriek?").text.startswith("Volgens het artikel")


def test_follow_up_question_uses_the_conversation(engine):
    answer = engine.ask("When could it be fully operational?", history=["Where is the factory?"])
    assert answer.found and answer.citations[0].sentence == 7


def test_ask_many_equals_ask(engine):
    questions = ["Where is the factory?", "", "Waar staat de fabriek?"]
    batch = engine.ask_many(questions)
    assert [a.citations for a in batch] == [engine.ask(q).citations for q in questions]


def test_empty_and_long_questions(engine):
    empty = engine.ask("   \n\t ")
    assert not empty.found and empty.citations == () and "question" in empty.text
    long = engine.ask("Where is the factory? " + "x" * 5000)
    assert long.notice and "1,000" in long.text
    with pytest.raises(TypeError, match="str"):
        engine.ask(None)  # type: ignore[arg-type]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qa", *args], cwd=qa.ROOT, capture_output=True, text=True,
                          timeout=300)


def test_command_line_cites_alabuga_first_and_refuses_france(tmp_path):
    index = str(tmp_path / "index")
    result = run_cli("ask", "Where is the factory?", "--index", index)
    assert result.returncode == 0, result.stderr
    first_line = result.stdout.splitlines()[0]
    assert "Alabuga" in first_line and "[1]" in first_line
    assert f"[1] {qa.SEED_ARTICLE}, sentence 6" in result.stdout
    result = run_cli("ask", "--json", "What is the capital of France?", "--index", index, "--top-k", "2")
    data = json.loads(result.stdout)
    assert data["found"] is False and len(data["citations"]) == 2
    assert set(data["citations"][0]) >= {"number", "document", "sentence", "text", "score"}


def test_command_line_build_reports_bad_files(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"\x00\x01")
    result = run_cli("build", str(qa.ROOT / "seeds"), str(tmp_path / "bad.txt"), "--index", str(tmp_path / "i"))
    assert result.returncode == 1
    assert "bad.txt" in result.stderr and "23 sentences" in result.stdout


def test_the_reply_opens_with_the_answer_and_marks_it_inside_the_quote(engine, factory_answer):
    answer = factory_answer
    first = answer.citations[0]
    assert answer.text.count(f"**{first.answer}**") == 2  # the answer, then inside the quote
    assert mark(first.text, first.highlights).replace("**", "") == first.text
    refused = engine.ask("What is the capital of France?")
    assert "**" not in refused.text  # passages that do not answer are listed plain


def test_markdown_reply_escapes_the_article_and_bolds_only_the_answer():
    """What the web page shows: nothing in an article formats or runs, the answering words are bold."""
    sentence = parse_document("Volgens [bronnen](javascript:x) staat de <b>fabriek</b> in *Kazan*, zei `Kirby`_.".encode(),
                              name="x.txt").sentences[0]
    start = sentence.text.index("*Kazan*")
    answer = compose("Waar staat de fabriek?", [Reading(Hit(sentence, 0.9, 0.9, 0.0), 2.0, (start, start + 7))],
                     answering=[0])
    markdown = answer.markdown()
    assert markdown.startswith("**\\*Kazan\\*** — ") and "in **\\*Kazan\\***, zei" in markdown
    assert "\\[bronnen\\](javascript:x)" in markdown and "\\<b\\>fabriek\\</b\\>" in markdown
    assert "\\`Kirby\\`\\_" in markdown
    assert markdown_unescape(markdown) == answer.text  # the same reply, escapes removed
