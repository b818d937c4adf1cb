"""The send loops behind ``k2 feed``: pacing, stopping, and what "stopped" means for each feed.

A stop request (the first Ctrl-C, or the duration running out) never cuts a simulator batch in
half: the batch in hand is finished at full speed, so every batch in the ground truth was sent
whole and the truth stays exact. The replay stops between slices (its files are the truth).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from k2.feeds.asx import AsxReplay
from k2.feeds.pacing import Pacer, replay_schedule
from k2.feeds.publish import FeedCounts, FeedPublisher
from k2.feeds.simulator import Simulator

__all__ = ["ProgressFn", "RunReport", "run_replay", "run_simulation"]

#: Called after each slice with the counts so far and the elapsed wall time.
ProgressFn = Callable[[FeedCounts, float], None]
#: Wall time that a paced slice covers: small enough to look smooth, large enough to batch.
SLICE_S = 0.05


@dataclass(frozen=True)
class RunReport:
    """How a run ended."""

    messages: int
    elapsed_s: float
    stopped: bool  # a stop was requested before the feed ran out

    @property
    def rate(self) -> float:
        return self.messages / self.elapsed_s if self.elapsed_s > 0 else 0.0


def run_simulation(
    sim: Simulator,
    publisher: FeedPublisher,
    *,
    count: int | None = None,
    rate: float | None = None,
    duration_s: float | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunReport:
    """Send simulator batches until ``count`` ticks are generated, ``duration_s`` passes, or a stop.

    Args:
        rate: messages per wall-clock second; None sends as fast as possible.
        duration_s: wall-clock seconds; checked between batches.
    """
    stop = stop or threading.Event()
    pacer = Pacer(stop, clock)
    step = max(1, int(rate * SLICE_S)) if rate else None
    sent = 0
    stopped = False
    for delivery in sim.deliveries(count=count):
        paced = rate is not None
        for part in delivery.split(step) if step else (delivery,):
            if paced and not pacer.wait_until(sent / rate):  # type: ignore[operator]
                paced = False  # stop requested: finish this batch unpaced, keeping the truth exact
            sent += publisher.publish(part)
            if on_progress is not None:
                on_progress(publisher.counts, pacer.elapsed_s)
        if stop.is_set():
            stopped = True
            break
        if duration_s is not None and pacer.elapsed_s >= duration_s:
            break
    return RunReport(sent, pacer.elapsed_s, stopped)


def run_replay(
    replay: AsxReplay,
    publisher: FeedPublisher,
    *,
    speed: float | None = None,
    max_idle_s: float | None = None,
    stop: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunReport:
    """Send the dead letters, then the replay paced by exchange time (``speed`` x), until done or a stop."""
    stop = stop or threading.Event()
    pacer = Pacer(stop, clock)
    publisher.dead_letters(replay.dead_letters)
    starts, due = replay_schedule(replay.times_us, speed=speed, max_idle_s=max_idle_s)
    sent = 0
    stopped = False
    for part, due_s in zip(replay.delivery.split_at(starts[1:].tolist()), due, strict=True):
        if not pacer.wait_until(float(due_s)):
            stopped = True
            break
        sent += publisher.publish(part)
        if on_progress is not None:
            on_progress(publisher.counts, pacer.elapsed_s)
    return RunReport(sent, pacer.elapsed_s, stopped)
