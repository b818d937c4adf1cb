"""/v1/snapshots: a table's snapshots with commit time, rows added and Kafka offsets covered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from k2.api.deps import FormatParam, engine, render
from k2.api.models import tabular
from k2.query.engine import QueryEngine
from k2.types import TableName

__all__ = ["router"]

router = APIRouter(tags=["time travel"])

_ROW = {
    "snapshot_id": "5278257869543696240", "parent_id": "1991928833644000703",
    "committed_at": "2026-11-27T16:40:01.123+00:00", "operation": "append", "added_rows": 20054,
    "total_rows": 200545, "added_files": 3,
    "offsets": [{"topic": "k2.trades", "partition": 0, "offset": 200545}],
}  # fmt: skip


@router.get("/snapshots", summary="Snapshots of a table", responses=tabular([_ROW], "Newest first."))
def read_snapshots(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    table: Annotated[
        TableName,
        Query(description="The table whose snapshots to list.", examples=["trades"]),
    ] = "trades",
    limit: Annotated[
        int,
        Query(
            description="How many, newest first: 1 to api.max_rows (the maximum below).", examples=[50], ge=1
        ),
    ] = 50,
    fmt: FormatParam = None,
) -> Response:
    """Any snapshot_id listed here, or any time after the first commit (as_of), can be passed to
    the other routes to see what the platform knew then."""
    return render(request, eng.snapshots(table, limit=limit), fmt)
