"""Doctests of ``vitlab/`` (collected with ``--doctest-modules``): each runs in its own temporary folder, with the
cache root in a temporary folder of the session, so examples that write files or embeddings touch nothing of the
user's. (``tests/conftest.py`` does the same for the test suite.)"""

from __future__ import annotations

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(scope="session")
def _doctest_cache_root(tmp_path_factory):
    return tmp_path_factory.mktemp("doctest-cache")


@pytest.fixture(autouse=True)
def _doctests_write_to_temporary_folders(request, monkeypatch):
    if isinstance(request.node, DoctestItem):
        import torch

        torch.set_num_threads(1)
        monkeypatch.setenv("VITLAB_CACHE_DIR", str(request.getfixturevalue("_doctest_cache_root")))
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))
