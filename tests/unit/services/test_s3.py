"""The local S3 server's pieces that need no server: building its binary, choosing it, its settings."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from k2.config import load_settings
from k2.services import Launcher
from k2.services import weed as weed_mod
from k2.services.errors import S3BuildError, ServiceStartError
from k2.services.s3 import S3Service
from k2.services.weed import WeedBinary


def _fake_go(folder: Path, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    go = folder / "go"
    go.write_text(f"#!/bin/sh\n{script}\n")
    go.chmod(go.stat().st_mode | stat.S_IEXEC)


def test_without_go_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(weed_mod, "_GO_FALLBACKS", ())
    with pytest.raises(S3BuildError, match=r"Go is needed once .* K2_S3__ENDPOINT"):
        WeedBinary(tmp_path / "cache", "v1.0.0").ensure()


def test_a_failed_download_names_the_command_and_keeps_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_go(tmp_path / "bin", 'echo "go: module lookup disabled by GOPROXY=off" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    binary = WeedBinary(tmp_path / "cache", "v1.0.0")
    with pytest.raises(S3BuildError, match=r"go mod download .* exited 1") as err:
        binary.ensure()
    assert "GOPROXY=off" in str(err.value) and "GOPROXY=off" in binary.build_log.read_text()
    assert not binary.cached()


def test_a_build_goes_through_the_module_and_lands_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steps and their order, with a stand-in `go` that records them (the real build is in
    tests/integration/test_s3_warehouse.py)."""
    source = tmp_path / "mod" / "seaweedfs"
    source.mkdir(parents=True)
    calls = tmp_path / "calls"
    _fake_go(
        tmp_path / "bin",
        f'echo "$PWD $*" >> {calls}\n'
        f'if [ "$1" = mod ]; then echo \'{{"Dir": "{source}"}}\'; exit 0; fi\n'
        'while [ "$1" != -o ]; do shift; done; printf "#!/bin/sh\\n" > "$2"; chmod +x "$2"',
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    said: list[str] = []
    binary = WeedBinary(tmp_path / "cache", "v1.2.3")
    assert binary.ensure(say=said.append) is True
    assert binary.cached() and binary.path == tmp_path / "cache" / "seaweedfs-v1.2.3" / "weed"
    download, build = calls.read_text().splitlines()
    assert "mod download -json github.com/seaweedfs/seaweedfs@v1.2.3" in download
    assert build.startswith(f"{source} build") and build.endswith("./weed")
    assert any("first use only" in line for line in said)
    assert binary.ensure() is False  # cached: nothing run again
    assert len(calls.read_text().splitlines()) == 2


def test_s3_is_started_by_default_only_for_a_warehouse_on_s3(tmp_path: Path) -> None:
    assert Launcher(load_settings(data_dir=tmp_path)).default_names == ("kafka", "redis")
    on_s3 = load_settings(data_dir=tmp_path, lake={"warehouse": "s3://wh/k2"})
    assert Launcher(on_s3).default_names == ("kafka", "redis", "s3")
    service = S3Service(on_s3)
    assert service.bucket == "wh" and service.address == "http://127.0.0.1:18333"
    assert S3Service(load_settings(data_dir=tmp_path)).bucket is None


def test_an_external_s3_is_reported_not_started(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path, lake={"warehouse": "s3://wh/k2"}, s3={"endpoint": "http://127.0.0.1:9"}
    )
    status = S3Service(settings).start(timeout_s=1)
    assert status.state == "unreachable" and status.address == "external"
    assert not (tmp_path / "services" / "s3").exists()


def test_an_invalid_bucket_name_is_refused_before_any_request(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, lake={"warehouse": "s3://k2/wh"})
    with pytest.raises(ServiceStartError, match="'k2' is not a valid S3 bucket name"):
        S3Service(settings)._ensure_bucket(timeout_s=30)
