"""K2's shared vocabulary: the names of streams, tables and exchange time zones, and type aliases.

Each name is spelled here once; every package takes it from here (``k2.types`` imports nothing).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = [
    "ASX_TIME_ZONE",
    "EXCHANGE_TIMEZONES",
    "GAPS_TABLE",
    "REFERENCE_TABLE",
    "TABLES",
    "TICK_KINDS",
    "Offsets",
    "ServiceName",
    "StreamKind",
    "TableName",
    "TopicPartition",
]

#: The two tick streams K2 ingests (one topic and one table each). Reference data travels beside them.
StreamKind = Literal["trades", "quotes"]
#: Every tick stream, in the order K2 loops over them (topics, tables, reports): StreamKind's values.
TICK_KINDS: Final[tuple[str, ...]] = get_args(StreamKind)
REFERENCE_TABLE: Final = "reference"
GAPS_TABLE: Final = "sequence_gaps"
#: Every Iceberg table K2 creates in its namespace (as a type: routes and commands that take one).
TableName = Literal["trades", "quotes", "reference", "sequence_gaps"]
TABLES: Final[tuple[str, ...]] = (*TICK_KINDS, REFERENCE_TABLE, GAPS_TABLE)
assert get_args(TableName) == TABLES, "TableName spells TABLES"

#: The IANA zone of each exchange's trading day: bars align to its midnight, sessions are its dates.
EXCHANGE_TIMEZONES: Final[dict[str, str]] = {"ASX": "Australia/Sydney", "SIM": "UTC"}
ASX_TIME_ZONE: Final = EXCHANGE_TIMEZONES["ASX"]

#: (topic, partition)
TopicPartition = tuple[str, int]
#: Next offset to read per (topic, partition): Kafka's convention, so a resume seeks straight to it.
Offsets = dict[TopicPartition, int]
ServiceName = Literal["kafka", "redis"]
