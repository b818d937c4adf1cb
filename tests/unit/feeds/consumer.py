"""A reference sequence consumer: what any correct gap/dup/reorder checker must conclude.

It reads one kind's messages in delivery order and keeps, per (symbol, session), the highest
sequence seen and the set of holes. A message with a known id is a duplicate; one above the
highest opens a hole for the skipped sequences; one below fills a hole and is called a reorder
when it arrives within W of the highest sequence, a late fill when it arrives W + 11 or more
behind, and anything in between is ambiguous (which the simulator promises never happens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass
class Findings:
    opened: set[tuple[str, str, int, int]] = field(default_factory=set)  # (symbol, session, first, last)
    duplicates: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    late_filled: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    unexpected_start: list[tuple[str, str, int]] = field(default_factory=list)
    holes: set[tuple[str, str, int]] = field(default_factory=set)


def observe(frame: pl.DataFrame, window: int) -> Findings:
    found = Findings()
    highest: dict[tuple[str, str], int] = {}
    seen: set[str] = set()
    for mid, symbol, session, seq in frame.select("message_id", "symbol", "session", "sequence").iter_rows():
        key = (symbol, session.isoformat())
        if mid in seen:
            found.duplicates.append(mid)
            continue
        seen.add(mid)
        top = highest.get(key)
        if top is None:
            if seq != 1:
                found.unexpected_start.append((*key, seq))
            top = 0
        if seq > top + 1:
            found.opened.add((*key, top + 1, seq - 1))
            found.holes.update((*key, s) for s in range(top + 1, seq))
        if seq > top:
            highest[key] = seq
            continue
        found.holes.discard((*key, seq))
        behind = top - seq
        if behind <= window:
            found.reordered.append(mid)
        elif behind >= window + 11:
            found.late_filled.append(mid)
        else:
            found.ambiguous.append(mid)
    return found
