"""The "Add an article" panel, per-tab articles and the reader, in the real Gradio server and a real Chromium."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

import app
import qa
from conftest import SEED_PLACE
from qa.documents import parse_document
from test_app import _ask_in_page

DOCS = Path(__file__).resolve().parent.parent / "docs"
BRIDGE = (
    "The Zilverbrug in Utrecht will open to trams and bicycles on 14 May 2027.\n\n"
    "Dutch engineers spent six years building the bridge over the Amsterdam-Rijnkanaal.\n\n"
    "The bridge cost 48 million euros, eight million more than planned.\n\n"
    "Cars will not be allowed on the Zilverbrug at any time.\n"
)
BRIDGE_QUESTION = "When will the Zilverbrug open?"
BRIDGE_ANSWER = "The Zilverbrug in Utrecht will open to trams and bicycles on 14 May 2027."
HARBOUR = (
    "The harbour of Harlingen will get a new ferry terminal in 2028, the port authority said on Monday.\n\n"
    "The terminal costs 30 million euros and replaces the old one, built in 1961.\n"
)
HOSTILE_HTML = """<!doctype html>
<html><head><title>&lt;img src=x onerror=alert(1)&gt; Harbour report</title>
<script>alert('head')</script></head>
<body><article>
<h1>&lt;img src=x onerror=alert(1)&gt; Harbour report</h1>
<p>The harbour of Harlingen will get a new ferry terminal in 2028, the port authority said on Monday.
The old terminal, built in 1961, can no longer handle the larger ferries to Terschelling and Vlieland.</p>
<p>Writing &lt;script&gt;alert('text')&lt;/script&gt; or &lt;img src=x onerror=alert(2)&gt; in an article
must show those characters as text. <img src=x onerror="alert(3)"> The terminal costs ${alert(4)} 30 million euros.</p>
<script>alert('body')</script>
<p onmouseover="alert(5)">Construction of the ferry terminal starts in the spring of 2026 and takes two years.</p>
</article></body></html>
"""


@pytest.fixture()
def bridge_file(tmp_path) -> Path:
    path = tmp_path / "zilverbrug opening (2027).txt"
    path.write_text(BRIDGE, encoding="utf-8")
    return path


def _open(browser, server, viewport=None):
    """A fresh page in a fresh browser context (its own cookies and Gradio session)."""
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 1000})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(server)
    page.wait_for_selector(".article-row", timeout=30_000)
    return context, page


def _rows(page) -> list[str]:
    return page.locator(".article-row").all_inner_texts()


def _status_after(page, act) -> str:
    """Do something in the panel and wait for its outcome line."""
    page.evaluate("document.querySelector('#add-status').dataset.seen = document.querySelector('#add-status').innerText")
    act()
    page.wait_for_function("(() => { const s = document.querySelector('#add-status');"
                           " return s.innerText.trim() && s.innerText !== s.dataset.seen; })()", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.pending').length === 0", timeout=60_000)
    return page.locator("#add-status").inner_text()


def _upload(page, *paths: Path) -> str:
    return _status_after(page, lambda: page.locator("#upload input[type=file]").set_input_files([str(p) for p in paths]))


def _sources_block(page) -> str:
    page.locator(".thought-group .title").last.click()
    page.wait_for_timeout(800)
    return page.locator(".message.thought").last.inner_text()


def _yours(page, count: int | None = None):
    """This tab's own articles (the rows with a Remove button), once the list shows ``count`` of them."""
    if count is not None:
        page.wait_for_function(f"document.querySelectorAll('.article-row button.remove').length === {count}",
                               timeout=30_000)
    return page.locator(".article-row", has=page.locator("button.remove"))


@pytest.mark.browser
def test_upload_ask_read_the_citation_remove_and_nobody_else_sees_it(server, browser, client, bridge_file):
    mine, page = _open(browser, server)
    status = _upload(page, bridge_file)
    assert "Added" in status and "4 sentences" in status
    assert _yours(page, 1).count() == 1
    title = _yours(page).locator(".title").inner_text()
    assert title and "yours" in _yours(page).inner_text()
    assert any("shared" in row for row in _rows(page))  # the operator's article is still listed

    _ask_in_page(page, BRIDGE_QUESTION)
    assert "14 May 2027" in page.locator("[data-testid=bot]").first.inner_text()
    sources = _sources_block(page)
    assert f"[1] {title} (uploaded file {bridge_file.name}), sentence 1 " in sources  # named by title and source
    assert app.UPLOADS.as_posix() not in sources  # no server path shown

    page.locator("#check-source label").first.click()  # one click: the reader opens at the cited sentence
    page.wait_for_selector("#reader .focus", timeout=10_000)
    page.wait_for_timeout(600)
    reader = page.locator("#reader")
    assert reader.locator("h3").inner_text() == title
    focus = reader.locator(".focus")
    assert BRIDGE_ANSWER in focus.inner_text() and "[1]" in focus.inner_text()
    assert "cited" in focus.get_attribute("class") and focus.get_attribute("id") == "sentence-1"
    assert focus.is_visible()
    numbered = reader.locator(".sentence sup").all_inner_texts()
    assert numbered == ["1", "2", "3", "4"]
    page.get_by_role("tab", name="Articles").first.click()
    page.wait_for_timeout(300)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "panel.png"), full_page=True)

    # Another visitor (a second browser context) sees only the shared article and never gets cited it.
    other, stranger = _open(browser, server)
    assert not any(title in row for row in _rows(stranger)) and _yours(stranger).count() == 0
    _ask_in_page(stranger, BRIDGE_QUESTION)
    assert title not in _sources_block(stranger)
    other.close()
    # Nor does an API client: /chat answers from the shared articles only.
    reply = client.predict(message=BRIDGE_QUESTION, api_name="/chat")
    assert all(title not in m["content"] for m in reply)
    assert all(a["shared"] for a in client.predict(api_name="/articles"))

    status = _status_after(page, lambda: _yours(page).locator("button.remove").click())
    assert "Removed" in status and title in status
    _yours(page, 0)
    page.locator("#question textarea").fill(BRIDGE_QUESTION)
    page.locator("#question button[data-testid=submit-button]").click()
    page.wait_for_function("document.querySelectorAll('[data-testid=bot]').length > 1", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('.pending').length === 0", timeout=30_000)
    assert title not in _sources_block(page)
    assert page.dialogs == []
    mine.close()


@pytest.mark.browser
def test_html_article_with_script_and_handlers_shows_as_text_and_runs_nothing(server, browser, tmp_path):
    hostile = tmp_path / "<img src=x onerror=alert(9)>.html"
    hostile.write_text(HOSTILE_HTML, encoding="utf-8")
    context, page = _open(browser, server)
    status = _upload(page, hostile)
    assert "Added" in status
    row = _yours(page, 1)
    assert "<img src=x onerror=alert(1)>" in row.locator(".title").inner_text()  # the title, as text
    row.locator("button.read").click()
    page.wait_for_selector("#reader h3", timeout=10_000)
    reader = page.locator("#reader")
    text = reader.inner_text()
    assert "<img src=x onerror=alert(1)> Harbour report" in reader.locator("h3").inner_text()
    assert "<script>alert('text')</script>" in text and "<img src=x onerror=alert(2)>" in text
    assert "${alert(4)}" in text or "30 million euros" in text
    assert reader.locator("script, img, [onerror], [onmouseover]").count() == 0
    assert page.locator("img[src=x]").count() == 0

    _ask_in_page(page, "When will the new ferry terminal in Harlingen be built?")
    assert page.locator("[data-testid=bot] img").count() == 0
    page.locator("#check-source label").first.click()
    page.wait_for_selector("#reader .focus", timeout=10_000)
    page.mouse.move(10, 10)
    for sentence in page.locator("#reader .sentence").all():
        sentence.hover()  # an onmouseover handler would fire here if it had survived
    page.wait_for_timeout(800)
    assert page.dialogs == []
    context.close()


@pytest.mark.browser
def test_bad_input_is_explained_in_the_panel_and_loses_nothing(server, browser, tmp_path, bridge_file):
    context, page = _open(browser, server)
    assert "Added" in _upload(page, bridge_file)
    _yours(page, 1)
    before = _rows(page)

    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    mislabelled = tmp_path / "photo.pdf"
    mislabelled.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    too_big = tmp_path / "huge.txt"
    too_big.write_bytes(b"word " * (qa.SESSION_MAX_BYTES // 5 + 1000))
    status = _upload(page, empty, mislabelled, too_big)
    problems = page.locator("#add-status .problem").all_inner_texts()
    assert len(problems) == 3, status
    assert "Already here" in _upload(page, bridge_file)  # the same file twice is not indexed twice

    page.get_by_role("tab", name="Web page").click()
    for address, reason in [("http://no-such-host.invalid/news", "could not fetch"),  # never resolves
                            ("http://127.0.0.1:9/admin", "refusing")]:  # the server's own network: not for visitors
        page.locator("#url textarea, #url input").first.fill(address)
        status = _status_after(page, lambda: page.locator("#add-url-button").click())
        assert page.locator("#add-status .problem").count() == 1 and reason in status, status

    page.get_by_role("tab", name="Paste text").click()
    page.locator("#pasted textarea").fill("   \n  ")
    _status_after(page, lambda: page.locator("#add-text-button").click())
    assert page.locator("#add-status .problem").count() == 1

    oversized = tmp_path / "oversized.txt"  # over the per-file limit: Gradio refuses it before uploading
    oversized.write_bytes(b"word " * (app.MAX_FILE_BYTES // 5 + 10))
    page.get_by_role("tab", name="File").click()
    page.locator("#upload input[type=file]").set_input_files([str(oversized)])
    page.wait_for_selector(".toast-body", timeout=10_000)
    assert "exceed the maximum allowed size" in page.locator(".toast-body").first.inner_text()

    assert _rows(page) == before  # nothing lost, nothing half-added
    _ask_in_page(page, BRIDGE_QUESTION)
    assert "14 May 2027" in page.locator("[data-testid=bot]").first.inner_text()
    context.close()


@pytest.mark.browser
def test_pasted_text_with_a_title_is_listed_and_answers(server, browser):
    context, page = _open(browser, server)
    page.get_by_role("tab", name="Paste text").click()
    page.locator("#pasted-title textarea, #pasted-title input").first.fill("Bridge <notes>")
    page.locator("#pasted textarea").fill(BRIDGE)
    status = _status_after(page, lambda: page.locator("#add-text-button").click())
    assert "Added: “Bridge <notes>”" in status
    assert "Bridge <notes>" in _yours(page, 1).locator(".title").inner_text()
    _ask_in_page(page, "How much did the bridge cost?")
    assert "48 million euros" in page.locator("[data-testid=bot]").first.inner_text()
    assert "Bridge <notes>" in _sources_block(page)

    page.locator("#ask-about input").click()  # ask about this article only: the seed is not searched
    page.get_by_role("option", name="Bridge <notes> (yours)").click()
    page.locator("#question textarea").fill("Where is the factory?")
    page.locator("#question button[data-testid=submit-button]").click()
    page.wait_for_function("document.querySelectorAll('[data-testid=bot]').length > 1", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('.pending').length === 0", timeout=30_000)
    assert "Alabuga" not in page.locator("[data-testid=bot]").last.inner_text()
    assert all("Bridge <notes>" in label for label in page.locator("#check-source label").all_inner_texts())
    context.close()


@pytest.mark.browser
def test_closing_the_tab_frees_its_articles(engine, browser, bridge_file, monkeypatch):
    opened = []
    real_session = engine.session

    def spy():
        opened.append(real_session())
        closed = opened[-1].close

        def close():
            opened.append("closed")
            closed()

        opened[-1].close = close
        return opened[-1]

    monkeypatch.setattr(engine, "session", spy)
    demo = app.build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", **app.LAUNCH_OPTIONS)
    try:
        context, page = _open(browser, url)
        assert "Added" in _upload(page, bridge_file)
        context.close()
        deadline = time.time() + 15  # Gradio notices the closed tab when its heartbeat stream ends
        while "closed" not in opened and time.time() < deadline:
            time.sleep(0.25)
        assert opened.count("closed") == 1
    finally:
        demo.close()


def test_api_restricts_to_one_shared_article_and_says_when_it_is_unknown(client, engine):
    names = [a["name"] for a in client.predict(api_name="/articles")]
    assert names == [a.name for a in engine.articles()]
    reply = client.predict(message="Where is the factory?", article=names[0], api_name="/chat")
    assert "Alabuga" in reply[0]["content"]
    with pytest.raises(Exception, match="no-such-article"):
        client.predict(message="Where is the factory?", article="no-such-article", api_name="/chat")


def test_reader_escapes_everything_and_marks_what_was_cited(engine, factory_answer):
    answer = factory_answer
    document = engine.document(answer.citations[0].document)
    page = app.reader_html(document, answer.citations, focus=answer.citations[0].sentence)
    first = answer.citations[0]
    assert f'<span id="sentence-{first.sentence}" class="sentence cited focus">' in page
    assert page.count('class="sentence') == len(document.sentences)
    assert page.count("sentence cited") == sum(c.document == document.name for c in answer.citations)
    assert first.answer.removeprefix("de ") == SEED_PLACE and f"<strong>{first.answer}</strong>" in page  # the answer
    assert "<script" not in app.status_html([(False, "<script>alert(1)</script>.txt: empty")])


def test_answering_words_are_marked_in_the_reader_and_the_sources_and_stay_escaped(engine, factory_answer):
    answer, span = factory_answer, factory_answer.citations[0].answer
    sources = app.sources_text(engine, answer)
    assert span.removeprefix("de ") == SEED_PLACE and f"**{span}**" in sources
    quote = sources.replace("**", "")  # the bold marks around the span, not anything else, changed
    assert f"»Het Witte Huis heeft beelden vrijgegeven van een faciliteit in de {SEED_PLACE}" in quote
    hostile = parse_document("Een <i>fabriek</i> staat in <b>Kazan</b>, zegt men.".encode(), name="x.txt")
    sentence = hostile.sentences[0]
    start = sentence.text.index("<b>Kazan")
    cited = dataclasses.replace(answer.citations[0], document="x.txt", sentence=sentence.number, text=sentence.text,
                                highlights=((start, start + len("<b>Kazan<")),))
    page = app.reader_html(hostile, [cited])
    assert "<strong>&lt;b&gt;Kazan&lt;</strong>" in page and "<b>Kazan" not in page and "<i>" not in page


@pytest.mark.browser
def test_a_citation_deep_in_an_article_opens_the_reader_scrolled_to_it(server, browser):
    context, page = _open(browser, server, viewport={"width": 1280, "height": 800})
    _ask_in_page(page, "Welke straaljager koopt Iran van Rusland?")
    page.locator("#check-source label").first.click()
    page.wait_for_selector("#reader .focus", timeout=10_000)
    page.wait_for_timeout(800)
    focus = page.locator("#reader .focus")
    assert focus.get_attribute("id") == "sentence-13" and "SU-35" in focus.inner_text()
    in_view = page.evaluate("""() => {
        const r = document.querySelector('#reader .focus').getBoundingClientRect();
        return r.top >= 0 && r.bottom <= window.innerHeight; }""")
    assert in_view
    context.close()


@pytest.mark.browser
def test_two_additions_at_once_both_land(server, browser, bridge_file):
    context, page = _open(browser, server)
    page.get_by_role("tab", name="Paste text").click()
    page.locator("#pasted textarea").fill(HARBOUR)
    page.get_by_role("tab", name="File").click()
    page.locator("#upload input[type=file]").set_input_files([str(bridge_file)])
    page.get_by_role("tab", name="Paste text").click()
    page.locator("#add-text-button").click()  # while the file is still being embedded
    rows = _yours(page, 2)
    assert any("Zilverbrug" in t or "zilverbrug" in t for t in rows.all_inner_texts())
    _ask_in_page(page, "When will the harbour of Harlingen get a new ferry terminal?")
    assert "Harlingen" in page.locator("[data-testid=bot]").first.inner_text()
    context.close()


def test_sources_are_shown_without_server_paths():
    assert app.shown_source(str(app.UPLOADS / "d41d8cd98f" / "my article.pdf")) == "uploaded file my article.pdf"
    assert app.shown_source(str(qa.ROOT / "seeds" / "a.txt")) == "a.txt"
    assert app.shown_source("https://example.org/news/1 (2026-11-28)") == "https://example.org/news/1 (2026-11-28)"
    assert app.shown_source("pasted text") == "pasted text"
