"""Sentence splitting: the seed article, Dutch abbreviations, and traceable spans."""

from __future__ import annotations

import pytest

from qa.documents import DocumentError, guess_language, parse_document, read_document, read_documents, split_sentences


def test_seed_article_gives_23_sentences(seed_document):
    assert seed_document.language == "dutch"
    assert len(seed_document.sentences) == 23
    assert seed_document.sentences[5].text.startswith("Het Witte Huis heeft beelden vrijgegeven")
    assert seed_document.sentences[-1].text == "Lees hier het volledige artikel."


def test_a_base_article_is_titled_by_its_sidecar_else_its_headline_else_its_name(seed_document, tmp_path):
    assert seed_document.title.startswith("Witte Huis: Iran helpt Rusland")  # seeds/000_….title
    story = tmp_path / "story.txt"
    story.write_text("Bridge reopens after repairs\nThe bridge reopened on Monday. Traffic is flowing.\n", encoding="utf-8")
    assert read_document(story).title == "Bridge reopens after repairs"
    assert [s.text for s in read_document(story).sentences][0] == "The bridge reopened on Monday."
    story.with_suffix(".title").write_text("  De brug is weer open \n", encoding="utf-8")
    titled = read_document(story)
    assert titled.title == "De brug is weer open" and len(titled.sentences) == 2  # the headline still not indexed
    story.write_text("The bridge reopened on Monday. Traffic is flowing.", encoding="utf-8")
    story.with_suffix(".title").unlink()
    assert read_document(story).title == "story.txt"


def test_every_sentence_traces_back_to_its_exact_source_text(seed_document):
    for number, sentence in enumerate(seed_document.sentences, start=1):
        assert sentence.number == number
        assert " ".join(seed_document.text[sentence.start:sentence.end].split()) == sentence.text
    assert [s.paragraph for s in seed_document.sentences][:7] == [1, 1, 2, 3, 3, 3, 4]


@pytest.mark.parametrize("text, expected", [
    ("Volgens dhr. Jansen kost het ca. 5 mln. euro. Dat is veel.", 2),
    ("Mevr. De Vries en prof. Smit zeiden o.a. dat het klopt. Zie blz. 4 voor meer.", 2),
    ("Hij sprak met dr. Bakker, d.w.z. de arts. Daarna ging hij naar huis.", 2),
])
def test_dutch_abbreviations_do_not_end_sentences(text, expected):
    sentences = split_sentences(text, document="t", language="dutch")
    assert len(sentences) == expected, [s.text for s in sentences]


def test_english_article_is_recognised_and_split():
    doc = parse_document(b"Mr. Smith went to Washington on Friday. He said the plant was ready.", name="en.txt")
    assert doc.language == "english"
    assert [s.text for s in doc.sentences] == ["Mr. Smith went to Washington on Friday.",
                                               "He said the plant was ready."]


def test_blank_lines_separate_paragraphs_and_wrapped_lines_join():
    doc = parse_document(b"Een zin die\ndoorloopt op de volgende regel. Nog een.\n\nTweede alinea hier.", name="x.txt")
    assert [(s.paragraph, s.text) for s in doc.sentences] == [
        (1, "Een zin die doorloopt op de volgende regel."), (1, "Nog een."), (2, "Tweede alinea hier.")]


@pytest.mark.parametrize("data, message", [
    (b"", "empty"), (b"  \n\n ", "empty"), (b"\x00\x01\x02binary", "binary"),
    ("Caf\u00e9 cr\u00e8me".encode("cp1252"), "not UTF-8"),
])
def test_unusable_documents_are_refused_by_name(data, message):
    with pytest.raises(DocumentError, match=message) as info:
        parse_document(data, name="bad.txt")
    assert "bad.txt" in str(info.value)


def test_a_bad_file_does_not_stop_the_others(tmp_path):
    (tmp_path / "good.txt").write_text("Dit is een goed artikel. Het heeft twee zinnen.", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes("Caf\u00e9".encode("cp1252"))
    documents, errors = read_documents([tmp_path])
    assert [d.name for d in documents] == ["good.txt"]
    assert len(errors) == 1 and "bad.txt" in str(errors[0])


def test_language_guess():
    assert guess_language("Waar staat de fabriek en wie heeft het gezegd?") == "dutch"
    assert guess_language("Where is the factory and who said it?") == "english"
