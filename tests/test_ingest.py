"""Reading what a reader brings: text, Markdown, saved web pages, PDFs, pasted text and URLs, and every bad input."""

from __future__ import annotations

import io
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pypdf import PdfReader, PdfWriter

from qa import ingest
from qa.documents import MAX_DOCUMENT_BYTES, DocumentError
from qa.ingest import from_bytes, from_file, from_text, from_url, safe_name

ARTICLE_HTML = b"""<!DOCTYPE html>
<html><head><title>Bakery opens in Kazan | City News</title>
<meta property="og:title" content="Bakery opens in Kazan">
<meta name="date" content="2024-03-01"></head>
<body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/sport">Sport</a></li><li>Subscribe to our newsletter</li></ul></nav>
<article><h1>Bakery opens in Kazan</h1>
<p>The new bakery in Kazan opened on Monday with forty workers from the neighbourhood.</p>
<p>It sells bread made from rye flour grown on farms within fifty kilometres of the city.</p>
<p>The owner said she plans a second shop in Yelabuga before the end of the year.</p>
</article>
<div class="comments"><h3>Comments</h3><p>Great news, I will go there tomorrow with my whole family!</p></div>
<footer>Copyright 2024 City News. All rights reserved. Cookie settings.</footer>
</body></html>"""

MENU_ONLY_HTML = b"""<!DOCTYPE html><html><head><title>Home</title></head><body>
<nav><a href="/">Home</a> | <a href="/a">About</a> | <a href="/c">Contact</a></nav></body></html>"""


def pdf_bytes(lines: list[str], *, title: str | None = None, password: str | None = None,
              owner: str | None = None, algorithm: str = "AES-128") -> bytes:
    """A one-page PDF with the lines as real text (Helvetica), optionally with a title, or encrypted
    with a user ``password`` ("" opens it) and an ``owner`` password."""
    content = "BT /F1 12 Tf 72 720 Td 14 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    if title is None and password is None:
        return out
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(out)))
    if title:
        writer.add_metadata({"/Title": title})
    if password is not None:
        writer.encrypt(password, owner, algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


PDF_LINES = ["Drone factory report", "The factory in Yelabuga builds drones for the army.",
             "It opened in March after two years of work."]


def test_text_file_with_headline_takes_it_as_title(tmp_path):
    path = tmp_path / "bakery.txt"
    path.write_text("Bakery opens in Kazan\n\nThe new bakery opened on Monday. It has forty workers.\n", encoding="utf-8")
    doc = from_file(path)
    assert doc.title == "Bakery opens in Kazan"
    assert doc.name == "bakery.txt" and doc.source == str(path)
    assert [s.text for s in doc.sentences][-1] == "It has forty workers."


def test_text_without_headline_is_titled_by_file_name(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text("The new bakery opened on Monday.\nIt has forty workers.\n", encoding="utf-8")
    assert from_file(path).title == "notes.md"


def test_saved_web_page_keeps_article_title_and_date_and_drops_the_rest(tmp_path):
    path = tmp_path / "page.htm"
    path.write_bytes(ARTICLE_HTML)
    doc = from_file(path)
    assert doc.title == "Bakery opens in Kazan"
    assert "2024-03-01" in doc.source
    assert "rye flour" in doc.text and "Yelabuga" in doc.text
    for boilerplate in ("Subscribe", "Copyright", "Cookie", "Great news"):
        assert boilerplate not in doc.text


def test_html_is_recognised_by_content_whatever_the_name(tmp_path):
    path = tmp_path / "download"
    path.write_bytes(ARTICLE_HTML)
    assert "<p>" not in from_file(path).text


def test_pdf_text_and_title(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf_bytes(PDF_LINES))
    doc = from_file(path)
    assert "builds drones for the army" in doc.text
    assert doc.title == "Drone factory report"  # no metadata title: the first line
    path.write_bytes(pdf_bytes(PDF_LINES, title="Metadata title"))
    assert from_file(path).title == "Metadata title"


@pytest.mark.parametrize("algorithm", ["AES-128", "AES-256"])
def test_pdf_encrypted_with_an_empty_password_is_read(tmp_path, algorithm):
    """Copy- or print-restricted PDFs are AES-encrypted with an empty user password: pypdf opens them
    only with its crypto extra (cryptography), which requirements.txt pins."""
    path = tmp_path / "restricted.pdf"
    path.write_bytes(pdf_bytes(PDF_LINES, password="", owner="owner-only", algorithm=algorithm))
    assert PdfReader(path).is_encrypted
    assert "builds drones for the army" in from_file(path).text


def test_pdf_named_txt_is_read_as_pdf(tmp_path):
    path = tmp_path / "report.txt"
    path.write_bytes(pdf_bytes(PDF_LINES))
    assert "%PDF" not in from_file(path).text


def test_title_given_wins(tmp_path):
    path = tmp_path / "page.html"
    path.write_bytes(ARTICLE_HTML)
    assert from_file(path, title="My own title").title == "My own title"


@pytest.mark.parametrize("data, name, reason", [
    (b"", "empty.txt", "empty"),
    (b"  \n\t\n", "blank.txt", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "photo.txt", "binary"),
    ("café".encode("cp1252"), "latin.txt", "not UTF-8"),
    (MENU_ONLY_HTML, "menu.html", "no article text"),
    (b"just some words", "fake.pdf", "not a PDF"),
    (pdf_bytes(PDF_LINES)[:300], "cut.pdf", "cannot be read"),
    (pdf_bytes(PDF_LINES, password="secret"), "locked.pdf", "password-protected"),
    (pdf_bytes([]), "scan.pdf", "no text layer"),
])
def test_bad_input_says_what_is_wrong(data, name, reason):
    with pytest.raises(DocumentError, match=reason):
        from_bytes(data, name=name)


def test_over_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.txt"
    path.write_text("A sentence about bread. " * 100, encoding="utf-8")
    with pytest.raises(DocumentError, match="over the 1,000-byte limit"):
        from_file(path)
    with pytest.raises(DocumentError, match="over the"):
        from_text("x" * (MAX_DOCUMENT_BYTES + 1))


def test_folder_and_missing_file(tmp_path):
    with pytest.raises(DocumentError, match="folder"):
        from_file(tmp_path)
    with pytest.raises(DocumentError, match="cannot be read"):
        from_file(tmp_path / "missing.txt")


@pytest.mark.parametrize("raw", ["../../etc/passwd", "C:\\Users\\x\\news.txt", "bad\x00na\nme\x1b.txt", "...", "\u202etxt.exe"])
def test_names_are_made_safe(raw):
    name = safe_name(raw)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert all(ch.isprintable() for ch in name)
    doc = from_bytes(b"The bakery opened on Monday.", name=raw)
    assert doc.name == name and all(s.document == name for s in doc.sentences)


def test_pasted_text_is_never_a_path_or_url():
    assert from_text("/etc/passwd").text == "/etc/passwd"
    doc = from_text("https://example.org/story", title="A link")
    assert doc.text == "https://example.org/story" and doc.source == "pasted text" and doc.title == "A link"
    with pytest.raises(DocumentError, match="empty"):
        from_text("   \n ")


@pytest.fixture()
def web_server():
    """A local web server on 127.0.0.1 serving one article page, a menu-only page and a 404."""
    pages = {"/news/bakery.html": ARTICLE_HTML, "/menu": MENU_ONLY_HTML}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = pages.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body or b"<html><body>Not found</body></html>")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_fetched_and_extracted(web_server):
    doc = from_url(f"{web_server}/news/bakery.html", local=True)
    assert doc.title == "Bakery opens in Kazan" and doc.name == "bakery.html"
    assert doc.source.startswith(f"{web_server}/news/bakery.html")
    assert "rye flour" in doc.text and "Subscribe" not in doc.text


def test_url_problems_are_explained(web_server):
    with pytest.raises(DocumentError, match="404"):
        from_url(f"{web_server}/missing", local=True)
    with pytest.raises(DocumentError, match="no article text"):
        from_url(f"{web_server}/menu", local=True)
    with pytest.raises(DocumentError, match="refusing to fetch an address on this machine"):
        from_url(f"{web_server}/news/bakery.html")  # what a web reader gets
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(DocumentError, match="could not fetch"):
        from_url(f"http://127.0.0.1:{closed}/story", local=True)
    with pytest.raises(DocumentError, match="not an http"):
        from_url("ftp://example.org/file")
