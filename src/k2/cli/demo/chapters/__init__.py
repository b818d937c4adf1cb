"""The chapters of ``k2 demo``, in the order they are told."""

from __future__ import annotations

from k2.cli.demo.chapters.backpressure import backpressure
from k2.cli.demo.chapters.cost import cost
from k2.cli.demo.chapters.crash import crash
from k2.cli.demo.chapters.ingest import ingest
from k2.cli.demo.chapters.monitor import monitor, proof
from k2.cli.demo.chapters.position import position
from k2.cli.demo.chapters.query import query
from k2.cli.demo.chapters.scale import scale
from k2.cli.demo.chapters.store import store
from k2.cli.demo.runner import Chapter
from k2.cli.demo.stage import Stage

__all__ = ["CHAPTERS"]

CHAPTERS: list[Chapter[Stage]] = [
    Chapter("Position", "the services come up; what K2 is, and what it is not", position),
    Chapter("Ingest", "the ASX replay and a faulty simulated feed, through Kafka into Iceberg, live", ingest),
    Chapter("Store", "Iceberg snapshots carry their Kafka offsets; time travel to an earlier one", store),
    Chapter("Monitor", "gaps and late fills found, duplicates dropped, the dead-letter queue", monitor),
    Chapter("Proof", "Iceberg against the simulator's exact ground truth", proof),
    Chapter("Query", "bars and VWAP, an as-of join, and the live view over the uncommitted tail", query),
    Chapter("Backpressure", "a 10x burst degrades and recovers; a breaker opens and closes", backpressure),
    Chapter("Resilience", "the ingester SIGKILLed mid-commit and restarted", crash),
    Chapter("Scale", "a second ingester joins the consumer group", scale),
    Chapter("Cost", "what this costs a month at ASX volume", cost),
]
