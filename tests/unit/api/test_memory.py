from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from k2.api.memory import MemoryTrimmer


def test_trims_every_interval_until_stopped() -> None:
    trimmer = MemoryTrimmer(interval_s=0.02)
    if not trimmer.active:
        pytest.skip("not glibc: nothing to trim")
    trimmer.start()
    time.sleep(0.3)
    trimmer.stop()
    done = trimmer.trims
    assert done >= 3
    time.sleep(0.1)
    assert trimmer.trims == done  # stopped means stopped


def test_the_app_trims_while_it_serves(make_client: Callable[..., TestClient]) -> None:
    if not MemoryTrimmer().active:
        pytest.skip("not glibc: nothing to trim")
    with make_client() as client:  # the context runs the lifespan
        assert client.get("/v1/latest", params={"symbols": "BHP"}).status_code == 200
        assert "k2-malloc-trim" in {t.name for t in threading.enumerate()}
    assert "k2-malloc-trim" not in {t.name for t in threading.enumerate()}


def test_a_trim_releases_arrows_pool_too() -> None:
    import pyarrow as pa

    trimmer = MemoryTrimmer()
    if not trimmer.active:
        pytest.skip("not glibc: nothing to trim")
    table = pa.table({"a": list(range(200_000))}).sort_by("a")
    del table
    trimmer.trim()  # malloc_trim and release_unused: neither may fail nor leak the count
    assert trimmer.trims == 1
