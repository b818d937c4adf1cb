"""Flow control: paused partitions follow the level and the breakers, applied as a difference."""

from __future__ import annotations

from dataclasses import dataclass

from k2.config.resilience import ResilienceSettings
from k2.resilience.flow import FlowControl
from k2.resilience.levels import Level, actions_for

S = ResilienceSettings()
SRC = [("k2.trades", 0), ("k2.trades", 1), ("k2.quotes", 0)]
SPILL = [("k2.spill.trades", 0), ("k2.spill.quotes", 0)]


@dataclass
class _TP:
    topic: str
    partition: int


class _Consumer:
    def __init__(self, owned: list[tuple[str, int]]) -> None:
        self.owned = owned
        self.paused: set[tuple[str, int]] = set()
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def assignment(self) -> list[_TP]:
        return [_TP(t, p) for t, p in self.owned]

    def pause(self, partitions: list[_TP]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.calls.append(("pause", tps))
        self.paused |= set(tps)

    def resume(self, partitions: list[_TP]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.calls.append(("resume", tps))
        self.paused -= set(tps)


def test_paused_partitions_at_each_level() -> None:
    flow = FlowControl({"k2.spill.trades", "k2.spill.quotes"})
    owned = SRC + SPILL
    assert flow.wanted(owned, actions_for(Level.NORMAL, S), stalled=False) == set()
    for level in (Level.SOFT, Level.GRACEFUL, Level.AGGRESSIVE):
        assert flow.wanted(owned, actions_for(level, S), stalled=False) == set(SPILL)
    assert flow.wanted(owned, actions_for(Level.CIRCUIT_BREAK, S), stalled=False) == set(owned)
    assert flow.wanted(owned, actions_for(Level.NORMAL, S), stalled=True) == set(owned)


def test_apply_sends_only_the_difference() -> None:
    consumer = _Consumer(SRC + SPILL)
    flow = FlowControl({"k2.spill.trades", "k2.spill.quotes"})
    flow.apply(consumer, actions_for(Level.GRACEFUL, S), stalled=False)
    assert consumer.paused == set(SPILL)
    consumer.calls.clear()
    flow.apply(consumer, actions_for(Level.AGGRESSIVE, S), stalled=False)
    assert consumer.calls == []  # nothing changed: no calls
    flow.apply(consumer, actions_for(Level.AGGRESSIVE, S), stalled=True)  # a breaker opened
    assert consumer.paused == set(SRC + SPILL) and consumer.calls == [("pause", sorted(SRC))]
    consumer.calls.clear()
    flow.apply(consumer, actions_for(Level.AGGRESSIVE, S), stalled=False)  # commit went through
    assert consumer.paused == set(SPILL) and consumer.calls == [("resume", sorted(SRC))]
    flow.apply(consumer, actions_for(Level.NORMAL, S), stalled=False)  # back-fill may run
    assert consumer.paused == set()


def test_reassignment_reapplies_pauses() -> None:
    consumer = _Consumer(SRC + SPILL)
    flow = FlowControl({"k2.spill.trades", "k2.spill.quotes"})
    flow.apply(consumer, actions_for(Level.SOFT, S), stalled=False)
    # a rebalance: Kafka forgets pauses, and one spill partition is now someone else's
    consumer.owned = [*SRC, SPILL[0]]
    consumer.paused.clear()
    flow.assigned(consumer, actions_for(Level.SOFT, S), stalled=False)
    assert consumer.paused == {SPILL[0]} and flow.paused == {SPILL[0]}
    flow.revoked([SPILL[0]])
    assert flow.paused == set()


def test_a_spill_partition_to_rebuild_runs_at_any_level_and_holds_its_source_until_read() -> None:
    """After a crash the back-filled range the state lost must be judged before new source ticks."""
    flow = FlowControl([t for t, _ in SPILL])
    consumer = _Consumer(SRC + SPILL)
    flow.rebuild(("k2.spill.trades", 0), 10, ("k2.trades", 0))
    graceful = actions_for(Level.GRACEFUL, S)
    flow.assigned(consumer, graceful, stalled=False)
    assert consumer.paused == {("k2.trades", 0), ("k2.spill.quotes", 0)}
    assert not flow.read(("k2.spill.trades", 0), 9)  # offsets up to 8 read: one to go
    assert flow.read(("k2.spill.trades", 0), 10)
    flow.apply(consumer, graceful, stalled=False)
    assert consumer.paused == set(SPILL)  # back to the level's rule: the source runs, the spill waits
    flow.rebuild(("k2.spill.trades", 0), 20, ("k2.trades", 0))
    flow.apply(consumer, graceful, stalled=True)
    assert consumer.paused == set(SRC + SPILL)  # a stall still pauses everything
    flow.revoked([("k2.spill.trades", 0)])
    assert not flow.rebuilding
