"""``HybridSettings``: the bounds and timings of the hybrid (Iceberg + live Kafka tail) reader.

There is no time buffer to tune here: where Iceberg ends and Kafka begins is decided by the
offsets stored in each snapshot (DESIGN.md, invariant 2). What remains are resource bounds (how
much decoded tail may be held in memory) and how long a query may wait for Kafka.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Consistency", "HybridSettings", "Routing"]

#: ``auto``: read only the partitions the producer's partitioner maps the symbols to (checked
#: against the lake's ``kafka_partition`` lineage on every query); ``all``: read every partition.
Routing = Literal["auto", "all"]
#: How far a query reads the tail. ``watermark``: up to the high watermark the broker reports when
#: the query starts (a tick acknowledged before the query is in its answer; one round trip).
#: ``cached``: up to what the tail cache has decoded (kept within ``prefetch_interval_s`` of the
#: broker by the prefetch thread; no round trip). Either answer is exact up to the offsets it reports.
Consistency = Literal["watermark", "cached"]


class HybridSettings(BaseModel):
    """The hybrid reader: tail cache bounds, Kafka waits, live-stream pacing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tail_messages: int = Field(
        default=2_000_000,
        ge=1_000,
        description="Decoded tail rows held in memory, all partitions together. A tail that would "
        "need more is answered up to the last row that fits (the answer says so: truncated).",
    )
    max_tail_bytes: int = Field(
        default=512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Estimated bytes of the decoded tail, all partitions together (same rule).",
    )
    max_partitions: int = Field(
        default=64, ge=1, le=4096, description="Partitions cached at once; the least recently used go first."
    )
    idle_partition_s: float = Field(
        default=300.0, gt=0, description="A cached partition no query touched for this long is dropped."
    )
    consistency: Consistency = Field(
        default="watermark",
        description="watermark: read the tail up to the broker's high watermark; cached: "
        "up to what the cache decoded (faster, up to prefetch_interval_s staler).",
    )
    routing: Routing = Field(
        default="auto",
        description="auto: only the symbols' partitions (producer's partitioner); all: every one.",
    )
    read_timeout_s: float = Field(
        default=2.0, gt=0, description="The longest a query waits for Kafka to reach the high watermark."
    )
    poll_timeout_s: float = Field(
        default=0.005, gt=0, le=1.0, description="One wait for the next fetched messages while catching up."
    )
    fetch_wait_max_ms: int = Field(
        default=50, ge=1, le=1000, description="fetch.wait.max.ms of the tail consumer (its long-poll)."
    )
    prefetch_interval_s: float = Field(
        default=0.05,
        ge=0,
        description="A background thread decodes what Kafka delivered this often, so a query finds "
        "the tail ready (0: only queries read).",
    )
    trim_grace_s: float = Field(
        default=5.0,
        ge=0,
        description="Rows a newer snapshot covers are kept this long, so concurrent queries holding "
        "an older snapshot still find them in memory.",
    )
    max_minutes: float = Field(default=1440.0, gt=0, description="Longest window of /recent and live bars.")
    stream_interval_s: float = Field(
        default=0.05, gt=0, le=5.0, description="How often a live subscription looks for new ticks."
    )
    heartbeat_s: float = Field(default=15.0, gt=0, description="A live stream's keep-alive comment period.")
    reference_refresh_s: float = Field(
        default=60.0, gt=0, description="How often the known-symbol list used by validation is reloaded."
    )

    def fingerprint(self) -> str:
        """A short digest of every field's value: replicas that answer alike show the same one.

        Taken over the validated values in canonical JSON (sorted keys), so 60 and 60.0, or the
        fields in another order, give the same fingerprint.
        """
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def differences(self, other: HybridSettings) -> dict[str, dict[str, Any]]:
        """The fields whose values differ: ``{name: {"own": self's, "other": other's}}``."""
        mine, theirs = self.model_dump(mode="json"), other.model_dump(mode="json")
        return {k: {"own": mine[k], "other": theirs[k]} for k in mine if mine[k] != theirs[k]}
