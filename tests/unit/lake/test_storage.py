"""Listing a table's files through the FileIO, and the FileIO properties of an S3 warehouse."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pyiceberg.io import S3_ACCESS_KEY_ID, S3_ENDPOINT, S3_REGION, S3_SECRET_ACCESS_KEY
from pyiceberg.io.pyarrow import PyArrowFileIO

from k2.config import load_settings
from k2.lake.errors import StorageError
from k2.lake.storage import canonical, file_io_properties, is_object_store, list_files


def _tree(root: Path) -> None:
    (root / "data" / "day=1").mkdir(parents=True)
    (root / "metadata").mkdir()
    (root / "data" / "day=1" / "a.parquet").write_bytes(b"12345")
    (root / "metadata" / "v1.metadata.json").write_bytes(b"{}")


@pytest.mark.parametrize("form", ["file://{}", "{}"])
def test_lists_every_file_below_a_local_location_in_canonical_form(tmp_path: Path, form: str) -> None:
    root = tmp_path / "tbl"
    _tree(root)
    old = time.time() - 3600
    os.utime(root / "metadata" / "v1.metadata.json", (old, old))
    files = {f.location: f for f in list_files(PyArrowFileIO(), form.format(root))}
    assert set(files) == {f"file://{root}/data/day=1/a.parquet", f"file://{root}/metadata/v1.metadata.json"}
    assert files[f"file://{root}/data/day=1/a.parquet"].size == 5
    assert abs(files[f"file://{root}/metadata/v1.metadata.json"].mtime_s - old) < 2
    assert all(canonical(location) == location for location in files)  # listing and metadata agree


def test_a_missing_location_lists_nothing(tmp_path: Path) -> None:
    assert list(list_files(PyArrowFileIO(), f"file://{tmp_path}/never")) == []


def test_canonical_names_one_file_one_way() -> None:
    assert canonical("/a/b.parquet") == canonical("file:///a/b.parquet") == "file:///a/b.parquet"
    assert canonical("s3://bucket/wh/t/data/x.parquet") == "s3://bucket/wh/t/data/x.parquet"
    assert canonical("s3a://bucket/x") == "s3a://bucket/x"
    assert is_object_store("s3://b/w") and not is_object_store("file:///w")


def test_a_local_warehouse_has_no_io_properties(tmp_path: Path) -> None:
    assert file_io_properties(load_settings(data_dir=tmp_path)) == {}


def test_the_local_s3_server_s_secret_is_read_from_its_file(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, lake={"warehouse": "s3://k2/wh"}, s3={"port": 20333})
    with pytest.raises(StorageError, match="k2 services up s3"):
        file_io_properties(settings)  # not started yet: no secret
    assert settings.s3.secret_file == tmp_path / "services" / "s3" / "secret"
    settings.s3.secret_file.parent.mkdir(parents=True)
    settings.s3.secret_file.write_text("s3cr3t\n")
    props = file_io_properties(settings)
    assert props == {
        S3_ENDPOINT: "http://127.0.0.1:20333",
        S3_REGION: "us-east-1",
        S3_ACCESS_KEY_ID: "k2",
        S3_SECRET_ACCESS_KEY: "s3cr3t",
    }


def test_an_external_s3_takes_configured_keys_or_the_default_chain(tmp_path: Path) -> None:
    external = {"endpoint": "https://s3.ap-southeast-2.amazonaws.com", "region": "ap-southeast-2"}
    chain = load_settings(data_dir=tmp_path, lake={"warehouse": "s3://prod/wh"}, s3=external)
    assert file_io_properties(chain) == {S3_ENDPOINT: external["endpoint"], S3_REGION: "ap-southeast-2"}
    keyed = load_settings(
        data_dir=tmp_path,
        lake={"warehouse": "s3://prod/wh"},
        s3={**external, "access_key_id": "AKIA1", "secret_access_key": "hidden"},
    )
    assert file_io_properties(keyed)[S3_SECRET_ACCESS_KEY] == "hidden"
    shown = keyed.masked()
    assert shown["s3"]["secret_access_key"] == "**********"
    assert "hidden" not in repr(shown) and "hidden" not in repr(keyed)
    assert shown["effective"]["s3_endpoint"] == external["endpoint"]
