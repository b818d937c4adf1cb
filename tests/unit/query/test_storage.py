"""DuckDB reading ``s3://`` paths through a registered pyarrow filesystem (no httpfs)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from k2.query.runner import DuckRunner
from k2.query.storage import S3ArrowFileSystem, warehouse_filesystem


def test_duckdb_reads_s3_paths_through_the_registered_filesystem(tmp_path: Path) -> None:
    """A local directory stands in for the bucket: what is checked is the routing of s3:// paths."""
    (tmp_path / "bucket" / "t").mkdir(parents=True)
    pq.write_table(pa.table({"x": [1, 2, 3]}), tmp_path / "bucket" / "t" / "a.parquet")
    pq.write_table(pa.table({"x": [4]}), tmp_path / "bucket" / "t" / "b.parquet")
    runner = DuckRunner()
    filesystem = S3ArrowFileSystem(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    runner.register_filesystem(filesystem)
    runner.register_filesystem(filesystem)  # a second engine on the same runner: harmless
    files = ["s3://bucket/t/a.parquet", "s3a://bucket/t/b.parquet"]
    out = runner.table(
        "test", "SELECT sum(x) AS s, count(DISTINCT filename) AS f FROM read_parquet(?, filename = true)",
        [files], timeout_s=10,
    )  # fmt: skip
    assert out.to_pylist() == [{"s": 10, "f": 2}]
    runner.close()


def test_only_an_s3_warehouse_gets_a_filesystem() -> None:
    assert warehouse_filesystem({"warehouse": "file:///tmp/wh"}) is None
    s3 = warehouse_filesystem({
        "warehouse": "s3://bucket/wh", "s3.endpoint": "http://127.0.0.1:9", "s3.region": "us-east-1",
        "s3.access-key-id": "k", "s3.secret-access-key": "s",
    })  # fmt: skip
    assert isinstance(s3, pafs.S3FileSystem)
    assert S3ArrowFileSystem._strip_protocol("s3://bucket/wh/x.parquet") == "bucket/wh/x.parquet"
