"""Pacing schedules and the stoppable wait."""

from __future__ import annotations

import threading
import time

import numpy as np

from k2.feeds.pacing import Pacer, replay_schedule


def test_as_fast_as_possible_is_fixed_batches() -> None:
    starts, due = replay_schedule(np.arange(10) * 1_000_000, speed=None, max_batch=4)
    assert starts.tolist() == [0, 4, 8] and due.tolist() == [0, 0, 0]


def test_speed_scales_exchange_time() -> None:
    times = np.array([0, 10_000, 1_000_000, 1_010_000, 3_000_000]) * 10  # µs: 0, 0.1 s, 10 s, 10.1 s, 30 s
    starts, due = replay_schedule(times, speed=10.0, tick_s=0.05)
    assert starts.tolist() == [0, 2, 4]  # 0 and 0.01 s share a window; 1 s and 1.01 s too
    assert np.allclose(due, [0.0, 1.0, 3.0])


def test_quiet_stretches_can_be_capped() -> None:
    times = np.array([0, 3_600_000_000, 3_601_000_000])  # an hour of silence
    starts, due = replay_schedule(times, speed=1.0, max_idle_s=2.0)
    assert starts.tolist() == [0, 1, 2] and np.allclose(due, [0.0, 2.0, 3.0])


def test_a_busy_window_is_cut_into_batches() -> None:
    starts, _ = replay_schedule(np.zeros(25, dtype=np.int64), speed=1.0, max_batch=10)
    assert starts.tolist() == [0, 10, 20]


def test_a_stop_cuts_the_wait_short() -> None:
    stop = threading.Event()
    pacer = Pacer(stop)
    assert pacer.wait_until(0.0)
    threading.Timer(0.05, stop.set).start()
    began = time.monotonic()
    assert not pacer.wait_until(30.0)
    assert time.monotonic() - began < 5.0
