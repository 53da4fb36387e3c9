"""Compose the reply: the article's own sentences, quoted and numbered, or an honest "it does not say".

There is no generative model here, on purpose: the answer *is* the cited text, so it
can never say something the article does not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from .documents import guess_language
from .highlight import highlights, mark
from .search import Hit

MAX_QUOTED = 2
"""At most this many sentences are quoted in the reply; all citations are still listed."""
CLOSE_SECOND = 0.012
"""A second sentence is quoted too when it scores within this of the best one."""

_TEMPLATES = {
    "english": {
        "found": "According to the article:",
        "not_found": "The article does not seem to answer this. The closest passages are:",
        "empty": "Please type a question about the article.",
        "truncated": "(Your question was cut to its first {limit:,} characters.)",
    },
    "dutch": {
        "found": "Volgens het artikel:",
        "not_found": "Het artikel lijkt hier geen antwoord op te geven. De passages die er het dichtst bij komen:",
        "empty": "Stel een vraag over het artikel.",
        "truncated": "(Uw vraag is ingekort tot de eerste {limit:,} tekens.)",
    },
}


@dataclass(frozen=True)
class Citation:
    """One numbered source sentence, exactly as stored in the index."""

    number: int
    document: str
    sentence: int  # 1-based sentence number within the document
    text: str
    score: float
    paragraph: int
    start: int  # character span in the document
    end: int
    title: str = ""  # the article's title, for people
    source: str = ""  # where the article came from: file path, URL or "pasted text"
    highlights: tuple[tuple[int, int], ...] = ()  # character spans of ``text`` that answer the question


@dataclass(frozen=True)
class Answer:
    """The reply to one question: the text with [n] markers and the citations behind it."""

    question: str
    found: bool
    text: str
    citations: tuple[Citation, ...]
    notice: str = ""  # set when the question was empty or had to be shortened

    def to_dict(self) -> dict:
        """Plain data with the same field names as the attributes (for JSON)."""
        return asdict(self)


def reply_language(question: str) -> str:
    """Answer in Dutch to a Dutch question, otherwise in English."""
    return guess_language(question) if question.strip() else "english"


def empty_answer(question: str) -> Answer:
    """What an empty or blank question gets: a friendly prompt, no search."""
    text = _TEMPLATES[reply_language(question)]["empty"]
    return Answer(question=question, found=False, text=text, citations=(), notice=text)


def compose(question: str, hits: list[Hit], *, threshold: float, notice: str = "",
            articles: Mapping[str, tuple[str, str]] | None = None) -> Answer:
    """Number the hits, quote the best (its answering words in bold), and decide whether the article answers.

    ``found`` rests on the best dense (cosine) score alone: fused scores mix in word
    overlap, which says little about whether the article answers the question. ``articles`` maps
    each article's name to its (title, source) for the citations.
    """
    articles = articles or {}
    words = _TEMPLATES[reply_language(question)]
    citations = tuple(
        Citation(number=n, document=h.passage.document, sentence=h.passage.number, text=h.passage.text,
                 score=round(h.score, 4), paragraph=h.passage.paragraph, start=h.passage.start, end=h.passage.end,
                 title=articles.get(h.passage.document, ("", ""))[0],
                 source=articles.get(h.passage.document, ("", ""))[1],
                 highlights=highlights(question, h.passage.text))
        for n, h in enumerate(hits, start=1)
    )
    found = bool(hits) and max(h.dense for h in hits) >= threshold
    if found:
        quoted = [c for c in citations[:MAX_QUOTED] if c.score >= citations[0].score - CLOSE_SECOND]
        body = " ".join(f"{_quote(mark(c.text, c.highlights))} [{c.number}]" for c in quoted)
        text = f"{words['found']} {body}"
    else:
        text = "\n".join([words["not_found"], *(f"[{c.number}] {_quote(c.text)}" for c in citations)])
    if notice:
        text = f"{text}\n{notice}"
    return Answer(question=question, found=found, text=text, citations=citations, notice=notice)


def _quote(text: str) -> str:
    """Put a sentence in quotation marks, unless it already opens with one."""
    return text if text[:1] in "“\"'‘„«" else f"“{text}”"


def truncation_notice(question: str, limit: int) -> str:
    return _TEMPLATES[reply_language(question)]["truncated"].format(limit=limit)
