"""The reader (second stage): its input, its span search, its decisions, and the shipped weights."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from qa.adapters import adapter_digest, data_digest, read_manifest
from qa.answer import compose
from qa.documents import parse_document
from qa.embedding import ADAPTER as EMBEDDER_ADAPTER
from qa.reader import ADAPTER, HEADS, ReaderSettings, Reading, Serving, answers_first, best_span, encode
from qa.reader_data import data_files, dev_digest
from qa.reader_training import COMMAND, TrainingSettings, erase, token_span
from qa.search import Hit


def test_the_candidates_are_read_together_each_between_marks(reader):
    sentences = ["Het ligt 800 kilometer van Moskou.", "Er werken mensen."]
    features = encode(reader.tokenizer, "Hoe ver?", sentences, ReaderSettings())
    tokens = reader.tokenizer.convert_ids_to_tokens(features.ids)
    assert tokens[0] == "<s>" and tokens[-1] == "</s>" and tokens.count("</s>") == 2  # after the question, at the end
    assert len(features.firsts) == len(features.offsets) == 2
    for first, offsets in zip(features.firsts, features.offsets):
        assert tokens[first - 1] == "▁«" and tokens[first + len(offsets)] == "▁»"
    assert [sentences[0][s:e] for s, e in features.offsets[0]][:3] == ["Het", "ligt", "800"]  # no leading spaces
    assert token_span(features.offsets[0], 9, 22) == (2, 3)  # "800 kilometer"
    assert reader.tokenizer.decode(features.ids[features.firsts[1]:features.firsts[1] + len(features.offsets[1])]) \
        == sentences[1]


def test_serving_pools_each_candidate_and_applies_the_heads_as_training_does(reader):
    """numpy's :func:`apply_heads` (serving) and ``ReaderModel.forward`` (training) on the same token states,
    over rows of several candidates and one padded shorter row: the same scores and span logits."""
    import torch

    from qa.model_format import prepare_default_model
    from qa.reader import apply_heads, batch_arrays
    from qa.reader_training import ReaderModel

    torch.manual_seed(0)
    model = ReaderModel(prepare_default_model(progress=False), TrainingSettings())
    model.train(False)
    for head in (model.score, model.span):
        torch.nn.init.normal_(head.bias)
    torch.nn.init.normal_(model.null)
    features = [encode(reader.tokenizer, "Where is the factory?", ["It stands in Alabuga, Tatarstan.",
                       "Kirby spoke on Friday.", "Iran sends the parts by ship."], ReaderSettings()),
                encode(reader.tokenizer, "Waar?", ["In Tatarstan."], ReaderSettings())]
    ids, mask, candidates = batch_arrays(features)
    with torch.no_grad():
        trained = [t.numpy() for t in model.forward(features)]
        states = model.encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                               token_type_ids=torch.zeros(ids.shape, dtype=torch.long)).last_hidden_state.numpy()
    served = apply_heads(model.heads(), states, candidates)
    assert candidates.shape[:2] == (2, 3) and not candidates[1, 1:].any()  # the short row's missing candidates
    for got, want in zip(served, trained, strict=True):  # scores (rows, candidates), starts, ends (rows, tokens)
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-4)


def test_erasing_the_answer_leaves_a_mended_sentence():
    assert erase("About 61,000 passengers were affected, the airline said.", "About 61,000") == \
        "passengers were affected, the airline said."
    assert erase("The union (BNP) called the strike.", "BNP") == "The union called the strike."
    assert erase("The ticket cost 5 euros.", "5 euros") == "The ticket cost."
    assert erase("Tuesday.", "Tuesday") is None  # nothing left to read
    assert erase("The strike began on Tuesday.", "Thursday") is None


def test_erased_examples_refuse_the_answering_sentence_without_its_answer(reader):
    from dataclasses import replace

    from qa.reader_data import load
    from qa.reader_training import TrainingSettings, erased_examples, make_examples

    documents, items = load({"dev"})
    by_name = {d.name: d for d in documents}
    items = [i for i in items if i.answer is not None][:60]
    candidates = [[(i.article, i.sentence), (i.article, (i.sentence + 1) % len(by_name[i.article].sentences))]
                  for i in items]
    examples = make_examples(items, documents, candidates, reader.tokenizer, ReaderSettings(), include_gold=True)
    settings = TrainingSettings(erased=1.0)
    made = erased_examples(examples, documents, reader.tokenizer, settings)
    assert 40 <= len(made) <= len(examples)
    assert erased_examples(examples, documents, reader.tokenizer, replace(settings, erased=0.0)) == []
    originals = {e.item.question: e for e in examples}

    def candidate(features, k):
        return features.ids[features.firsts[k]:features.firsts[k] + len(features.offsets[k])]

    for example in made:
        original = originals[example.item.question]
        assert example.label is None and example.span is None and example.item.answer is None
        assert example.candidates == original.candidates
        gold = original.label
        assert candidate(example.features, 1 - gold) == candidate(original.features, 1 - gold)
        assert original.item.answer not in reader.tokenizer.decode(candidate(example.features, gold))
        assert len(example.features.offsets[gold]) < len(original.features.offsets[gold])


def test_training_candidates_stand_in_a_seeded_order_the_label_and_span_following_the_answer(reader):
    from qa.reader_data import load
    from qa.reader_training import make_examples

    documents, items = load({"dev"})
    by_name = {d.name: d for d in documents}
    items = [i for i in items if i.answer is not None][:40]
    candidates = [[(i.article, (i.sentence + k) % len(by_name[i.article].sentences)) for k in range(4)]
                  for i in items]
    examples, again = (make_examples(items, documents, candidates, reader.tokenizer, ReaderSettings(),
                                     include_gold=True) for _ in range(2))
    assert [e.candidates for e in examples] == [e.candidates for e in again]  # the same order every time
    assert {e.label for e in examples} == {0, 1, 2, 3}  # the answer does not stand where the first stage put it
    for e in examples:
        assert e.candidates[e.label] == (e.item.article, e.item.sentence)
        text = by_name[e.item.article].sentences[e.item.sentence].text
        offsets = e.features.offsets[e.label]
        assert e.item.answer in text[offsets[e.span[0]][0]:offsets[e.span[1]][1]]


def test_the_best_span_respects_order_and_length():
    start = np.array([0.0, 5.0, 0.0, 0.0])
    end = np.array([0.0, 0.0, 1.0, 4.0])
    assert best_span(start, end, longest=4) == (1, 3)
    assert best_span(np.array([0.0, 0.0, 9.0]), np.array([9.0, 0.0, 0.0]), longest=3) in ((2, 2), (0, 0))  # no end before start
    assert best_span(start, end, longest=2) == (1, 2)


def _reading(document: str, number: int, score: float | None) -> Reading:
    sentence = parse_document(f"Zin {number} van {document}.".encode(), name=document).sentences[0]
    return Reading(Hit(sentence, 0.5, 0.5, 0.0), score, (0, 3))


def test_the_best_answer_of_each_article_above_the_threshold_answers_first():
    readings = [_reading("a.txt", 1, 3.0), _reading("a.txt", 2, 2.5), _reading("b.txt", 3, 1.0),
                _reading("c.txt", 4, -2.0), _reading("d.txt", 5, None)]
    a1, a2, b3, c4, d5 = readings
    assert answers_first(readings, 0.0) == ([a1, b3, a2, c4, d5], 2)  # one per article, answers first
    assert answers_first(readings, 5.0) == (readings, 0)
    assert answers_first(readings, -3.0) == ([a1, b3, c4, a2, d5], 3)
    assert answers_first(readings, -3.0, most=2) == ([a1, b3, a2, c4, d5], 2)
    low, high = _reading("a.txt", 1, 1.0), _reading("b.txt", 2, 3.0)  # in the order, below and above
    assert answers_first([low, high], 2.0) == ([high, low], 1)  # the first citation is the answer given


def test_serving_orders_by_one_weight_of_the_cosine_and_scores_by_the_other():
    a, b = (parse_document(f"Zin {n}.".encode(), name=f"{n}.txt").sentences[0] for n in (1, 2))
    hits = [Hit(a, 0.5, 0.8, 0.0), Hit(b, 0.5, 0.2, 0.0)]
    readings = Serving(2, 0.0, order_fusion=10.0, answer_fusion=1.0).readings(hits, np.array([1.0, 2.0]),
                                                                              [(0, 3), (0, 2)])
    assert [r.hit for r in readings] == hits  # 1 + 10 * 0.8 = 9 before 2 + 10 * 0.2 = 4
    assert [r.order_score for r in readings] == pytest.approx([9.0, 4.0])
    assert [r.score for r in readings] == pytest.approx([1.8, 2.2]) and [r.answer for r in readings] == [(0, 3), (0, 2)]
    kept = Serving(2, 0.0, order_fusion=None, answer_fusion=1.0).readings(hits[::-1], np.array([2.0, 1.0]),
                                                                        [(0, 2), (0, 3)])
    assert [r.hit for r in kept] == hits[::-1]  # None: the first stage's order, whatever the reader says
    assert [r.score for r in kept] == pytest.approx([2.2, 1.8])


def test_a_serving_passes_the_seed_checks_only_citing_each_sentence_and_refusing_each_question_as_listed(monkeypatch):
    import qa.reader_training as training

    monkeypatch.setattr(training, "SEED_CHECKS", (("Where?", 6), ("Who won?", None)))
    five, six = (replace(parse_document(b"Zin.", name="seed.txt").sentences[0], number=n) for n in (5, 6))
    hits = [Hit(five, 0.5, 0.8, 0.0), Hit(six, 0.5, 0.2, 0.0)]
    kept = [(hits, np.array([1.0, 3.0]), [(0, 3)] * 2), (hits, np.array([-5.0, -4.0]), [(0, 3)] * 2)]
    assert training._passes(Serving(2, 0.0, order_fusion=0.0), 0.0, kept)
    assert not training._passes(Serving(2, 0.0, order_fusion=10.0), 0.0, kept)  # 1 + 8 before 3 + 2: cites 5
    assert not training._passes(Serving(2, 0.0, order_fusion=0.0), -4.5, kept)  # answers "Who won?"
    assert not training._passes(Serving(2, 0.0, order_fusion=0.0), 3.5, kept)  # refuses "Where?"
    assert training._passes(Serving(2, 0.0, order_fusion=10.0), 2.0, kept)  # 5 first but refused: 6 answers first


def test_off_topic_training_questions_are_put_to_the_other_stories_only(embedder, tmp_path):
    import qa
    from qa.index import open_index
    from qa.reader_data import load, story_of
    from qa.reader_training import TrainingSettings, off_topic_questions

    documents, items = load({"dev"})
    engine = qa.Engine(documents, open_index(documents, embedder, tmp_path), embedder)
    strays, found = off_topic_questions(engine, items, TrainingSettings(candidates=3, off_topic=0.5, seed=1))
    assert 0.35 * len(items) < len(strays) < 0.65 * len(items)
    assert all(s.answer is None and s.kind == "off-topic" for s in strays)
    assert all(len(f) == 3 and all(story_of(article) != s.story for article, _ in f) for s, f in zip(strays, found))
    assert strays == off_topic_questions(engine, items, TrainingSettings(candidates=3, off_topic=0.5, seed=1))[0]


def test_where_sources_differ_the_reply_gives_each_articles_answer():
    readings = [_reading("a.txt", 1, 3.0), _reading("b.txt", 3, 1.0)]
    answer = compose("Hoeveel kost het?", readings, answering=[0, 1], articles={"a.txt": ("Titel A", ""), "b.txt": ("Titel B", "")})
    assert answer.found and answer.answering == (1, 2)
    lines = answer.text.splitlines()
    assert lines[0].startswith("De artikelen") and lines[1].startswith("- **Zin** — ") and "(Titel A)" in lines[1]
    assert "[2] (Titel B)" in lines[2]
    assert [c.answer for c in answer.citations] == ["Zin", "Zin"] and answer.citations[1].reader_score == 1.0


def test_the_seed_question_is_answered_with_the_place(factory_answer):
    answer = factory_answer
    first = answer.citations[0]
    assert answer.found and first.sentence == 6 and first.reader_score is not None
    # the gold span is SEED_PLACE (README's example)
    assert "Tatarstan" in first.answer and answer.text.startswith(f"**{first.answer}** — “")
    assert first.highlights == ((first.text.index(first.answer), first.text.index(first.answer) + len(first.answer)),)


def test_the_shipped_reader_was_trained_on_the_committed_data():
    """Fails when the train stories of qa/data/news changed after the reader was trained (run `python -m qa
    train-reader`), or the dev stories or the embedder after its serving was chosen (`python -m qa
    train-reader --serving-only`); commit qa/weights/reader."""
    manifest = read_manifest(ADAPTER)
    assert manifest["data_sha256"] == data_digest(data_files("train")), f"retrain: {COMMAND}"
    assert manifest["settings"] == json.loads(json.dumps(asdict(TrainingSettings()))), f"retrain: {COMMAND}"
    assert manifest["dev_sha256"] == dev_digest(), f"choose again: {COMMAND} --serving-only"
    assert manifest["first_stage"] == adapter_digest(EMBEDDER_ADAPTER), f"choose again: {COMMAND} --serving-only"
    assert {"candidates", "threshold", "order_fusion", "answer_fusion"} == set(manifest["serving"])
    assert (ADAPTER / HEADS).is_file()
    assert sum(p.stat().st_size for p in ADAPTER.iterdir()) < 10_000_000  # a few MB, never the model


@pytest.mark.parametrize("question", ["What is the capital of France?", "Wat is het recept voor appeltaart?"])
def test_off_topic_questions_are_refused_by_the_reader(engine, question):
    answer = engine.ask(question)
    assert not answer.found and not answer.answering and "**" not in answer.text
    assert all(c.reader_score is not None for c in answer.citations[:engine.reader.serving.candidates])


def test_the_other_language_version_of_a_questions_story_is_never_a_training_candidate(embedder, tmp_path):
    import qa
    from qa.index import open_index
    from qa.reader_data import load
    from qa.reader_training import candidates_for

    documents, items = load({"dev"})  # seven stories of dev are told in both languages
    engine = qa.Engine(documents, open_index(documents, embedder, tmp_path), embedder)
    found = candidates_for(engine, items, 3)
    assert not any(i.unlabelled(article) for i, f in zip(items, found) for article, _ in f)
    assert all(f for f in found) and sum(len(f) == 3 for f in found) >= 0.95 * len(items)  # SPARE mostly fills in
    unfiltered = engine.ask_many([i.question for i in items], top_k=3)
    assert sum(any(i.unlabelled(c.document) for c in a.citations) for i, a in zip(items, unfiltered)) >= 10
    item = next(i for i in items if i.story == "chip_plant_eindhoven")
    other = {"en": "nl", "nl": "en"}[item.article[:2]] + item.article[2:]
    assert item.unlabelled(other) and not item.unlabelled(item.article) and not item.unlabelled("en_x_y.txt")


def test_twin_labels_are_checked_line_by_line(monkeypatch, tmp_path):
    """What the other language's version answers (twins/) is checked like the questions themselves."""
    import json

    import qa.reader_data as data

    monkeypatch.setattr(data, "TWINS", tmp_path)
    story = "limburg_flood"
    items, problems = data.check_all([data.ARTICLES / f"{lang}_{story}.txt" for lang in ("en", "nl")])
    assert not problems and not any(i.twin for i in items)
    answerable = [i for i in items if i.article.startswith("en_") and i.answer is not None]
    died = {"sentence": "In België zijn drie doden gevallen", "answer": "drie", "agrees": False}
    rows = [{"article": i.article, "question": i.question, "sentence": None, "answer": None, "agrees": None}
            for i in items]
    rows[items.index(answerable[0])] |= died
    rows[items.index(answerable[1])] |= {**died, "answer": "vier"}
    rows[items.index(answerable[2])] |= {**died, "agrees": None}
    rows.pop()
    (tmp_path / f"{story}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    labelled, problems = data.check_twins(story, items)
    twin = labelled[(answerable[0].article, answerable[0].question)].twin
    assert twin.article == f"nl_{story}.txt" and twin.answer == "drie" and twin.agrees is False
    assert any("'vier' must occur once" in p for p in problems)
    assert any("agrees must be true or false" in p for p in problems)
    assert any("3 questions without a line" in p for p in problems)
