"""The commit side of the loop: one frozen checkpoint at a time on a worker thread, and the stall.

Commits overlap the reading of the next batches but stay strictly in order: the committer waits
for the one in flight before it freezes the next. A dependency that fails (Iceberg, the state
store, Kafka produce) or whose breaker is open *stalls* the pipeline instead of stopping it: the
frozen checkpoint that failed is kept whole and committed again once the breakers' wait is over.
A classification that failed, or a fence whose watermarks cannot be read yet, owes a *re-seek*:
the unfrozen work is dropped and read again from the committed watermarks once the store answers.

States (``CommitState``; ``_set`` is the only place that changes them)::

    from               event                                 to
    IDLE               commit, something to freeze           IN_FLIGHT
    IN_FLIGHT          the commit went through               IDLE
    IN_FLIGHT          a dependency failed: checkpoint kept  STALLED
    IDLE, IN_FLIGHT    a batch failed: re-seek owed          STALLED, STALLED_IN_FLIGHT
    STALLED            deadline passed, a commit kept        STALLED_IN_FLIGHT (the kept one again)
    STALLED_IN_FLIGHT  the commit went through               STALLED (what else it owes waits)
    STALLED_IN_FLIGHT  it failed again: kept again           STALLED (with a new deadline)
    STALLED            deadline passed, re-seek owed         IDLE, or STALLED if the re-seek failed
    STALLED            nothing owed                          IDLE (consumption resumes)
    any                a fence (another writer's range)      re-seek now; STALLED if it cannot
    any                forget (the partitions moved away)    IN_FLIGHT if a commit runs, else IDLE
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from k2.lake.errors import StaleWriterError
from k2.observability.logging import get_logger
from k2.resilience.breaker import BreakerBoard
from k2.state.errors import StaleStateError

__all__ = ["CommitState", "Committer", "Freezer", "Frozen", "StallListener"]

log = get_logger(__name__)

#: The shortest stall: a breaker that would take a call at once must not make the loop spin.
MIN_STALL_S = 0.2


class Frozen(Protocol):
    """A frozen checkpoint (``checkpoint.FrozenCheckpoint``): steps 1-4, then step 5."""

    attempts: int

    @property
    def rows(self) -> int: ...

    def commit(self) -> None: ...

    def commit_group_offsets(self) -> None: ...


class Freezer(Protocol):
    """The live checkpoint (``checkpoint.Checkpoint``), as far as the committer needs it."""

    def freeze(self, *, final: bool = False) -> Frozen | None: ...


class StallListener(Protocol):
    """Who pauses consumption while a stall lasts (``governor.Governor``)."""

    def stall(self, exc: BaseException, *, wait: float, kept: bool, reseek: bool) -> None: ...

    def resume(self) -> None: ...

    def stall_dropped(self) -> None: ...


class CommitState(enum.Enum):
    IDLE = "idle"  # nothing in flight, nothing owed: the next checkpoint may be frozen
    IN_FLIGHT = "in-flight"  # one frozen checkpoint commits on the worker thread
    STALLED = "stalled"  # consumption paused until the deadline; the kept work waits
    STALLED_IN_FLIGHT = "stalled-in-flight"  # paused while a commit runs (a retry, or one begun before)


@dataclass(frozen=True)
class _Flight:
    future: Future[None]
    frozen: Frozen


@dataclass(frozen=True)
class _Stall:
    """What a stall owes when it ends, in this order: the kept checkpoint, then the re-seek."""

    until: float
    kept: Frozen | None = None
    reseek: bool = False

    @property
    def owes(self) -> bool:
        return self.kept is not None or self.reseek


class Committer:
    """Owns the commit worker, the commit in flight, the kept retry and the stall deadline.

    Args:
        checkpoint: the live checkpoint, frozen here and nowhere else.
        breakers: the dependency breakers; their ``retryable()`` errors stall, their wait sets the deadline.
        listener: paused and resumed with the stall (the governor).
        reseek: drops the unfrozen work and re-assigns from the committed watermarks (the runner's).
    """

    def __init__(
        self,
        checkpoint: Freezer,
        breakers: BreakerBoard,
        listener: StallListener,
        reseek: Callable[[], None],
        *,
        clock: Callable[[], float],
    ) -> None:
        self.checkpoint = checkpoint
        self.breakers = breakers
        self.listener = listener
        self._reseek = reseek
        self._clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="k2-commit")
        self.state = CommitState.IDLE
        self._flight: _Flight | None = None
        self._stall: _Stall | None = None

    def _set(self, *, flight: _Flight | None, stall: _Stall | None) -> None:
        """The one transition: the state follows from what is in flight and what a stall owes."""
        assert stall is None or flight is None or stall.kept is None, "a kept checkpoint is not in flight"
        self._flight, self._stall = flight, stall
        if stall is None:
            self.state = CommitState.IDLE if flight is None else CommitState.IN_FLIGHT
        else:
            self.state = CommitState.STALLED if flight is None else CommitState.STALLED_IN_FLIGHT

    # -- what the loop asks -----------------------------------------------------------------------
    @property
    def stalled(self) -> bool:
        return self._stall is not None

    @property
    def reseek_owed(self) -> bool:
        """The unfrozen work will be dropped and read again: don't hand it more."""
        return self._stall is not None and self._stall.reseek

    @property
    def settled(self) -> bool:
        """No commit in flight, none kept for a retry, no re-seek owed."""
        return self._flight is None and (self._stall is None or not self._stall.owes)

    # -- commits ----------------------------------------------------------------------------------
    def commit(self) -> None:
        """Freeze the live checkpoint and commit it on the worker, after the one in flight."""
        self.settle()
        if self.state is not CommitState.IDLE:
            return  # commits stay in order: the kept one goes first, when the stall ends
        frozen = self.checkpoint.freeze(final=False)
        if frozen is not None:
            self._set(flight=_Flight(self._executor.submit(frozen.commit), frozen), stall=None)

    def poll(self) -> None:
        """Take a finished commit's verdict without waiting: a failure or a fence surfaces early."""
        if self._flight is not None and self._flight.future.done():
            self.settle()

    def settle(self) -> None:
        """Wait for the commit in flight and act on its verdict; step 5 runs here, on this thread."""
        flight = self._flight
        if flight is None:
            return
        self._set(flight=None, stall=self._stall)
        try:
            flight.future.result()
        except (StaleWriterError, StaleStateError) as exc:
            self._fenced(exc)
        except self.breakers.retryable() as exc:  # a dependency is down: pause, keep, retry
            self._stall_on(exc, kept=flight.frozen)
        else:
            if flight.frozen.attempts > 1:
                log.info(
                    "commit retried successfully", attempts=flight.frozen.attempts, rows=flight.frozen.rows
                )
            flight.frozen.commit_group_offsets()

    def flush(self, *, live: bool = True) -> bool:
        """Commit everything owed before the partitions leave or the run ends, on this thread.

        In order: the commit in flight, the kept one (one last try, whatever the deadline), then the
        live checkpoint as a final one (every watermark moves), unless its work is to be read again
        (a re-seek is owed, or ``live`` is False: its last batch failed). Returns False when a
        dependency or a fence left a range uncommitted: whoever owns it next reads it again.
        """
        try:
            self.settle()
            stall = self._stall
            if stall is not None and stall.kept is not None:
                self._set(flight=None, stall=dataclasses.replace(stall, kept=None))
                stall.kept.commit()
                stall.kept.commit_group_offsets()
            if live and not self.reseek_owed:
                frozen = self.checkpoint.freeze(final=True)
                if frozen is not None:
                    frozen.commit()
                    frozen.commit_group_offsets()
        except self._fenced_or_down() as exc:
            log.warning(
                "last commit failed; the next owner reads the uncommitted range again", error=str(exc)
            )
            return False
        return True

    def after_commit(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the commit worker, behind the commit in flight: never concurrent with one."""
        self._executor.submit(fn)

    # -- the stall --------------------------------------------------------------------------------
    def stall(self, exc: BaseException, *, reseek: bool = False) -> None:
        """Pause consumption for the breakers' wait; ``reseek``: the unfrozen work is to be re-read."""
        self._stall_on(exc, reseek=reseek)

    def recover(self, now: float) -> None:
        """One step out of a stall: the kept commit first, then the owed re-seek, then resume."""
        stall = self._stall
        if stall is None:
            return
        if self._flight is not None:
            self.poll()  # the retry's verdict (may stall again)
            return
        if not stall.owes:
            self._resume()
            return
        if now < stall.until:
            return
        if stall.kept is not None:
            flight = _Flight(self._executor.submit(stall.kept.commit), stall.kept)
            self._set(flight=flight, stall=dataclasses.replace(stall, kept=None))
            return
        try:
            self.breakers.get("state").call(self._reseek)
        except self._fenced_or_down() as exc:
            self._stall_on(exc, reseek=True)
            return
        self._resume()

    def forget(self) -> None:
        """The partitions moved away: what the stall owed is the new owner's to replay.

        A commit in flight goes on; its verdict is taken as usual.
        """
        stall = self._stall
        self._set(flight=self._flight, stall=None)
        if stall is not None:
            self.listener.stall_dropped()

    def shutdown(self) -> None:
        """Wait for the worker's queue to drain and stop it."""
        self._executor.shutdown(wait=True)

    def _fenced_or_down(self) -> tuple[type[BaseException], ...]:
        """What ends a last commit or a re-seek without stopping the run: a fence or a dependency down."""
        return (StaleWriterError, StaleStateError, *self.breakers.retryable())

    def _stall_on(self, exc: BaseException, *, kept: Frozen | None = None, reseek: bool = False) -> None:
        wait = max(self.breakers.retry_after(), MIN_STALL_S)
        old = self._stall or _Stall(0.0)
        assert kept is None or old.kept is None, "one kept checkpoint at a time"
        stall = _Stall(self._clock() + wait, kept or old.kept, reseek or old.reseek)
        self._set(flight=self._flight, stall=stall)
        self.listener.stall(exc, wait=wait, kept=stall.kept is not None, reseek=stall.reseek)

    def _fenced(self, exc: StaleWriterError | StaleStateError) -> None:
        # Another consumer committed this range (we are a zombie after a rebalance): re-seek from
        # the tables' watermarks instead of writing anything twice.
        log.warning("fenced by another writer; re-seeking from the table watermarks", error=str(exc))
        try:
            self._reseek()
        except self.breakers.retryable() as error:  # the watermarks cannot be read yet
            self._stall_on(error, reseek=True)
            return
        if self._stall is not None:  # the re-seek just done pays what the stall owed
            self._set(flight=self._flight, stall=dataclasses.replace(self._stall, reseek=False))

    def _resume(self) -> None:
        self._set(flight=None, stall=None)
        self.listener.resume()
