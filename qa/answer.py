"""Compose the reply: the article's own sentences, quoted and numbered, or an honest "it does not say".

There is no generative model here, on purpose: the answer *is* the cited text, so it
can never say something the article does not.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

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

    def markdown(self) -> str:
        """The reply as Markdown, for chat pages: the article's text escaped, so nothing in it is read
        as formatting or markup, and the answering words in bold."""
        if not self.citations:
            return markdown_escape(self.text)
        return _reply(self.question, self.citations, self.found, self.notice, markdown_escape)


_MARKDOWN_SPECIAL = r"[\\`*_\[\]<>~|$#]"


def markdown_escape(text: str) -> str:
    """``text`` with every character that Markdown (or a page's LaTeX) could act on backslash-escaped."""
    return re.sub(f"({_MARKDOWN_SPECIAL})", r"\\\1", text)


def markdown_unescape(text: str) -> str:
    """The text that :func:`markdown_escape` was given."""
    return re.sub(f"\\\\({_MARKDOWN_SPECIAL})", r"\1", text)


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
    citations = tuple(
        Citation(number=n, document=h.passage.document, sentence=h.passage.number, text=h.passage.text,
                 score=round(h.score, 4), paragraph=h.passage.paragraph, start=h.passage.start, end=h.passage.end,
                 title=articles.get(h.passage.document, ("", ""))[0],
                 source=articles.get(h.passage.document, ("", ""))[1],
                 highlights=highlights(question, h.passage.text))
        for n, h in enumerate(hits, start=1)
    )
    found = bool(hits) and max(h.dense for h in hits) >= threshold
    return Answer(question=question, found=found, text=_reply(question, citations, found, notice, str),
                  citations=citations, notice=notice)


def _reply(question: str, citations: tuple[Citation, ...], found: bool, notice: str,
           escape: Callable[[str], str]) -> str:
    """The reply's text, the article's words passed through ``escape``, the answering ones between ``**``."""
    words = _TEMPLATES[reply_language(question)]
    if found:
        quoted = [c for c in citations[:MAX_QUOTED] if c.score >= citations[0].score - CLOSE_SECOND]
        body = " ".join(f"{_quote(c.text, mark(c.text, c.highlights, escape=escape))} [{c.number}]" for c in quoted)
        text = f"{words['found']} {body}"
    else:
        text = "\n".join([words["not_found"], *(f"[{c.number}] {_quote(c.text, escape(c.text))}" for c in citations)])
    return f"{text}\n{notice}" if notice else text


def _quote(text: str, shown: str) -> str:
    """``shown`` (``text`` as it is shown) in quotation marks, unless the sentence already opens with one."""
    return shown if text[:1] in "“\"'‘„«" else f"“{shown}”"


def truncation_notice(question: str, limit: int) -> str:
    return _TEMPLATES[reply_language(question)]["truncated"].format(limit=limit)
