"""Sequence tracking and two-tier dedup, each with an embedded (SQLite) and a Redis backend.

Per micro-batch the pipeline calls ``store.load(tracker.keys(batch))``, ``tracker.classify(...)``,
commits to Iceberg, then ``store.commit(result.states, tokens)``; see docs/state.md.
"""

from __future__ import annotations

from k2.state.base import DedupStore, PartitionToken, SequenceStore, batch_tokens
from k2.state.checks import StateChecks
from k2.state.dedup import Deduplicator
from k2.state.embedded import EmbeddedDedupStore, EmbeddedSequenceStore
from k2.state.errors import InvalidBatchError, StaleStateError, StateError, StateStoreError
from k2.state.factory import open_dedup_store, open_sequence_store, state_dir
from k2.state.model import GAP_EVENT_SCHEMA, VERDICT, VERDICTS, CheckResult, KeyState, StateKey
from k2.state.redis import RedisDedupStore, RedisSequenceStore
from k2.state.tracker import ClassifyResult, SequenceTracker

__all__ = [
    "GAP_EVENT_SCHEMA",
    "VERDICT",
    "VERDICTS",
    "CheckResult",
    "ClassifyResult",
    "DedupStore",
    "Deduplicator",
    "EmbeddedDedupStore",
    "EmbeddedSequenceStore",
    "InvalidBatchError",
    "KeyState",
    "PartitionToken",
    "RedisDedupStore",
    "RedisSequenceStore",
    "SequenceStore",
    "SequenceTracker",
    "StaleStateError",
    "StateChecks",
    "StateError",
    "StateKey",
    "StateStoreError",
    "batch_tokens",
    "open_dedup_store",
    "open_sequence_store",
    "state_dir",
]
