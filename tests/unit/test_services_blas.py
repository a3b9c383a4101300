"""The server process runs numpy's OpenBLAS on one thread (its idle threads spin after each call), unless the
operator set the thread count; `Services.start` does it."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from app.config import Settings
from app.memory import bert_ops
from app.services import Services


@pytest.fixture
def restore_blas():
    before = bert_ops.get_blas_threads()
    yield
    if before is not None:
        bert_ops.set_blas_threads(before)


def test_limit_blas_threads_respects_the_operator(monkeypatch, restore_blas) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    bert_ops.set_blas_threads(2)
    assert bert_ops.limit_blas_threads(1) == 2 and bert_ops.get_blas_threads() == 1
    bert_ops.set_blas_threads(2)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert bert_ops.limit_blas_threads(1) is None and bert_ops.get_blas_threads() == 2


async def test_the_server_process_starts_with_one_blas_thread(tmp_path: Path, monkeypatch, restore_blas) -> None:
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    bert_ops.set_blas_threads(2)
    settings = Settings.from_env({"MEMCHAT_DATA_DIR": str(tmp_path), "MEMCHAT_EMBEDDER": "none"})
    async with AsyncExitStack() as stack:
        await Services.start(settings, stack)
        assert bert_ops.get_blas_threads() == 1
