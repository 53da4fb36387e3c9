"""Shared fixtures: the real model, loaded once per test session, and the seed article."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import qa  # noqa: E402
from qa.documents import read_document  # noqa: E402
from qa.embedding import Embedder  # noqa: E402
from qa.index import open_index  # noqa: E402

SEED = qa.ROOT / "seeds" / "000_e2981c027b46f4f0.txt"


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder.load()


@pytest.fixture(scope="session")
def seed_document():
    return read_document(SEED)


@pytest.fixture(scope="session")
def engine(embedder, seed_document, tmp_path_factory) -> qa.Engine:
    """The product as a user gets it, over the seed article, with its own index folder."""
    folder = tmp_path_factory.mktemp("index")
    index = open_index([seed_document], embedder, folder)
    return qa.Engine([seed_document], index, embedder)


@pytest.fixture()
def seeds_copy(tmp_path) -> Path:
    """A private copy of seeds/ that a test may change."""
    folder = tmp_path / "seeds"
    shutil.copytree(qa.ROOT / "seeds", folder)
    return folder
