"""Compose the reply: the article's own sentences, quoted and numbered, or an honest "it does not say".

There is no generative model here, on purpose: the answer *is* the cited text, so it
can never say something the article does not.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Callable, Mapping

from .documents import guess_language
from .reader import Reading


_TEMPLATES = {
    "english": {
        "found": "According to the article:",
        "several": "The articles answer this differently, or each in its own words:",
        "not_found": "The article does not seem to answer this. The closest passages are:",
        "empty": "Please type a question about the article.",
        "truncated": "(Your question was cut to its first {limit:,} characters.)",
    },
    "dutch": {
        "found": "Volgens het artikel:",
        "several": "De artikelen geven elk hun eigen antwoord:",
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
    highlights: tuple[tuple[int, int], ...] = ()  # character spans of ``text`` that answer (the reader's span)
    answer: str = ""  # the words of ``text`` that answer, as the reader found them ("" when not read)
    reader_score: float | None = None  # the reader's score, compared with its threshold (None: not read)


@dataclass(frozen=True)
class Answer:
    """The reply to one question: the text with [n] markers and the citations behind it."""

    question: str
    found: bool
    text: str
    citations: tuple[Citation, ...]
    notice: str = ""  # set when the question was empty or had to be shortened
    answering: tuple[int, ...] = ()  # numbers of the citations the reply gives as answers: the first ones, in order

    def to_dict(self) -> dict:
        """Plain data with the same field names as the attributes (for JSON)."""
        return asdict(self)

    def markdown(self) -> str:
        """The reply as Markdown, for chat pages: the article's text escaped, so nothing in it is read
        as formatting or markup, and the answering words in bold."""
        if not self.citations:
            return markdown_escape(self.text)
        chosen = [self.citations[n - 1] for n in self.answering]
        return _reply(self.question, self.citations, chosen, self.notice, markdown_escape)


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


def compose(question: str, readings: list[Reading], *, answering: list[int], notice: str = "",
            articles: Mapping[str, tuple[str, str]] | None = None) -> Answer:
    """Number the candidates and write the reply; ``answering`` holds the positions of the readings that
    answer, in order (decided by the reader, or by the first stage's cosine without one): several when
    articles answer each in their own way. ``articles`` maps each article's name to its (title, source)."""
    articles = articles or {}
    citations = tuple(
        Citation(number=n, document=r.hit.passage.document, sentence=r.hit.passage.number, text=r.hit.passage.text,
                 score=round(r.hit.score, 4), paragraph=r.hit.passage.paragraph, start=r.hit.passage.start,
                 end=r.hit.passage.end, title=articles.get(r.hit.passage.document, ("", ""))[0],
                 source=articles.get(r.hit.passage.document, ("", ""))[1],
                 highlights=(r.answer,) if r.answer[1] > r.answer[0] else (),
                 answer=r.hit.passage.text[r.answer[0]:r.answer[1]],
                 reader_score=None if r.score is None else round(r.score, 4))
        for n, r in enumerate(readings, start=1)
    )
    chosen = [citations[i] for i in answering]
    return Answer(question=question, found=bool(chosen), text=_reply(question, citations, chosen, notice, str),
                  citations=citations, notice=notice, answering=tuple(c.number for c in chosen))


def _reply(question: str, citations: tuple[Citation, ...], chosen: list[Citation], notice: str,
           escape: Callable[[str], str]) -> str:
    """The reply's text, the article's words passed through ``escape``, the answering ones between ``**``."""
    words = _TEMPLATES[reply_language(question)]
    if len(chosen) > 1:
        text = "\n".join([words["several"], *(f"- {_cited(c, escape)} ({escape(c.title or c.document)})"
                                               for c in chosen)])
    elif chosen and chosen[0].answer:
        text = _cited(chosen[0], escape)
    elif chosen:
        text = f"{words['found']} {_cited(chosen[0], escape)}"
    else:
        text = "\n".join([words["not_found"], *(f"[{c.number}] {_quote(c.text, escape(c.text))}" for c in citations)])
    return f"{text}\n{notice}" if notice else text


def _cited(c: Citation, escape: Callable[[str], str]) -> str:
    """``**answer** — “quote, the answer in bold” [n]``, or the quote alone when there is no answer span."""
    quote = f"{_quote(c.text, mark(c.text, c.highlights, escape=escape))} [{c.number}]"
    return f"**{escape(c.answer)}** — {quote}" if c.answer else quote


def mark(text: str, spans: tuple[tuple[int, int], ...], left: str = "**", right: str = "**",
         escape: Callable[[str], str] = str) -> str:
    """``text`` with each span wrapped in the markers (Markdown bold by default); ``escape`` is applied
    to the pieces of text, never to the markers (``html.escape`` for HTML)."""
    out, at = [], 0
    for start, end in spans:
        out += [escape(text[at:start]), left, escape(text[start:end]), right]
        at = end
    return "".join(out + [escape(text[at:])])


def _quote(text: str, shown: str) -> str:
    """``shown`` (``text`` as it is shown) in quotation marks, unless the sentence already opens with one."""
    return shown if text[:1] in "“\"'‘„«" else f"“{shown}”"


def truncation_notice(question: str, limit: int) -> str:
    return _TEMPLATES[reply_language(question)]["truncated"].format(limit=limit)
