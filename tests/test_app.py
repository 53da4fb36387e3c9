"""The web chat: the real Gradio server in-process, called through gradio_client and a real Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client

import app
import qa
from conftest import SEED_PLACE
from qa.answer import markdown_escape

ARTIFACTS = Path(__file__).parent / "artifacts"


def _answer_and_sources(reply: list[dict]) -> tuple[str, str]:
    answer = reply[0]["content"]
    sources = next(m["content"] for m in reply[1:] if m["metadata"].get("title") in ("Sources", "Closest passages"))
    return answer, sources


def test_english_question_through_the_api(client, engine, factory_answer):
    reply = client.predict(message="Where is the factory?", api_name="/chat")
    answer, sources = _answer_and_sources(reply)
    assert answer.startswith("**") and "Tatarstan" in answer.split("**")[1] and "[1]" in answer  # the answer first
    seed = engine.document(qa.SEED_ARTICLE)
    # by its title (from seeds/*.title) and file name, in Markdown like the rest of the reply
    assert sources.startswith(f"[1] {markdown_escape(seed.title)} ({markdown_escape(seed.name)}), sentence 6")
    span = factory_answer.citations[0].answer  # the reader's, bold in its quote
    assert span.removeprefix("de ") == SEED_PLACE
    assert f"**{span}**, waarvan" in sources


def test_dutch_question_through_the_api(client, engine):
    reply = client.predict(message="Welke straaljager koopt Iran van Rusland?", api_name="/chat")
    answer, sources = _answer_and_sources(reply)
    assert "SU-35" in answer.split("**")[1]
    seed = engine.document(qa.SEED_ARTICLE)
    assert sources.startswith(f"[1] {markdown_escape(seed.title)} ({markdown_escape(seed.name)}), sentence 13")
    assert "sentence 13" in sources.splitlines()[0]


def test_unanswerable_question_is_said_so_with_closest_passages(client):
    reply = client.predict(message="What is the capital of France?", api_name="/chat")
    answer, _ = _answer_and_sources(reply)
    assert "does not seem to answer" in answer
    assert reply[1]["metadata"]["title"] == "Closest passages"


def test_follow_up_uses_the_conversation(engine):
    chat = app.make_reply(engine)
    first = chat("Where is the factory?", [])
    history = [{"role": "user", "content": "Where is the factory?"}, *first]
    follow = chat("When could it be fully operational?", history)
    assert "**volgend jaar** volledig operationeel" in follow[0]["content"]  # the answering words in bold
    assert app.earlier_questions(history) == ["Where is the factory?"]  # the sources block is no question


def test_two_turn_conversation_through_the_api(client):
    first = client.predict(message="Where is the factory?", api_name="/chat")
    history = [{"role": "user", "content": "Where is the factory?", "metadata": {}}, *first]
    follow = client.predict(message="When could it be fully operational?", history=history, api_name="/chat")
    assert "**volgend jaar** volledig operationeel" in follow[0]["content"]  # the answering words in bold


def test_empty_question_gets_a_prompt_not_a_search(client):
    reply = client.predict(message="   ", api_name="/chat")
    assert "question" in reply[0]["content"] and len(reply) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_share_link_that_cannot_be_made_is_reported_and_the_app_keeps_serving(tmp_path):
    port, dead_end = _free_port(), _free_port()
    # Gradio's request for a tunnel goes to a closed local port instead of the internet: the same
    # failure as offline, and no traffic leaves this machine.
    proxy = f"http://127.0.0.1:{dead_end}"
    env = {**os.environ, **{name: proxy for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")},
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    process = subprocess.Popen([sys.executable, "app.py", "--share", "--port", str(port), "--index", str(tmp_path)],
                               cwd=qa.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines = []
        deadline = time.time() + 240
        while time.time() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("Public:") or line.startswith("No share link"):
                break
        output = "".join(lines)
        assert "the share link is public" in output and "--auth" in output
        assert "Missing file" not in output  # Gradio's misleading text is replaced by one clear line
        assert "No share link" in output and f"127.0.0.1:{port}" in output
        reply = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(message="Waar staat de fabriek?",
                                                                           api_name="/chat")
        assert "Alabuga" in reply[0]["content"]  # and it still answers locally
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_auth_protects_the_app(engine):
    assert app.parse_auth("reader:s3cret") == ("reader", "s3cret")
    with pytest.raises(SystemExit, match="user:password"):
        app.parse_auth("no-colon")
    demo = app.build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1",
                            auth=("reader", "s3cret"))
    try:
        with pytest.raises(Exception):
            Client(url, verbose=False).predict(message="Where is the factory?", api_name="/chat")
        reply = Client(url, auth=("reader", "s3cret"), verbose=False).predict(message="Where is the factory?",
                                                                               api_name="/chat")
        assert "Alabuga" in reply[0]["content"]
    finally:
        demo.close()


def _ask_in_page(page, question: str):
    page.locator("#question textarea").fill(question)
    page.locator("#question button[data-testid=submit-button]").click()
    page.wait_for_function("document.querySelectorAll('[data-testid=bot]').length > 0", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('.pending').length === 0", timeout=30_000)


@pytest.mark.browser
def test_browser_asks_sees_citation_and_expands_sources(server, browser):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(server)
    page.wait_for_selector("#question textarea", timeout=30_000)
    assert "Ask the article" in page.content() and "Waar staat de fabriek?" in page.content()
    _ask_in_page(page, "Where is the factory?")
    bot = page.locator("[data-testid=bot]").first
    assert "Alabuga" in bot.inner_text() and "[1]" in bot.inner_text()
    assert "Tatarstan" in bot.locator("strong").first.inner_text()  # the answer, in bold
    assert "**" not in bot.inner_text()
    page.locator(".thought-group .title").first.click()
    page.wait_for_timeout(800)
    sources = page.locator(".message.thought").first.inner_text()
    assert "sentence 6" in sources and "»Het Witte Huis heeft beelden vrijgegeven" in sources
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)
    page.close()


@pytest.mark.browser
def test_browser_shows_html_in_a_question_as_text(server, browser):
    page = browser.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(server)
    page.wait_for_selector("#question textarea", timeout=30_000)
    question = "<img src=x onerror=alert(1)> Where is the <b>factory</b>?"
    _ask_in_page(page, question)
    user = page.locator("[data-testid=user]").first
    assert "<img src=x onerror=alert(1)>" in user.inner_text()
    assert page.locator("[data-testid=user] img[src=x]").count() == 0
    page.wait_for_timeout(500)
    assert dialogs == []
    page.close()
