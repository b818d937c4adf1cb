"""The warehouse on a real S3 server (SeaweedFS, started by K2's launcher): ingest, query, time
travel, compaction, expiry and orphan cleanup, every byte through S3 and none on local disk.

Part of ``make scale-test``, not ``make test``: on a fresh machine the first ``k2 services up s3``
builds SeaweedFS from its Go module (about 13 minutes on 2 cores; cached afterwards). The server is
the session's (``s3_server`` in tests/conftest.py), shared with Spark's scale test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pyarrow import fs as pafs

from k2.api import create_app
from k2.config import Settings, derive
from k2.lake import maintenance as mx
from k2.lake import open_catalog
from k2.query.engine import QueryEngine
from k2.query.errors import SnapshotNotFoundError
from k2.query.params import TimeRange, TimeTravel
from k2.services import Launcher
from k2.services.s3 import s3_filesystem
from tests.conftest import S3_BUCKET
from tests.integration.test_pipeline import SYMBOLS, _ingest, _produce, make_trades

pytestmark = [pytest.mark.integration, pytest.mark.scale]

BUCKET = S3_BUCKET
ROWS = 3_000
SMALL_COMMITS = {"K2_LAKE__COMMIT_ROWS": "400", "K2_PIPELINE__BATCH_MAX_MESSAGES": "400"}


def _bucket(server: Settings) -> Any:
    """A client of our own onto the bucket: what is on S3, seen without K2's FileIO."""
    s3 = server.s3
    return s3_filesystem(s3.effective_endpoint, s3.region, s3.access_key_id, s3.secret())


def _objects(server: Settings, prefix: str) -> set[str]:
    infos = _bucket(server).get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
    return {f"s3://{i.path}" for i in infos if i.type == pafs.FileType.File}


def _env(s3: Settings, warehouse: str) -> dict[str, str]:
    return {
        "K2_LAKE__WAREHOUSE": warehouse,
        "K2_S3__PORT": str(s3.s3.port),
        "K2_S3__SECRET_FILE": str(s3.s3.secret_file),
    }


def _rows(table: Any) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.select("symbol", "sequence", "price", "size").sort("symbol", "sequence")


def test_the_warehouse_on_s3_ingests_queries_travels_and_is_maintained(
    settings: Settings, s3_server: Settings, tmp_path: Path
) -> None:
    warehouse = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    lake = derive(settings, lake={"warehouse": warehouse}, s3=s3_server.s3.model_dump())
    sent = make_trades(ROWS)
    _produce(settings, sent)
    proc = _ingest(settings, "--idle-timeout", "4", **SMALL_COMMITS, **_env(s3_server, warehouse))
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]

    table = open_catalog(lake).load_table(f"{lake.lake.namespace}.trades")
    location = table.location()
    assert location.startswith(f"{warehouse}/"), location
    assert not (lake.data_dir / "warehouse").exists()  # nothing went to local disk
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    assert len(snapshots) >= 3
    stored = _objects(s3_server, location.removeprefix("s3://"))
    assert sum("/data/" in o for o in stored) >= 3 and any(o.endswith(".metadata.json") for o in stored)

    # Reads: the query engine (DuckDB through the FileIO's filesystem) and the API, row for row.
    expected = _rows(sent.to_arrow())
    window = TimeRange.parse("2024-03-10T00:00:00Z", "2024-03-12T00:00:00Z", max_days=31)
    engine = QueryEngine.from_settings(lake, refresh_interval_s=0)
    try:
        got = engine.ticks("trades", SYMBOLS, window, limit=ROWS + 1).table
        assert _rows(got).equals(expected)

        # Time travel to the first commit: exactly what that snapshot holds, fewer than all.
        first = snapshots[0]
        then = engine.ticks(
            "trades", SYMBOLS, window, limit=ROWS + 1, travel=TimeTravel(snapshot_id=first.snapshot_id)
        )
        held = table.scan(snapshot_id=first.snapshot_id).to_arrow()
        assert 0 < then.table.num_rows == held.num_rows < ROWS
        assert _rows(then.table).equals(_rows(held))

        with TestClient(create_app(lake, engine=engine)) as client:
            params = {"symbols": "BHP", "start": "2024-03-10T00:00:00Z", "end": "2024-03-12T00:00:00Z",
                      "limit": ROWS}  # fmt: skip
            body = client.get("/v1/trades", params=params).json()
            assert len(body["data"]) == (sent["symbol"] == "BHP").sum() > 0
            old = client.get("/v1/trades", params={**params, "snapshot_id": first.snapshot_id}).json()
            assert len(old["data"]) == (pl.from_arrow(held)["symbol"] == "BHP").sum()  # type: ignore[index]

        # Compaction rewrites the small files on S3; the rows stay exact.
        result = mx.compact(table)
        assert result.files_after < result.files_before
        engine.refresh()
        assert _rows(engine.ticks("trades", SYMBOLS, window, limit=ROWS + 1).table).equals(expected)

        # Expiry drops the old snapshots: time travel to the first one now fails cleanly.
        assert mx.expire_snapshots(table, older_than=timedelta(0), keep_last=1) >= 3
        engine.refresh()
        with pytest.raises(SnapshotNotFoundError):
            engine.ticks("trades", SYMBOLS, window, travel=TimeTravel(snapshot_id=first.snapshot_id))

        # The head still lists the replaced files as deleted (so they count as referenced): one more
        # commit that rewrites the manifests, and one more expiry, leave them unreferenced.
        mx.rewrite_manifests(table)
        mx.expire_snapshots(table, older_than=timedelta(0), keep_last=1)

        # Orphan cleanup lists the bucket through the FileIO: a stray object and the files the
        # compaction replaced are deleted from S3; everything still referenced stays.
        stray = f"{location}/data/stray.parquet"
        pq.write_table(sent.head(5).to_arrow(), stray.removeprefix("s3://"), filesystem=_bucket(s3_server))
        assert stray in _objects(s3_server, location.removeprefix("s3://"))
        time.sleep(1.1)  # S3 times are whole seconds: let the stray be older than "now"
        removed = mx.remove_orphan_files(table, older_than=timedelta(0))
        assert stray in removed
        assert sum("/data/" in r for r in removed) == result.files_before + 1  # replaced files + the stray
        left = _objects(s3_server, location.removeprefix("s3://"))
        assert stray not in left and not set(removed) & left
        live = {f.file.file_path for f in table.refresh().scan().plan_files()}
        assert live <= left and {o for o in left if "/data/" in o} == live
        engine.refresh()
        assert _rows(engine.ticks("trades", SYMBOLS, window, limit=ROWS + 1).table).equals(expected)
    finally:
        engine.close()


def test_the_server_keeps_its_objects_across_a_restart_and_the_cli_reports_it(s3_server: Settings) -> None:
    key = f"{BUCKET}/restart-{uuid.uuid4().hex[:8]}/a.parquet"
    frame = make_trades(50)
    pq.write_table(frame.to_arrow(), key, filesystem=_bucket(s3_server))
    launcher = Launcher(s3_server)
    (stopped,) = launcher.down(["s3"])
    assert stopped.state == "stopped"
    (status,) = launcher.up(["s3"], timeout_s=120)  # ready only once the bucket reads back
    assert status.state == "running" and status.detail == f"bucket {BUCKET}"
    assert pq.read_table(key, filesystem=_bucket(s3_server)).equals(frame.to_arrow())

    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(K2_DATA_DIR=str(s3_server.data_dir), K2_LAKE__WAREHOUSE=s3_server.warehouse,
               K2_S3__PORT=str(s3_server.s3.port))  # fmt: skip
    shown = subprocess.run(
        [sys.executable, "-m", "k2.cli", "services", "status", "s3", "--json"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    (reported,) = json.loads(shown.stdout)
    assert reported["healthy"] and reported["pid"] == status.pid
