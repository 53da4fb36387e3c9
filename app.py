"""The web chat: Gradio over ``qa.load()`` / ``.ask()``, and nothing but presentation.

    python app.py                      # http://127.0.0.1:7860, the bundled article
    python app.py --share --auth me:secret
"""

from __future__ import annotations

import argparse
import contextlib
import html
import io
import os
import sys

# Before gradio is imported: no telemetry, no hub look-ups, and loopback never through a proxy.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["NO_PROXY"] = ",".join(filter(None, ["127.0.0.1", "localhost", os.environ.get("NO_PROXY")]))

import gradio as gr  # noqa: E402

import qa  # noqa: E402

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


def _in_context(engine: qa.Engine, citation: qa.Citation) -> str:
    """The cited sentence marked »like this« between its neighbours in the same paragraph."""
    before, after = engine.surroundings(citation)
    return " ".join(filter(None, [before, f"»{citation.text}«", after]))


def sources_text(engine: qa.Engine, answer: qa.Answer) -> str:
    """One entry per citation: where it comes from, and the sentence in its surroundings."""
    return "\n\n".join(
        f"[{c.number}] {c.document}, sentence {c.sentence} (paragraph {c.paragraph}, score {c.score:.3f})\n"
        f"{_in_context(engine, c)}"
        for c in answer.citations
    )


def make_reply(engine: qa.Engine):
    """The chat function behind the API and the page: the answer, then its sources as a block."""

    def chat(message: str, history: list[dict] | None = None) -> list[dict]:
        answer = engine.ask(_text_of(message), history=earlier_questions(history or []))
        reply = [{"role": "assistant", "content": answer.text, "metadata": {}}]
        if answer.citations:
            title = "Sources" if answer.found else "Closest passages"
            reply.append({"role": "assistant", "content": sources_text(engine, answer),
                          "metadata": {"title": title, "status": "done"}})
        return reply

    return chat


def _shown(message: dict) -> dict:
    """A message as the page shows it: every character as text, nothing from it runs as HTML."""
    return {**message, "content": html.escape(_text_of(message["content"]))}


def build_app(engine: qa.Engine) -> gr.Blocks:
    """The page: title, which articles it answers from, examples, and the chat; plus the API."""
    chat = make_reply(engine)

    def on_submit(message: str, shown: list[dict]):
        if not message.strip():
            return "", shown
        asked = {"role": "user", "content": message, "metadata": {}}
        history = [{**m, "content": html.unescape(_text_of(m["content"]))} for m in shown or []]
        reply = chat(message, history)
        return "", [*(shown or []), *(_shown(m) for m in (asked, *reply))]

    with gr.Blocks(title="Ask the article", fill_height=True, analytics_enabled=False) as demo:
        gr.Markdown("# Ask the article")
        gr.Markdown(html.escape(f"Answers from {engine.describe()}. Every answer quotes the article and cites "
                                "it [n]; when the article does not say, the reply says so."))
        chatbot = gr.Chatbot(
            render_markdown=False, sanitize_html=True, allow_tags=False, height=560, show_label=False,
            placeholder="Ask about the article, in English or Dutch.",
        )
        textbox = gr.Textbox(placeholder="Where is the factory? / Waar staat de fabriek?", show_label=False,
                             max_length=qa.MAX_QUESTION_CHARS, submit_btn=True, autofocus=True)
        gr.Examples(EXAMPLES, inputs=textbox, label="Examples (English and Dutch)")
        gr.ClearButton([textbox, chatbot], value="New conversation", size="sm", variant="secondary")
        textbox.submit(on_submit, [textbox, chatbot], [textbox, chatbot], api_visibility="private",
                       concurrency_limit=CONCURRENCY)
        gr.api(chat, api_name="chat", concurrency_limit=CONCURRENCY)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


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
    parser.add_argument("--index", default=None, help="index folder (default: index/)")
    parser.add_argument("sources", nargs="*", help="article files or folders (default: seeds/)")
    args = parser.parse_args(argv)
    auth = parse_auth(args.auth)

    print("Preparing the model and the index…", flush=True)
    try:
        engine = qa.load(args.sources or None, index_dir=args.index, model=args.model, backend=args.backend)
    except (qa.DocumentError, qa.IndexProblem, qa.ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_app(engine)
    if args.share and not auth:
        print("warning: the share link is public and anyone with it can use this app; "
              "protect it with --auth user:password", flush=True)
    gradio_says = io.StringIO()  # Gradio's own share-link failure text blames a missing file; ours is below
    try:
        with contextlib.redirect_stdout(gradio_says):
            _, local_url, share_url = demo.launch(
                server_name=args.host, server_port=args.port, share=args.share, auth=auth,
                prevent_thread_lock=True, quiet=True, max_file_size="1mb", show_error=False,
            )
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port} ({exc}); choose another --port", file=sys.stderr)
        return 2
    print(f"Serving {engine.describe()}", flush=True)
    print(f"Local:  {local_url}", flush=True)
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
