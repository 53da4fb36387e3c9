"""Which words of a cited sentence answer the question: a number, a date, a name or place.

Why: an answer is a whole quoted sentence, often in the other language (an English
reader, a Dutch quote). Marking the few words that answer lets the reader see the
answer at once. The question word says what kind of words to look for ("how many" a
number, "when" a date, "who"/"where" a name); words the question already contains are
not the answer ("Where is the Alabuga plant?" is not answered by "Alabuga").
"""

from __future__ import annotations

import re
from typing import Callable

_NUMBER_WORDS = ("million|billion|thousand|hundred|percent|per cent|miljoen|miljard|duizend|honderd|procent|"
                 "euro|euros|dollar|dollars|pond|pounds")
_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december|"
           "januari|februari|maart|mei|juni|juli|augustus|oktober")
_NUMBER = re.compile(rf"[$€£]?\s?\d(?:[\d.,]*\d)?(?:\s?(?:%|{_NUMBER_WORDS})\b)*", re.IGNORECASE)
_DATE = re.compile(rf"\b(?:\d{{1,2}}\s)?(?:{_MONTHS})(?:\s\d{{4}})?\b|\b(?:1[89]|20)\d\d\b|"
                   r"\b(?:next|this|last|early|late|volgend|volgende|dit|deze|vorig|vorige|begin|eind)\s"
                   r"(?:year|month|week|spring|summer|autumn|winter|jaar|maand|week|voorjaar|zomer|najaar)\b",
                   re.IGNORECASE)
# A name: capitalised words (joined by particles such as "van", "de", "of"), or a code such as "Su-35".
_NAME = re.compile(r"\b(?:[A-Z][\w'’-]*|\w+-\d+)(?:\s(?:(?:van|de|der|den|of|the|al)\s)?[A-Z][\w'’-]*)*",
                   re.UNICODE)
_WORD = re.compile(r"\w+", re.UNICODE)
# Capitalised adjectives of nationality (Russische, Iranian, British) are not names.
_ADJECTIVE = re.compile(r"\w+(?:se|sche|ian|ish|ese)", re.IGNORECASE)
# "Where" is answered by a name after a word of place: "in de Alabuga ...", "naar ... Makhachkala".
_PLACE_WORD = re.compile(r"\b(?:in|at|near|from|to|into|across|over|via|bij|nabij|naar|vanuit|uit|te|op)\b"
                         r"(?:\W+\w+){0,3}\W*$", re.IGNORECASE)

_KINDS = (  # (question words, kind): first match wins
    (r"how many|how much|hoeveel|what percentage|welk percentage|wat kost|what does .* cost", "number"),
    (r"when|what year|which year|since when|wanneer|welk jaar|sinds wanneer|hoe laat", "date"),
    (r"who|whom|whose|wie|wiens", "name"),
    (r"where|waar|in which|in what|which (?:city|country|region|port|republic|sea|place)|"
     r"in welke|welke (?:stad|land|regio|haven|republiek|zee|plaats)", "place"),
)
_PATTERNS = {"number": _NUMBER, "date": _DATE, "name": _NAME, "place": _NAME}


def answer_kind(question: str) -> str | None:
    """"number", "date", "name" or "place" when the question word asks for one, else None."""
    lowered = question.lower()
    for words, kind in _KINDS:
        if re.search(rf"\b(?:{words})\b", lowered):
            return kind
    return None


def highlights(question: str, sentence: str) -> tuple[tuple[int, int], ...]:
    """Character spans of ``sentence`` that answer ``question``, in order; () when none is found.

    With no telling question word ("What fighter jet ..."), names and numbers count.
    A span whose words all occur in the question is left out, and so are the word that
    opens the sentence (capitalised anyway) and nationality adjectives. A place must
    follow a word of place ("in", "naar", ...).
    """
    asked = {w.lower() for w in _WORD.findall(question)}
    kind = answer_kind(question)
    patterns = [_PATTERNS[kind]] if kind else [_NAME, _NUMBER]
    spans = []
    for pattern in patterns:
        for match in pattern.finditer(sentence):
            start, end = match.start(), match.end()
            start += len(sentence[start:end]) - len(sentence[start:end].lstrip())
            if pattern is _NAME and not _WORD.search(sentence[:start]):  # the sentence's first word
                first = _WORD.search(sentence, start)
                start = first.end() + 1 if first else end
            text = sentence[start:end]
            words = {w.lower() for w in _WORD.findall(text)}
            if (not words or words <= asked
                    or (pattern is _NAME and (_ADJECTIVE.fullmatch(text) or text.lower() in _NUMBER_WORDS))
                    or (kind == "place" and not _PLACE_WORD.search(sentence[:start]))):
                continue
            spans.append((start, end))
    return _merged(spans)


def _merged(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def mark(text: str, spans: tuple[tuple[int, int], ...], left: str = "**", right: str = "**",
         escape: Callable[[str], str] = str) -> str:
    """``text`` with each span wrapped in the markers (Markdown bold by default); ``escape`` is applied
    to the pieces of text, never to the markers (``html.escape`` for HTML)."""
    out, at = [], 0
    for start, end in spans:
        out += [escape(text[at:start]), left, escape(text[start:end]), right]
        at = end
    return "".join(out + [escape(text[at:])])
