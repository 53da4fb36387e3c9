"""Turn what a reader brings (a file, pasted text, a web address) into a Document.

The type is decided by the content, not only by the name: a PDF named ``.txt`` is read
as a PDF, a binary file is refused. Web pages go through trafilatura, which drops menus,
boilerplate and comments and keeps the title and date; PDFs through pypdf. Every failure
is a :class:`DocumentError` that says what was wrong.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import re
import socket
import unicodedata
from pathlib import Path
from urllib.parse import urlparse

from .documents import (MAX_DOCUMENT_BYTES, Document, DocumentError, TooLarge, headline, make_document,
                        parse_document, read_file)

MAX_FILE_BYTES = 20_000_000
"""Largest file or page accepted before extraction (a PDF or saved page carries much more than its text)."""
MAX_NAME_CHARS = 80
MIN_ARTICLE_CHARS = 60
"""A web page whose extracted text is shorter than this has no article (only menus, a cookie wall...)."""
PASTED = "pasted text"

_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body|meta|title)\b", re.IGNORECASE | re.DOTALL)
_HTML_SUFFIXES = {".html", ".htm", ".xhtml"}


def safe_name(name: str, *, fallback: str = "article") -> str:
    """A file-like name usable in citations: no path separators, control characters or leading dots."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch if unicodedata.category(ch)[0] not in "CZ" or ch == " " else " " for ch in name)
    name = " ".join(name.split()).strip(" .")
    if len(name) > MAX_NAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[: MAX_NAME_CHARS - len(suffix) - 1] + "." + suffix) if dot and len(suffix) <= 5 else name[:MAX_NAME_CHARS]
    return name or fallback


def is_url(text: str) -> bool:
    """An http(s) address with a host (anything else is never fetched)."""
    parsed = urlparse(text.strip())
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and not any(c.isspace() for c in text.strip())


def kind_of(data: bytes, name: str) -> str:
    """"pdf", "html" or "text", by the content first and the name second."""
    if data.startswith(b"%PDF-") or data[:1024].lstrip().startswith(b"%PDF-"):
        return "pdf"
    if _HTML_START.match(data[:4096]):
        return "html"
    if Path(name).suffix.lower() in _HTML_SUFFIXES and b"<" in data[:4096]:
        return "html"
    if Path(name).suffix.lower() == ".pdf":
        raise DocumentError(f"{name}: named .pdf but is not a PDF (no %PDF header)")
    return "text"


def from_bytes(data: bytes, *, name: str, title: str | None = None, source: str = "",
               url: str | None = None) -> Document:
    """Read a file's content, whatever its type; ``name`` is what citations call it."""
    name = safe_name(name)
    if not data.strip():
        raise DocumentError(f"{name}: the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise TooLarge(f"{name}: {len(data):,} bytes is over the {MAX_FILE_BYTES:,}-byte limit for one file")
    kind = kind_of(data, name)
    if kind == "pdf":
        return _from_pdf(data, name=name, title=title, source=source)
    if kind == "html":
        return _from_html(data, name=name, title=title, source=source, url=url)
    return parse_document(data, name=name, title=title, source=source or name)


def from_file(path: str | Path, *, title: str | None = None, name: str | None = None) -> Document:
    """Read one file from disk (``name`` overrides the file name, e.g. for an upload's original name)."""
    path = Path(path)
    data = read_file(path, limit=MAX_FILE_BYTES, what="one file")
    return from_bytes(data, name=name or path.name, title=title, source=str(path))


def from_text(text: str, *, title: str | None = None) -> Document:
    """Pasted text; never taken for a path or an address. Named after its title (or first words)."""
    if not isinstance(text, str):
        raise DocumentError(f"pasted text must be a str, not {type(text).__name__}")
    data = text.encode("utf-8", errors="replace")
    if not text.strip():
        raise DocumentError("the pasted text is empty")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise TooLarge(f"the pasted text is {len(data):,} bytes, over the {MAX_DOCUMENT_BYTES:,}-byte limit")
    digest = hashlib.sha256(data).hexdigest()
    label = (title or "").strip() or headline(text) or " ".join(text.split()[:8])
    name = safe_name(f"{label[:60]} ({digest[:6]})", fallback=f"pasted-{digest[:6]}")
    return make_document(text, name=name, sha256=digest, title=title, source=PASTED)


def from_url(url: str, *, title: str | None = None, local: bool = False) -> Document:
    """Fetch a page with trafilatura and keep its article text.

    Addresses on this machine or the local network are refused unless ``local`` (the operator's
    own command line may use them; a web reader must not make the server fetch them).
    """
    import trafilatura

    url = url.strip()
    if not is_url(url):
        raise DocumentError(f"{url!r} is not an http(s) address")
    if not local:
        _refuse_private(url)
    response = trafilatura.fetch_response(url, config=_trafilatura_config(local=local))
    status = getattr(response, "status", None)
    if response is None or not response.data or (status or 200) >= 400:
        why = f"the server answered {status}" if status and status >= 400 else "unreachable, or this machine is offline"
        raise DocumentError(f"{url}: could not fetch the page ({why})")
    path_name = Path(urlparse(url).path).name or urlparse(url).netloc
    return from_bytes(response.data, name=path_name, title=title, source=url, url=url)


def _refuse_private(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError as exc:
        raise DocumentError(f"{url}: could not fetch the page (cannot resolve {host}: unreachable, "
                            f"or this machine is offline)") from exc
    private = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global)
    if private:
        raise DocumentError(f"{url}: refusing to fetch an address on this machine or a private network ({private[0]})")


def _trafilatura_config(*, local: bool):
    """trafilatura's settings; MIN_OUTPUT_SIZE makes a page with only menus count as having no article."""
    from trafilatura.settings import use_config

    config = use_config()
    config.set("DEFAULT", "MIN_OUTPUT_SIZE", str(MIN_ARTICLE_CHARS))
    config.set("DEFAULT", "SSRF_PROTECTION", "off" if local else "on")
    return config


def _from_html(data: bytes, *, name: str, title: str | None, source: str, url: str | None) -> Document:
    import trafilatura

    extracted = trafilatura.extract(data, url=url, output_format="json", with_metadata=True,
                                    include_comments=False, include_tables=True,
                                    config=_trafilatura_config(local=False))
    found = json.loads(extracted) if extracted else {}
    text = (found.get("text") or "").strip()
    if not text:
        raise DocumentError(f"{name}: no article text found on this page")
    page_title = (found.get("title") or "").strip()
    if found.get("date"):
        source = f"{source or name} ({found['date']})"
    return _checked(text, name=name, sha256=hashlib.sha256(data).hexdigest(), title=title or page_title,
                    source=source)


def _from_pdf(data: bytes, *, name: str, title: str | None, source: str) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(f"{name}: the PDF is password-protected; save an unprotected copy")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except DocumentError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise DocumentError(f"{name}: the PDF cannot be read ({exc})") from exc
    except Exception as exc:  # pypdf raises assorted errors on damaged files
        if "crypt" in type(exc).__name__.lower() or "password" in str(exc).lower():
            raise DocumentError(f"{name}: the PDF is password-protected; save an unprotected copy") from exc
        raise DocumentError(f"{name}: the PDF cannot be read ({type(exc).__name__}: {exc})") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise DocumentError(f"{name}: the PDF has no text layer (scanned or image-only); it would need OCR")
    first_line = text.split("\n", 1)[0].strip()
    return _checked(text, name=name, sha256=hashlib.sha256(data).hexdigest(),
                    title=title or str(meta_title).strip() or (first_line if len(first_line) <= 150 else ""),
                    source=source)


def _checked(text: str, *, name: str, sha256: str, title: str, source: str) -> Document:
    size = len(text.encode("utf-8"))
    if size > MAX_DOCUMENT_BYTES:
        raise TooLarge(f"{name}: its text is {size:,} bytes, over the {MAX_DOCUMENT_BYTES:,}-byte limit for one article")
    return make_document(text, name=name, sha256=sha256, title=title, source=source or name)


def from_any(source: str | Path, *, title: str | None = None) -> Document:
    """A path, an http(s) address, or (for a str with a line break) pasted text; for the operator,
    so addresses on the local network are allowed."""
    if isinstance(source, Path):
        return from_file(source, title=title)
    if not isinstance(source, str):
        raise DocumentError(f"an article must be given as a path, a URL or text, not {type(source).__name__}")
    if is_url(source):
        return from_url(source, title=title, local=True)
    if "\n" in source.strip():
        return from_text(source, title=title)
    if not Path(source).exists():
        raise DocumentError(f"{source}: no such file (to add text itself, use add_text)")
    return from_file(source, title=title)
