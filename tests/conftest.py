"""Shared fixtures: the real models (embedder and reader), loaded once per test session, the seed article, the app and Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from gradio_client import Client

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app  # noqa: E402
import qa  # noqa: E402
from qa.documents import read_document  # noqa: E402
from qa.embedding import Embedder  # noqa: E402
from qa.index import open_index  # noqa: E402

SEED = qa.ROOT / "seeds" / qa.SEED_ARTICLE
SEED_PLACE = "Alabuga Special Economic Zone, in de Russische republiek Tatarstan"
"""The answer to "Where is the factory?"; on some CPUs the int8 reader's span takes the "de" before it too
(docs/reader.md), so tests compare ``span.removeprefix("de ")``."""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder.load()


@pytest.fixture(scope="session")
def seed_document():
    return read_document(SEED)


@pytest.fixture(scope="session")
def reader() -> qa.Reader:
    return qa.Reader.load()


@pytest.fixture(scope="session")
def engine(embedder, reader, seed_document, tmp_path_factory) -> qa.Engine:
    """The product as a user gets it, over the seed article, with its own index folder."""
    folder = tmp_path_factory.mktemp("index")
    index = open_index([seed_document], embedder, folder)
    return qa.Engine([seed_document], index, embedder, reader=reader)


@pytest.fixture(scope="session")
def factory_answer(engine) -> qa.Answer:
    """The seed question as the product answers it, asked once for the tests that look at its rendering."""
    return engine.ask("Where is the factory?")


@pytest.fixture()
def seeds_copy(tmp_path) -> Path:
    """A private copy of seeds/ that a test may change."""
    folder = tmp_path / "seeds"
    shutil.copytree(qa.ROOT / "seeds", folder)
    return folder


@pytest.fixture(scope="module")
def server(engine):
    demo = app.build_app(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", **app.LAUNCH_OPTIONS)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: apt-get install chromium (scripts/test.sh does)")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()
