"""As of T through the API and the CLI, identical before and after the snapshots of T are expired.

A real ingest (Kafka -> Iceberg, many small commits, upkeep off) leaves one snapshot per commit;
the answers at several T's (at a commit, between two) are recorded, checked against what the
snapshot committed at or before T holds (pyiceberg's own scan), and asked again after a
`k2 lake maintain` pass has compacted the files and expired every snapshot but the head.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pyiceberg.table import Table

from k2.api import create_app
from k2.config import Settings
from k2.lake import open_catalog
from k2.lake.stamp import STAMPED_SINCE_KEY
from tests.integration.test_pipeline import _env, _ingest, _produce, make_trades

pytestmark = pytest.mark.integration

WINDOW = {
    "symbols": "BHP,RIO,CBA,NAB,WBC,ANZ,CSL,WES",
    "start": "2024-03-10T22:00:00Z",
    "end": "2024-03-11T01:00:00Z",
}
EXPIRE_ALL = {
    "K2_LAKE__DENSE_MINUTES": "0",
    "K2_LAKE__KEEP_SNAPSHOTS": "1",
    "K2_LAKE__TIME_TRAVEL_HOURS": "0",  # no checkpoints: only the head is kept
}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _trades(settings: Settings) -> Table:
    return open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")


def _api(client: TestClient, at: str) -> tuple[int, list[str] | str]:
    response = client.get("/v1/trades", params={**WINDOW, "as_of": at, "limit": 10_000, "format": "json"})
    if response.status_code != 200:
        return response.status_code, response.text
    body = response.json()
    rows = body["data"] if isinstance(body, dict) else body
    return 200, sorted(r["message_id"] for r in rows)


def _cli(settings: Settings, at: str, out: Path) -> tuple[int, list[str] | str]:
    args = ["query", "trades", "--symbols", WINDOW["symbols"], "--start", WINDOW["start"],
            "--end", WINDOW["end"], "--limit", "10000", "--as-of", at, "-o", str(out)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "k2.cli", *args], env=_env(settings), capture_output=True, timeout=300
    )
    if done.returncode != 0:
        return done.returncode, (done.stdout + done.stderr).decode()
    rows = json.loads(out.read_text())
    rows = rows["data"] if isinstance(rows, dict) else rows
    return 200, sorted(r["message_id"] for r in rows)


@pytest.mark.timeout(900)  # about 3 min here; a loaded machine triples that (each CLI call is a process)
def test_as_of_is_identical_after_expiry_through_api_and_cli(settings: Settings, tmp_path: Path) -> None:
    _produce(settings, make_trades(3_000))
    ingest = _ingest(
        settings, "--idle-timeout", "4",
        K2_LAKE__COMMIT_ROWS="150", K2_PIPELINE__BATCH_MAX_MESSAGES="150", K2_LAKE__MAINTAIN_EVERY_S="0",
    )  # fmt: skip
    out = ingest.communicate(timeout=300)[0].decode()
    assert ingest.returncode == 0, out[-3000:]

    table = _trades(settings)
    snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    assert len(snaps) >= 10, "expected many small commits"
    picks = [snaps[i] for i in (0, len(snaps) // 4, len(snaps) // 2, (3 * len(snaps)) // 4, len(snaps) - 2)]
    times: dict[str, set[str]] = {}  # T -> what the snapshot committed at or before T holds
    for snap in picks:
        following = next(s for s in snaps if s.timestamp_ms > snap.timestamp_ms)
        held = {
            r for r in table.scan(snapshot_id=snap.snapshot_id).to_arrow().column("message_id").to_pylist()
        }
        times[_iso(snap.timestamp_ms)] = held  # T at the commit
        times[_iso((snap.timestamp_ms + following.timestamp_ms) // 2)] = held  # T between two commits
    before = _iso(snaps[0].timestamp_ms - 1000)
    times[before] = set()

    client = TestClient(create_app(settings))
    recorded = {}
    for i, (at, held) in enumerate(times.items()):
        recorded[at] = _api(client, at)
        assert recorded[at] == (200, sorted(held)), at
        if i % 4 == 0:  # the CLI (a process each, seconds on a loaded machine) on a quarter of them
            assert _cli(settings, at, tmp_path / f"before-{i}.json") == recorded[at], at

    maintain = subprocess.run(
        [sys.executable, "-m", "k2.cli", "lake", "maintain"], env=_env(settings, **EXPIRE_ALL),
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert maintain.returncode == 0, maintain.stdout.decode()[-3000:] + maintain.stderr.decode()[-3000:]
    table = _trades(settings)
    assert len(table.snapshots()) <= 2, "the dense snapshots were not expired"
    assert all(table.snapshot_by_id(s.snapshot_id) is None for s in picks)

    client = TestClient(create_app(settings))
    for i, (at, want) in enumerate(recorded.items()):
        assert _api(client, at) == want, at
        if i % 4 == 0:
            assert _cli(settings, at, tmp_path / f"after-{i}.json") == want, at

    # Past the guarantee: stamps beginning only later (a table upgraded from an older K2) leave no
    # exact answer for a T whose snapshot was expired: a 404 that says so, not the nearest snapshot.
    since = picks[2].timestamp_ms
    with table.transaction() as txn:
        txn.set_properties({STAMPED_SINCE_KEY: str(since)})
    client = TestClient(create_app(settings))
    early = _iso(picks[1].timestamp_ms)
    status, body = _api(client, early)
    assert status == 404 and "keeps no exact state" in str(body), body
    code, text = _cli(settings, early, tmp_path / "past.json")
    assert code != 0 and "keeps no exact state" in str(text), text
    late = _iso(picks[3].timestamp_ms)
    assert _api(client, late) == recorded[late]
