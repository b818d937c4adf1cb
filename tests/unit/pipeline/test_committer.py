"""The committer's state machine: every transition, driven by fakes of the checkpoint and the listener.

The commits run on the committer's real worker thread; a test that needs a commit to be still in
flight holds it on an Event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import wait

import pytest

from k2.config import ResilienceSettings
from k2.lake.errors import LakeError, StaleWriterError
from k2.pipeline.committer import MIN_STALL_S, CommitState, Committer
from k2.pipeline.governor import dependency_breakers
from k2.resilience.breaker import BreakerBoard
from k2.state.errors import StateStoreError


class Frozen:
    """A frozen checkpoint: its commit fails with the errors queued in ``failures``, in order."""

    def __init__(self, name: str, log: list[str], failures: list[BaseException] | None = None) -> None:
        self.name = name
        self.log = log
        self.failures = list(failures or [])
        self.attempts = 0
        self.rows = 1
        self.gate: threading.Event | None = None
        self.offsets_thread: str | None = None

    def commit(self) -> None:
        self.attempts += 1
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.failures:
            raise self.failures.pop(0)
        self.log.append(f"commit {self.name}")

    def commit_group_offsets(self) -> None:
        self.offsets_thread = threading.current_thread().name
        self.log.append(f"offsets {self.name}")


class Live:
    """The live checkpoint: hands out the frozen checkpoints queued in ``ready``."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.ready: list[Frozen] = []
        self.finals: list[bool] = []

    def add(self, name: str, *failures: BaseException) -> Frozen:
        frozen = Frozen(name, self.log, list(failures))
        self.ready.append(frozen)
        return frozen

    def freeze(self, *, final: bool = False) -> Frozen | None:
        self.finals.append(final)
        return self.ready.pop(0) if self.ready else None


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, bool]] = []

    def stall(self, exc: BaseException, *, wait: float, kept: bool, reseek: bool) -> None:
        assert wait >= MIN_STALL_S
        self.calls.append(("stall", kept, reseek))

    def resume(self) -> None:
        self.calls.append(("resume", False, False))

    def stall_dropped(self) -> None:
        self.calls.append(("dropped", False, False))


class Rig:
    """A committer with a controllable clock, and a re-seek that fails while told to."""

    def __init__(self) -> None:
        self.now = 100.0
        self.live = Live()
        self.listener = Listener()
        self.reseeks = 0
        self.reseek_fails: list[BaseException] = []
        self.breakers: BreakerBoard = dependency_breakers(ResilienceSettings())
        self.committer = Committer(
            self.live, self.breakers, self.listener, self._reseek, clock=lambda: self.now
        )

    def _reseek(self) -> None:
        if self.reseek_fails:
            raise self.reseek_fails.pop(0)
        self.reseeks += 1

    def finish(self) -> None:
        """Let the commit in flight end (without taking its verdict)."""
        flight = self.committer._flight
        assert flight is not None
        wait([flight.future], timeout=10)

    def later(self) -> None:
        self.now += MIN_STALL_S + 0.01


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.committer.shutdown()


def test_a_commit_goes_in_flight_and_settles_to_idle_with_offsets_on_the_callers_thread(rig: Rig) -> None:
    c = rig.committer
    assert c.state is CommitState.IDLE and c.settled
    frozen = rig.live.add("a")
    c.commit()
    assert c.state is CommitState.IN_FLIGHT and not c.settled
    c.settle()
    assert c.state is CommitState.IDLE and c.settled
    assert rig.live.log == ["commit a", "offsets a"]
    assert frozen.offsets_thread == threading.current_thread().name  # step 5: never the worker's
    assert rig.live.finals == [False]


def test_nothing_to_freeze_stays_idle(rig: Rig) -> None:
    rig.committer.commit()
    assert rig.committer.state is CommitState.IDLE


def test_commits_stay_in_order_the_next_waits_for_the_one_in_flight(rig: Rig) -> None:
    c = rig.committer
    first = rig.live.add("a")
    first.gate = threading.Event()
    c.commit()
    rig.live.add("b")
    threading.Timer(0.05, first.gate.set).start()
    c.commit()  # waits for "a", takes its verdict, then freezes "b"
    c.settle()
    assert rig.live.log == ["commit a", "offsets a", "commit b", "offsets b"]


def test_poll_takes_a_finished_verdict_but_never_waits(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a")
    frozen.gate = threading.Event()
    c.commit()
    c.poll()
    assert c.state is CommitState.IN_FLIGHT  # still running: poll did not block
    frozen.gate.set()
    rig.finish()
    c.poll()
    assert c.state is CommitState.IDLE and rig.live.log == ["commit a", "offsets a"]


def test_a_failed_commit_is_kept_whole_and_stalls_and_nothing_newer_is_frozen(rig: Rig) -> None:
    c = rig.committer
    rig.live.add("a", LakeError("down"))
    c.commit()
    c.settle()
    assert c.state is CommitState.STALLED and c.stalled and not c.settled
    assert rig.listener.calls == [("stall", True, False)]
    rig.live.add("b")
    c.commit()
    assert rig.live.finals == [False] and c.state is CommitState.STALLED  # "b" not frozen
    assert "offsets a" not in rig.live.log  # no offsets for what is not committed


def test_the_kept_commit_is_retried_after_the_deadline_then_the_stall_resumes(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a", LakeError("down"))
    c.commit()
    c.settle()
    c.recover(rig.now)  # before the deadline: nothing happens
    assert c.state is CommitState.STALLED and frozen.attempts == 1
    rig.later()
    c.recover(rig.now)
    assert c.state is CommitState.STALLED_IN_FLIGHT
    rig.finish()
    c.recover(rig.now)  # the retry's verdict: through
    assert c.state is CommitState.STALLED and c.settled and frozen.attempts == 2
    c.recover(rig.now)  # nothing owed: resume
    assert c.state is CommitState.IDLE and not c.stalled
    assert rig.listener.calls == [("stall", True, False), ("resume", False, False)]
    assert rig.live.log == ["commit a", "offsets a"]


def test_a_retry_that_fails_again_is_kept_again_with_a_new_deadline(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a", LakeError("down"), StateStoreError("still down", backend="redis"))
    c.commit()
    c.settle()
    rig.later()
    c.recover(rig.now)
    rig.finish()
    c.recover(rig.now)
    assert c.state is CommitState.STALLED and not c.settled
    c.recover(rig.now)  # the new deadline is not reached yet
    assert c.state is CommitState.STALLED and frozen.attempts == 2
    rig.later()
    c.recover(rig.now)
    rig.finish()
    c.recover(rig.now)
    c.recover(rig.now)
    assert c.state is CommitState.IDLE and frozen.attempts == 3
    assert [k for k, *_ in rig.listener.calls] == ["stall", "stall", "resume"]


def test_a_fence_re_seeks_at_once_without_a_stall(rig: Rig) -> None:
    c = rig.committer
    rig.live.add("a", StaleWriterError("k2.trades", {}, {}))
    c.commit()
    c.settle()
    assert c.state is CommitState.IDLE and rig.reseeks == 1 and rig.listener.calls == []
    assert rig.live.log == []  # neither the rows nor the offsets of a fenced range


def test_a_fence_whose_watermarks_cannot_be_read_owes_a_re_seek(rig: Rig) -> None:
    c = rig.committer
    rig.live.add("a", StaleWriterError("k2.trades", {}, {}))
    rig.reseek_fails.append(StateStoreError("down", backend="redis"))
    c.commit()
    c.settle()
    assert c.state is CommitState.STALLED and c.reseek_owed and rig.reseeks == 0
    assert rig.listener.calls == [("stall", False, True)]
    rig.later()
    c.recover(rig.now)  # the re-seek goes through the state breaker, then consumption resumes
    assert c.state is CommitState.IDLE and rig.reseeks == 1 and not c.reseek_owed
    assert rig.listener.calls[-1][0] == "resume"


def test_a_re_seek_that_fails_stalls_again(rig: Rig) -> None:
    c = rig.committer
    c.stall(StateStoreError("down", backend="redis"), reseek=True)
    rig.reseek_fails.append(StateStoreError("still down", backend="redis"))
    rig.later()
    c.recover(rig.now)
    assert c.state is CommitState.STALLED and c.reseek_owed and rig.reseeks == 0
    rig.later()
    c.recover(rig.now)
    assert c.state is CommitState.IDLE and rig.reseeks == 1


def test_a_failed_batch_during_a_commit_waits_for_that_commit_then_re_seeks(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a")
    frozen.gate = threading.Event()
    c.commit()
    c.stall(StateStoreError("down", backend="redis"), reseek=True)
    assert c.state is CommitState.STALLED_IN_FLIGHT and c.reseek_owed
    rig.later()
    c.recover(rig.now)  # the commit in flight goes first
    assert c.state is CommitState.STALLED_IN_FLIGHT and rig.reseeks == 0
    frozen.gate.set()
    rig.finish()
    c.recover(rig.now)
    assert c.state is CommitState.STALLED and rig.live.log == ["commit a", "offsets a"]
    c.recover(rig.now)  # the deadline passed already: now the re-seek
    assert c.state is CommitState.IDLE and rig.reseeks == 1


def test_the_kept_commit_goes_before_the_owed_re_seek(rig: Rig) -> None:
    c = rig.committer
    rig.live.add("a", LakeError("down"))
    c.commit()
    c.settle()
    c.stall(StateStoreError("down", backend="redis"), reseek=True)
    assert rig.listener.calls[-1] == ("stall", True, True)
    rig.later()
    c.recover(rig.now)
    assert c.state is CommitState.STALLED_IN_FLIGHT and rig.reseeks == 0
    rig.finish()
    c.recover(rig.now)
    c.recover(rig.now)
    assert rig.live.log == ["commit a", "offsets a"] and rig.reseeks == 1 and c.state is CommitState.IDLE


def test_forget_drops_the_stall_and_what_it_owed(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a", LakeError("down"))
    c.commit()
    c.settle()
    c.forget()
    assert c.state is CommitState.IDLE and c.settled
    assert rig.listener.calls[-1][0] == "dropped"
    assert c.flush()  # the kept checkpoint is the new owner's to replay: not retried here
    assert frozen.attempts == 1


def test_forget_lets_a_commit_in_flight_go_on(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a")
    frozen.gate = threading.Event()
    c.commit()
    c.forget()
    assert c.state is CommitState.IN_FLIGHT and rig.listener.calls == []
    frozen.gate.set()
    c.settle()
    assert rig.live.log == ["commit a", "offsets a"]


def test_flush_on_revoke_during_a_commit_waits_for_it_then_commits_the_rest_as_final(rig: Rig) -> None:
    c = rig.committer
    first = rig.live.add("a")
    first.gate = threading.Event()
    c.commit()
    rig.live.add("last")
    threading.Timer(0.05, first.gate.set).start()
    assert c.flush()
    assert rig.live.log == ["commit a", "offsets a", "commit last", "offsets last"]
    assert rig.live.finals == [False, True]  # the last one moves every watermark


def test_flush_tries_the_kept_commit_once_whatever_the_deadline(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a", LakeError("down"))
    c.commit()
    c.settle()
    rig.live.add("last")
    assert c.flush()  # the deadline is not reached: flush does not wait for it
    assert frozen.attempts == 2
    assert rig.live.log == ["commit a", "offsets a", "commit last", "offsets last"]


def test_flush_gives_up_when_the_dependency_is_still_down(rig: Rig) -> None:
    c = rig.committer
    rig.live.add("a", LakeError("down"), LakeError("still down"))
    c.commit()
    c.settle()
    rig.live.add("last")
    assert not c.flush()
    assert rig.live.finals == [False]  # the live checkpoint is not frozen behind a lost one
    assert rig.live.log == []


def test_flush_gives_up_on_a_fence(rig: Rig) -> None:
    rig.live.add("last", StaleWriterError("k2.trades", {}, {}))
    assert not rig.committer.flush()
    assert rig.live.log == []


@pytest.mark.parametrize("why", ["batch failed", "re-seek owed"])
def test_flush_does_not_commit_live_work_that_is_to_be_read_again(rig: Rig, why: str) -> None:
    c = rig.committer
    rig.live.add("last")
    if why == "re-seek owed":
        c.stall(StateStoreError("down", backend="redis"), reseek=True)
    assert c.flush(live=why == "re-seek owed")
    assert rig.live.finals == [] and rig.live.log == []


def test_an_error_that_is_not_retryable_stops_the_run(rig: Rig) -> None:
    rig.live.add("a", ValueError("a bug"))
    rig.committer.commit()
    with pytest.raises(ValueError):
        rig.committer.settle()


def test_upkeep_runs_behind_the_commit_in_flight(rig: Rig) -> None:
    c = rig.committer
    frozen = rig.live.add("a")
    frozen.gate = threading.Event()
    c.commit()
    done = threading.Event()

    def upkeep() -> None:
        rig.live.log.append("upkeep")
        done.set()

    c.after_commit(upkeep)
    frozen.gate.set()
    assert done.wait(10)
    c.settle()
    assert rig.live.log == ["commit a", "upkeep", "offsets a"]
