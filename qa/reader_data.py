"""The reader's data: news articles the team wrote and the questions asked about them, checked and
split by story (``python qa/data/news/check.py`` prints the check).

The data: ``articles/<lang>_<story>.txt`` (headline on the first line, one paragraph a line) and
``questions/<lang>_<story>.jsonl`` beside it, one question a line::

    {"question": "How far from Moscow is the plant?", "language": "en", "kind": "how far",
     "sentence": "ongeveer 800 kilometer ten oosten van Moskou", "answer": "800 kilometer"}

``sentence`` is a piece of text that occurs in exactly one sentence of the article (as the project's
own splitter cuts it): the answering sentence, or for an unanswerable question (``"answer": null``)
the sentence that comes closest. ``answer`` is the minimal span, occurring exactly once in that
sentence. Articles sharing ``<story>`` tell the same story in two languages; ``split.json`` names
the held-out ("test") and the "dev" stories (training side, for choosing settings), so a story's
articles are never split between training and evaluation; every other story is "train".

Where a story is told in both languages, ``twins/<story>.jsonl`` may say, for every question of both
articles, what the other version (the twin) says to it, one line each::

    {"article": "en_limburg_flood.txt", "question": "How many people died in Belgium?",
     "sentence": "In België zijn drie doden gevallen", "answer": "drie", "agrees": false}

``sentence`` and ``answer`` as above but in the twin (both null where the twin does not answer either);
``agrees`` is true where the twin gives the same fact as the question's own answer, false where it
gives another (the stories' conflicting details), null where the question's own article does not answer.
A citation of the twin is then no longer a mistake by construction (:meth:`Item.unlabelled`).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from .documents import Document, language_votes, read_document

DATA = Path(__file__).resolve().parent / "data" / "news"
ARTICLES, QUESTIONS, SPLIT, TWINS = DATA / "articles", DATA / "questions", DATA / "split.json", DATA / "twins"
FIELDS = {"question", "language", "kind", "sentence", "answer"}
TWIN_FIELDS = {"article", "question", "sentence", "answer", "agrees"}
KINDS = {"who", "what", "when", "where", "how many", "how much", "how far", "how long", "how", "why", "which",
         "yes-no"}
LANGUAGE = {"en": "english", "nl": "dutch"}
MAX_ANSWER_WORDS = 15
SPARE = 8
"""First-stage candidates asked for beyond those kept in training, to fill in for the ones
:meth:`Item.unlabelled` leaves out."""


@dataclass(frozen=True)
class TwinAnswer:
    """What the other language's version of a question's story says to it: its sentence (0-based), its
    answer span, and whether that is the question's own answer (None where the own article has none)."""

    article: str
    sentence: int
    answer: str
    agrees: bool | None


@dataclass(frozen=True)
class Item:
    """One checked question: which sentence (0-based, of the article as split) answers or comes closest."""

    article: str
    story: str
    question: str
    language: str
    kind: str
    sentence: int
    answer: str | None
    twin: TwinAnswer | None = None
    """Where ``twins/`` labels the story: what the twin answers (None: it does not, or no label)."""

    @property
    def answerable(self) -> bool:
        """Whether the question has an answer with all its story's articles loaded (its twin's included)."""
        return self.answer is not None or self.twin is not None

    def is_answer(self, article: str, sentence: int) -> bool:
        """Whether sentence ``sentence`` (0-based) of ``article`` answers: its own, or its twin's labelled one."""
        return ((self.answer is not None and (article, sentence) == (self.article, self.sentence))
                or (self.twin is not None and (article, sentence) == (self.twin.article, self.twin.sentence)))

    def unlabelled(self, article: str) -> bool:
        """Whether ``article`` is the other language's version of this question's story: it mostly says the
        same thing (or, with a conflicting detail, answers what this one does not), so its sentences are
        neither the answer nor safely not the answer: no candidate and no negative to learn from
        (docs/reader.md, attempts 9 and 11)."""
        return article != self.article and story_of(article) == self.story


def story_of(article: str) -> str:
    return article.split("_", 1)[1].rsplit(".", 1)[0]


SPLITS = ("train", "dev", "test")


def story_splits() -> dict[str, str]:
    """The stories ``split.json`` names, each with its split ("test" where named twice); every other
    story is "train"."""
    named = json.loads(SPLIT.read_text(encoding="utf-8")) if SPLIT.is_file() else {}
    return {story: split for split in ("dev", "test") for story in named.get(split, ())}


def article_paths(splits: set[str]) -> list[Path]:
    """The article files of the given splits' stories."""
    return _in_splits(ARTICLES.glob("*.txt"), splits)


def _in_splits(paths, splits: set[str]) -> list[Path]:
    named = story_splits()
    return [p for p in sorted(paths) if named.get(story_of(p.name), "train") in splits]


def data_files(split: str) -> list[Path]:
    """The article, question and twin files of one split's stories. A trained adapter's manifest records
    the digest of the "train" files it learnt from, and that of the "dev" files its settings were chosen
    on (:func:`dev_digest`), so new dev stories or labels mean choosing again (a minute), not training again."""
    named = story_splits()
    return _in_splits([*ARTICLES.glob("*.txt"), *QUESTIONS.glob("*.jsonl")], {split}) + [
        p for p in sorted(TWINS.glob("*.jsonl")) if named.get(p.stem, "train") == split]


def dev_digest() -> str:
    """What a manifest's ``dev_sha256`` records: the digest of the dev stories its settings were chosen on."""
    from .adapters import data_digest

    return data_digest(data_files("dev"))


def load(splits: set[str]) -> tuple[list[Document], list[Item]]:
    """The articles of the given splits and their checked questions (ValueError if any check fails)."""
    paths = article_paths(splits)
    items, problems = check_all(paths)
    if problems:
        raise ValueError("the reader's data does not pass its check:\n" + "\n".join(problems[:20]))
    return [read_document(p) for p in paths], items


def _rows(path: Path, fields: set[str], problems: list[str]):
    """Each line of a JSON-lines file that parses and has exactly ``fields``, with where it is; what does
    not is added to ``problems``."""
    for line, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{path.name}:{line}"
        try:
            row = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            problems.append(f"{where}: not JSON ({exc})")
            continue
        if row is not None and set(row) != fields:
            problems.append(f"{where}: fields {sorted(row)}, expected {sorted(fields)}")
        elif row is not None:
            yield where, row


def check_article(path: Path) -> tuple[list[Item], list[str]]:
    """The questions of one article, and everything wrong with it (one message each, naming the line)."""
    problems: list[str] = []
    name = path.name
    if name[:3] not in ("en_", "nl_"):
        return [], [f"{name}: the name must start with en_ or nl_"]
    document = read_document(path)
    sentences = [s.text for s in document.sentences]
    if document.language != LANGUAGE[name[:2]]:
        problems.append(f"{name}: reads as {document.language}, its name says {LANGUAGE[name[:2]]}")
    if not 12 <= len(sentences) <= 40:
        problems.append(f"{name}: {len(sentences)} sentences, expected 12-40")
    if document.title == name:
        problems.append(f"{name}: no headline on the first line (short, without a final period)")
    qfile = QUESTIONS / (path.stem + ".jsonl")
    if not qfile.is_file():
        return [], problems + [f"{name}: no questions file {qfile.name}"]
    items, seen = [], set()
    for where, row in _rows(qfile, FIELDS, problems):
        if row["language"] not in LANGUAGE or row["kind"] not in KINDS:
            problems.append(f"{where}: language {row['language']!r} / kind {row['kind']!r}")
            continue
        if row["question"] in seen:
            problems.append(f"{where}: asked twice: {row['question']!r}")
        seen.add(row["question"])
        votes = language_votes(row["question"])
        other = next(lang for lang in LANGUAGE.values() if lang != LANGUAGE[row["language"]])
        if votes[other] >= votes[LANGUAGE[row["language"]]] + 2:  # short questions hold few common words
            problems.append(f"{where}: {row['question']!r} reads as {other}, not {row['language']}")
        holding = [i for i, s in enumerate(sentences) if row["sentence"] in s]
        if len(holding) != 1:
            problems.append(f"{where}: sentence {row['sentence']!r} is in {len(holding)} sentences, expected 1")
            continue
        answer = row["answer"]
        if answer is not None:
            count = sentences[holding[0]].count(answer)
            if count != 1 or not answer.strip():
                problems.append(f"{where}: answer {answer!r} occurs {count} times in its sentence, expected 1")
                continue
            if len(answer.split()) > MAX_ANSWER_WORDS or answer == sentences[holding[0]]:
                problems.append(f"{where}: answer {answer!r} is not a minimal span")
        items.append(Item(name, story_of(name), row["question"], row["language"], row["kind"], holding[0], answer))
    return items, problems


def check_all(paths: list[Path]) -> tuple[list[Item], list[str]]:
    items, problems = [], []
    for path in paths:
        found, wrong = check_article(path)
        items += found
        problems += wrong
    unknown = set(story_splits()) - {story_of(p.name) for p in ARTICLES.glob("*.txt")}
    if unknown:
        problems.append(f"split.json names stories without articles: {sorted(unknown)}")
    for story in sorted({i.story for i in items}):
        if (TWINS / f"{story}.jsonl").is_file():
            labelled, wrong = check_twins(story, [i for i in items if i.story == story])
            problems += wrong
            items = [labelled.get((i.article, i.question), i) if i.story == story else i for i in items]
    return items, problems


def check_twins(story: str, items: list[Item]) -> tuple[dict[tuple[str, str], Item], list[str]]:
    """The story's items with what their twin answers (``twins/<story>.jsonl``), and everything wrong
    with that file: each question of both articles once, each sentence and answer found as in
    :func:`check_article`, ``agrees`` set exactly where both articles answer."""
    path = TWINS / f"{story}.jsonl"
    checked = {i.article for i in items}
    sentences = {name: [s.text for s in read_document(ARTICLES / name).sentences]
                 for name in checked | {f"{lang}_{story}.txt" for lang in LANGUAGE} if (ARTICLES / name).is_file()}
    if len(sentences) != 2:
        return {}, [f"{path.name}: the story has {len(sentences)} articles, a twin needs 2"]
    by_key = {(i.article, i.question): i for i in items}
    labelled, problems = {}, []
    for where, row in _rows(path, TWIN_FIELDS, problems):
        item = by_key.get((row["article"], row["question"]))
        if item is None:
            if row["article"] in checked:  # else that article is not being checked
                problems.append(f"{where}: no question {row['question']!r} in {row['article']}")
            continue
        if (item.article, item.question) in labelled:
            problems.append(f"{where}: labelled twice: {row['question']!r}")
        twin = next(name for name in sentences if name != item.article)
        if row["sentence"] is None:
            if row["answer"] is not None or row["agrees"] is not None:
                problems.append(f"{where}: no twin sentence, so answer and agrees must be null")
            labelled[(item.article, item.question)] = item
            continue
        holding = [k for k, s in enumerate(sentences[twin]) if row["sentence"] in s]
        if len(holding) != 1:
            problems.append(f"{where}: sentence {row['sentence']!r} is in {len(holding)} sentences of {twin}, expected 1")
            continue
        answer = row["answer"]
        if not isinstance(answer, str) or not answer.strip() or sentences[twin][holding[0]].count(answer) != 1:
            problems.append(f"{where}: answer {answer!r} must occur once in its sentence of {twin}")
            continue
        if (row["agrees"] is None) != (item.answer is None) or row["agrees"] not in (True, False, None):
            problems.append(f"{where}: agrees must be true or false where {item.article} answers, else null")
            continue
        labelled[(item.article, item.question)] = replace(item, twin=TwinAnswer(twin, holding[0], answer, row["agrees"]))
    missing = [key[1] for key in by_key if key not in labelled]
    if missing:
        problems.append(f"{path.name}: {len(missing)} questions without a line, e.g. {missing[0]!r}")
    return labelled, problems


def summary(items: list[Item]) -> str:
    lines, named = [], story_splits()
    for split in SPLITS:
        chosen = [i for i in items if named.get(i.story, "train") == split]
        if not chosen:
            continue
        arts = Counter(i.article for i in chosen)
        cross = sum(i.language != i.article[:2] for i in chosen)
        unanswerable = sum(i.answer is None for i in chosen)
        lines.append(f"{split}: {len(arts)} articles ({sum(a[:2] == 'en' for a in arts)} en, "
                     f"{sum(a[:2] == 'nl' for a in arts)} nl), {len(chosen)} questions, "
                     f"{cross / len(chosen):.0%} across languages, {unanswerable / len(chosen):.0%} unanswerable")
    twins = [i for i in items if i.twin]
    if twins:
        lines.append(f"twins: {len(twins)} questions answered by the other version of their story "
                     f"({sum(i.twin.agrees is False for i in twins)} with another value, "
                     f"{sum(i.twin.agrees is None for i in twins)} unanswered by their own article)")
    kinds = Counter(i.kind for i in items)
    lines.append("kinds: " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    return "\n".join(lines)
