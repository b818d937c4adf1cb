"""/v1/status: the pipeline's state, data quality and the live tail in one typed answer.

The dashboard (``/``) polls it; ``k2 status`` shows the same facts in a terminal. Behind the same
key and rate guard as every /v1 route: the status names tables, hosts' errors and symbols.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from k2.api.deps import services
from k2.api.models import ERRORS
from k2.api.status import PipelineStatus, read_pipeline_status

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get(
    "/status",
    summary="Pipeline status: ingest rate, lag, commits, degradation, breakers, gaps, dead letters",
    response_model=PipelineStatus,
    responses={code: ERRORS[code] for code in (401, 429)},
)
async def read_status(request: Request) -> PipelineStatus:
    """Read from the status file the ingest process rewrites every second (`ingest` is null until
    one ran under this data_dir), the gap counts per symbol from the lake, and this process's live
    tail. Figures the file lacks read as zero."""
    svc = services(request)

    def gap_counts() -> list[dict[str, Any]]:
        return svc.engine().gap_counts()

    return await run_in_threadpool(read_pipeline_status, svc.settings.data_dir, gap_counts)
