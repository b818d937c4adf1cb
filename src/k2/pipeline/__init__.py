"""The consumer pipeline: Kafka micro-batches into Iceberg with exactly-once effect."""

from __future__ import annotations

from k2.pipeline.runner import Pipeline, PipelineStats

__all__ = ["Pipeline", "PipelineStats"]
