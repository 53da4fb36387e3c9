"""The web chat: Gradio over ``qa.load()``, and nothing but presentation.

    python app.py                      # http://127.0.0.1:7860, the bundled article
    python app.py --share --auth me:secret
    python app.py my_article.html      # other shared articles
    QA_API_TOKEN=... python app.py     # the JSON API's operator endpoints switched on

The JSON API (qa/http_api.py: /api/v1/..., /healthz, /docs) is served on the same port, over the same
engine. Each browser tab gets its own ``qa.Session`` (kept in ``gr.State``, never a global): the articles a
visitor adds live there, in memory, and nobody else sees them. The operator's articles are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import html
import io
import itertools
import os
import sys
from pathlib import Path
from typing import Sequence

# Before gradio is imported: no telemetry, no hub look-ups, and loopback never through a proxy.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["NO_PROXY"] = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")]))

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from gradio.utils import get_upload_folder  # noqa: E402

import qa  # noqa: E402
from qa import http_api  # noqa: E402
from qa.answer import mark, markdown_escape, markdown_unescape  # noqa: E402
from qa.ingest import MAX_FILE_BYTES  # noqa: E402

EXAMPLES = [
    "Where is the factory?",
    "Waar staat de fabriek?",
    "When could the factory be fully operational?",
    "Which port do the drones pass through?",
    "Welke straaljager koopt Iran van Rusland?",
    "What is the capital of France?",
]
CONCURRENCY = 4
"""Questions answered at the same time; more wait in Gradio's queue (at most QUEUE_SIZE)."""
QUEUE_SIZE = 64
ADD_CONCURRENCY = 2
"""Articles embedded at the same time (all visitors together): embedding is the heavy part."""
SESSION_IDLE_SECONDS = 2 * 3600
"""A tab's own articles are freed after this long without use (and at once when the tab closes)."""
UPLOAD_TYPES = [".txt", ".html", ".htm", ".pdf", ".md"]
LAUNCH_OPTIONS = {"max_file_size": MAX_FILE_BYTES, "show_error": False}
"""For every ``launch()``: Gradio refuses a file over qa's per-file limit before it is even uploaded."""
UPLOADS = Path(get_upload_folder()).resolve()
"""Where Gradio keeps uploads."""
ALL = ""
"""The "Ask about" value meaning every article."""


def _text_of(content) -> str:
    """The plain text of a message's content, whichever shape Gradio gives it."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list):
        return " ".join(_text_of(part) for part in content)
    return ""


def earlier_questions(history: list[dict]) -> list[str]:
    """The user's earlier questions; the assistant's replies and sources blocks are not questions."""
    return [_text_of(m.get("content")) for m in history or [] if isinstance(m, dict) and m.get("role") == "user"]


def shown_source(source: str) -> str:
    """Where an article came from, for people: a URL or "pasted text" as it is, a file by its name only
    (a path on the server means nothing to a visitor and need not be shown to one)."""
    path = Path(source)
    if path.is_relative_to(UPLOADS):
        return f"uploaded file {path.name}"
    return path.name if path.is_absolute() else source


def _in_context(engine: qa.Engine, session: qa.Session | None, citation: qa.Citation) -> str:
    """The cited sentence marked »like this« between its neighbours in the same paragraph."""
    before, after = engine.surroundings(citation, session=session)
    cited = f"»{mark(citation.text, citation.highlights, escape=markdown_escape)}«"
    return " ".join(filter(None, [markdown_escape(before), cited, markdown_escape(after)]))


def sources_text(engine: qa.Engine, answer: qa.Answer, session: qa.Session | None = None) -> str:
    """One entry per citation, in Markdown: the article's title and source, the sentence (answering
    words in bold) and its surroundings."""
    def named(c: qa.Citation) -> str:
        shown = shown_source(c.source)
        return markdown_escape(c.title if c.title == shown else f"{c.title} ({shown})")

    return "\n\n".join(
        f"[{c.number}] {named(c)}, sentence {c.sentence} "
        f"(paragraph {c.paragraph}, score {c.score:.3f})\n{_in_context(engine, session, c)}"
        for c in answer.citations
    )


def reply_messages(engine: qa.Engine, answer: qa.Answer, session: qa.Session | None = None) -> list[dict]:
    """The answer, then its sources as a collapsible block, both in Markdown."""
    reply = [{"role": "assistant", "content": answer.markdown(), "metadata": {}}]
    if answer.citations:
        title = "Sources" if answer.found else "Closest passages"
        reply.append({"role": "assistant", "content": sources_text(engine, answer, session),
                      "metadata": {"title": title, "status": "done"}})
    return reply


def _restricted(article: str | None) -> list[str] | None:
    """``articles=`` for ask(): one article's name, or None for all of them."""
    return [article] if article else None


def make_reply(engine: qa.Engine):
    """The chat function behind the API. An API client has no browser session: it asks the shared articles."""

    def chat(message: str, history: list[dict] | None = None, article: str | None = None) -> list[dict]:
        """Answer ``message``; ``article`` (a name from /articles) restricts the answer to that one article."""
        try:
            answer = engine.ask(_text_of(message), history=earlier_questions(history or []),
                                articles=_restricted(article))
        except qa.DocumentError as exc:
            raise gr.Error(str(exc)) from exc
        return reply_messages(engine, answer)

    return chat


def _size(n: int) -> str:
    return f"{n / 1_000_000:g} MB" if n >= 1_000_000 else f"{n / 1000:g} kB"


def limits_text() -> str:
    """Who sees what, and how much a visitor may add (shown under the panel)."""
    return (f"Articles you add are yours alone: only this browser tab sees them, they are kept in memory and "
            f"never written to disk, and they are gone when you close or reload the page (or after "
            f"{SESSION_IDLE_SECONDS // 3600} hours without use). At most {qa.SESSION_MAX_ARTICLES} articles "
            f"and {_size(qa.SESSION_MAX_BYTES)}. Files: {', '.join(UPLOAD_TYPES)}. Shared articles are the "
            f"operator's: everyone sees them, and only the operator can remove them.")


def status_html(lines: Sequence[tuple[bool, str]]) -> str:
    """Outcome lines for the panel, escaped; a failure is marked as a problem."""
    return "".join(f'<p class="{"ok" if ok else "problem"}">{"" if ok else "⚠ "}{html.escape(text)}</p>'
                   for ok, text in lines)


def article_line(info) -> str:
    """One entry of the article list, as escaped HTML."""
    who = "shared" if info.shared else "yours"
    return (f'<span class="title">{html.escape(info.title)}</span><br>'
            f'<span class="meta">{html.escape(info.language)} · {info.sentences} sentences · {who}</span>')


def reader_html(document: qa.Document, cited: Sequence[qa.Citation] = (), focus: int | None = None) -> str:
    """The article as text, its sentences numbered, those the last answer cited marked with their [n]
    and their answering words in bold.

    Every character of the article is escaped: markup in it shows as text and never runs.
    """
    marks: dict[int, list[int]] = {}
    answering: dict[int, tuple[tuple[int, int], ...]] = {}
    for c in cited:
        if c.document == document.name:
            marks.setdefault(c.sentence, []).append(c.number)
            answering.setdefault(c.sentence, c.highlights)
    paragraphs = []
    for _, sentences in itertools.groupby(document.sentences, key=lambda s: s.paragraph):
        spans = []
        for s in sentences:
            classes = " ".join(["sentence", *(["cited"] if s.number in marks else []),
                                *(["focus"] if s.number == focus else [])])
            cite = "".join(f"[{n}]" for n in marks.get(s.number, []))
            spans.append(f'<span id="sentence-{s.number}" class="{classes}"><sup>{s.number}</sup> '
                         f'{mark(s.text, answering.get(s.number, ()), "<strong>", "</strong>", html.escape)}'
                         f'{f" <b>{cite}</b>" if cite else ""}</span>')
        paragraphs.append(f"<p>{' '.join(spans)}</p>")
    return (f"<h3>{html.escape(document.title)}</h3>"
            f'<p class="meta">{html.escape(shown_source(document.source))} · {html.escape(document.language)} · '
            f"{len(document.sentences)} sentences</p>{''.join(paragraphs)}")


READER_PLACEHOLDER = '<p class="meta">Press “Read” beside an article, or pick a source under the chat.</p>'
SCROLL_TO_FOCUS = """() => { setTimeout(() => {
    const s = document.querySelector('#reader .focus') || document.querySelector('#reader .cited');
    if (s) s.scrollIntoView({block: 'center'}); }, 300); }"""
PANEL_CSS = """
.ok { margin: 2px 0; }
.problem { color: var(--error-text-color); margin: 2px 0; }
.title { font-weight: 600; }
.meta { color: var(--body-text-color-subdued); font-size: 0.9em; }
"""
READER_CSS = PANEL_CSS + """
.sentence sup { color: var(--body-text-color-subdued); }
.cited { background: #fff3a3; color: #000; }
.focus { outline: 2px solid #e0a800; }
"""


def close_session(session) -> None:
    """Gradio's delete_callback: free a tab's articles when its state is dropped."""
    if session is not None:
        session.close()


def build_app(engine: qa.Engine) -> gr.Blocks:
    """The page: the chat, the "Add an article" panel with the list of articles, and the reader; plus the API."""
    chat = make_reply(engine)

    def library_of(session):
        """Where this tab's questions go: its session, or the shared articles if the session has expired."""
        return session if session is not None else engine

    def listing(session, about: str = ALL):
        """The article list and the "Ask about" choices; the choice is kept while its article is there."""
        infos = library_of(session).articles()
        choices = [("All articles", ALL),
                   *((f"{a.title} ({'shared' if a.shared else 'yours'})", a.name) for a in infos)]
        return infos, gr.Dropdown(choices=choices, value=about if any(a.name == about for a in infos) else ALL)

    def start():
        session = engine.session()
        return session, *listing(session)

    def end(request: gr.Request):
        """The tab was closed or reloaded: free its articles now rather than when Gradio's state expires."""
        demo.state_holder.delete_state(request.session_hash)

    def on_submit(message: str, shown: list[dict], session, about: str):
        if not message.strip():
            return "", shown, gr.skip(), gr.skip()
        asked = {"role": "user", "content": markdown_escape(message), "metadata": {}}  # shown as typed
        history = [{**m, "content": markdown_unescape(_text_of(m["content"]))} for m in shown or []]
        library = library_of(session)
        try:
            answer = library.ask(message, history=earlier_questions(history), articles=_restricted(about))
        except qa.DocumentError as exc:  # the article asked about is gone
            reply, citations = [{"role": "assistant", "content": markdown_escape(str(exc)), "metadata": {}}], ()
        else:
            reply, citations = reply_messages(engine, answer, session), answer.citations
        checks = [(f"[{c.number}] {c.title}, sentence {c.sentence}", str(c.number)) for c in citations]
        return ("", [*(shown or []), asked, *reply], citations,
                gr.Radio(choices=checks, value=None, visible=bool(checks)))

    def outcome(session, about, attempts, progress):
        """Run each attempt (label, add) and say how each went; the articles already there are untouched."""
        session = session if session is not None else engine.session()
        lines = []
        for label, add in attempts:
            known = {a.name for a in session.articles()}
            try:
                document = add(session, lambda fraction, message: progress(fraction, desc=message))
            except qa.DocumentError as exc:
                lines.append((False, str(exc)))
                continue
            verb = "Already here (same content)" if document.name in known else "Added"
            lines.append((True, f"{verb}: “{document.title}”, {len(document.sentences)} sentences{label}."))
        return session, status_html(lines), *listing(session, about)

    def add_files(session, about, paths, progress=gr.Progress()):
        """Each uploaded file in turn; the upload box is emptied for the next one."""
        return *outcome(session, about, [(f" (from {os.path.basename(path)})",
                                          lambda s, report, path=path: s.add_file(path, name=os.path.basename(path),
                                                                                 progress=report))
                                         for path in paths or []], progress), None

    def add_text(session, about, text, title, progress=gr.Progress()):
        return outcome(session, about, [("", lambda s, report: s.add_text(text, title=title.strip() or None,
                                                                          progress=report))], progress)

    def add_url(session, about, url, title, progress=gr.Progress()):
        return outcome(session, about, [("", lambda s, report: s.add_url(url.strip(), title=title.strip() or None,
                                                                         progress=report))], progress)

    def remove(session, about, name: str):
        try:
            if session is None:
                raise qa.DocumentError("This tab's articles have expired; reload the page to start again.")
            title = next((a.title for a in session.articles() if a.name == name), name)
            session.remove(name)
            line = (True, f"Removed “{title}”.")
        except qa.DocumentError as exc:
            line = (False, str(exc))
        return session, status_html([line]), *listing(session, about)

    def open_reader(session, cited, name: str, focus: int | None = None):
        try:
            page = reader_html(library_of(session).document(name), cited, focus)
        except qa.DocumentError as exc:
            page = status_html([(False, str(exc))])
        return page, gr.Tabs(selected="reader")

    def check_source(session, cited, number: str):
        citation = next((c for c in cited if str(c.number) == number), None)
        if citation is None:
            return gr.skip(), gr.skip()
        return open_reader(session, cited, citation.document, citation.sentence)

    with gr.Blocks(title="Ask the article", fill_height=True, analytics_enabled=False) as demo:
        session = gr.State(None, time_to_live=SESSION_IDLE_SECONDS, delete_callback=close_session)
        cited = gr.State(())
        articles = gr.State([])
        gr.Markdown("# Ask the article")
        gr.Markdown("Every answer quotes the articles and cites them [n]; when they do not say, the reply says "
                    "so. Add your own article on the right, and check any citation in the reader.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                chatbot = gr.Chatbot(
                    render_markdown=True, sanitize_html=True, allow_tags=False, latex_delimiters=[], height=520,
                    show_label=False,
                    placeholder="Ask about the articles, in English or Dutch.",
                )
                textbox = gr.Textbox(placeholder="Where is the factory? / Waar staat de fabriek?", show_label=False,
                                     max_length=qa.MAX_QUESTION_CHARS, submit_btn=True, autofocus=True,
                                     elem_id="question")
                checks = gr.Radio(choices=[], label="Check a source in the reader", visible=False,
                                  elem_id="check-source")
                with gr.Row(equal_height=False):
                    about = gr.Dropdown(choices=[("All articles", ALL)], value=ALL, label="Ask about",
                                        elem_id="ask-about", scale=3)
                    clear = gr.ClearButton([textbox, chatbot], value="New conversation", size="sm",
                                           variant="secondary", scale=1)
                gr.Examples(EXAMPLES, inputs=textbox, label="Examples (English and Dutch)")
            with gr.Column(scale=4):
                with gr.Tabs(elem_id="side") as side:
                    with gr.Tab("Articles", id="articles", elem_id="articles-tab"):
                        gr.Markdown("### Add an article")
                        with gr.Tabs(elem_id="add-panel"):
                            with gr.Tab("File", elem_id="tab-file"):
                                upload = gr.File(file_count="multiple", file_types=UPLOAD_TYPES, height=120,
                                                 label="Upload .txt, .html, .pdf or .md", elem_id="upload")
                            with gr.Tab("Paste text", elem_id="tab-text"):
                                pasted_title = gr.Textbox(label="Title (optional)", max_lines=1,
                                                          elem_id="pasted-title")
                                pasted = gr.Textbox(label="Article text", lines=6, elem_id="pasted")
                                add_text_button = gr.Button("Add text", size="sm", elem_id="add-text-button")
                            with gr.Tab("Web page", elem_id="tab-url"):
                                url = gr.Textbox(label="URL", placeholder="https://…", max_lines=1, elem_id="url")
                                url_title = gr.Textbox(label="Title (optional)", max_lines=1)
                                add_url_button = gr.Button("Add page", size="sm", elem_id="add-url-button")
                        status = gr.HTML("", elem_id="add-status", css_template=PANEL_CSS)
                        gr.Markdown(limits_text(), elem_id="limits")
                        gr.Markdown("### Articles")

                        @gr.render(inputs=articles)
                        def article_rows(infos):
                            for info in infos:
                                with gr.Row(key=f"row-{info.name}", elem_classes="article-row", equal_height=False):
                                    gr.HTML(article_line(info), css_template=PANEL_CSS, scale=4,
                                            key=f"line-{info.name}")
                                    read = gr.Button("Read", size="sm", scale=0, min_width=70,
                                                     key=f"read-{info.name}", elem_classes="read")
                                    read.click(lambda s, c, name=info.name: open_reader(s, c, name),
                                               [session, cited], [reader, side],
                                               api_visibility="private").then(None, js=SCROLL_TO_FOCUS)
                                    if not info.shared:
                                        drop = gr.Button("Remove", size="sm", scale=0, min_width=80,
                                                         variant="stop", key=f"remove-{info.name}",
                                                         elem_classes="remove")
                                        drop.click(lambda s, a, name=info.name: remove(s, a, name), [session, about],
                                                   [session, status, articles, about], api_visibility="private")

                    with gr.Tab("Reader", id="reader", elem_id="reader-tab"):
                        reader = gr.HTML(READER_PLACEHOLDER, elem_id="reader", css_template=READER_CSS,
                                         max_height=640, padding=True)

        panel = {"outputs": [session, status, articles, about], "concurrency_id": "add",
                 "concurrency_limit": ADD_CONCURRENCY, "api_visibility": "private"}
        upload.upload(add_files, [session, about, upload], **{**panel, "outputs": [*panel["outputs"], upload]})
        add_text_button.click(add_text, [session, about, pasted, pasted_title], **panel)
        add_url_button.click(add_url, [session, about, url, url_title], **panel)
        textbox.submit(on_submit, [textbox, chatbot, session, about], [textbox, chatbot, cited, checks],
                       api_visibility="private", concurrency_limit=CONCURRENCY)
        checks.input(check_source, [session, cited, checks], [reader, side],
                     api_visibility="private").then(None, js=SCROLL_TO_FOCUS)
        clear.click(lambda: ((), gr.Radio(choices=[], value=None, visible=False)), None, [cited, checks],
                    api_visibility="private")
        demo.load(start, None, [session, articles, about], api_visibility="private")
        demo.unload(end)

        def shared_articles() -> list[dict]:
            """The shared articles (name, title, language, sentences, source): the names /chat's ``article`` takes."""
            return [dataclasses.asdict(a) for a in engine.articles()]

        gr.api(chat, api_name="chat", concurrency_limit=CONCURRENCY)
        gr.api(shared_articles, api_name="articles")
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def json_api(engine: qa.Engine, *, auth: tuple[str, str] | None = None, token: str | None = None) -> FastAPI:
    """The JSON API over the page's engine, bounded like the chat; serve it with
    ``launch(app_kwargs=http_api.beside_gradio(api))``."""
    return http_api.create(engine, token=token, auth=auth, shown_source=shown_source, workers=CONCURRENCY,
                           waiting=QUEUE_SIZE, add_workers=ADD_CONCURRENCY)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``user:password`` from --auth or $QA_AUTH."""
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise SystemExit("--auth / QA_AUTH must look like user:password")
    return user, password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Web chat with cited answers from news articles.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    parser.add_argument("--auth", default=os.environ.get("QA_AUTH"), help="user:password (or $QA_AUTH)")
    parser.add_argument("--model", default=None, help="sentence-transformers model name or folder")
    parser.add_argument("--backend", choices=qa.BACKENDS, default=qa.DEFAULT_BACKEND,
                        help=f"run the model with ONNX Runtime or PyTorch (default {qa.DEFAULT_BACKEND})")
    parser.add_argument("--index", default=None, help="index folder (default: index/, or index/sources-<hash>/ for other articles)")
    parser.add_argument("sources", nargs="*", help="shared article files or folders (default: seeds/)")
    args = parser.parse_args(argv)
    auth = parse_auth(args.auth)

    print("Preparing the model and the index…", flush=True)
    try:
        engine = qa.load(args.sources or None, index_dir=args.index, model=args.model, backend=args.backend)
    except (qa.DocumentError, qa.IndexProblem, qa.ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_app(engine)
    token = os.environ.get("QA_API_TOKEN") or None
    api = json_api(engine, auth=auth, token=token)
    if args.share and not auth:
        print("warning: the share link is public and anyone with it can use this app and its JSON API; "
              "protect it with --auth user:password", flush=True)
    gradio_says = io.StringIO()  # Gradio's own share-link failure text blames a missing file; ours is below
    try:
        with contextlib.redirect_stdout(gradio_says):
            _, local_url, share_url = demo.launch(
                server_name=args.host, server_port=args.port, share=args.share, auth=auth,
                prevent_thread_lock=True, quiet=True, app_kwargs=http_api.beside_gradio(api), **LAUNCH_OPTIONS,
            )
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port} ({exc}); choose another --port", file=sys.stderr)
        return 2
    print(f"Serving {engine.describe()}", flush=True)
    print(f"Local:  {local_url}", flush=True)
    print(f"JSON API: {local_url}api/v1/ask (schema and examples: {local_url}docs); adding and removing "
          f"shared articles {'needs the token in $QA_API_TOKEN' if token else 'is off ($QA_API_TOKEN unset)'}",
          flush=True)
    if args.share:
        print(f"Public: {share_url}" if share_url else
              f"No share link: Gradio's share server could not be reached (offline or blocked); "
              f"the app keeps serving locally at {local_url}", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
