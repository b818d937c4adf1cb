"""Wall and CPU time of a block, the CPU of helper processes (a server) included.

On a shared machine the wall clock measures the neighbours as much as the code; CPU seconds move
far less with the load, so a benchmark prints both.
"""

from __future__ import annotations

import time
from types import TracebackType

import psutil

__all__ = ["Clock"]


class Clock:
    """``with Clock(pid) as c: …`` then ``c.wall`` and ``c.cpu`` (seconds).

    ``cpu`` is user + system time of this process (all its threads) plus that of each process in
    ``pids`` (e.g. a server started by the benchmark), over the block.
    """

    def __init__(self, *pids: int) -> None:
        self.procs = [psutil.Process(pid) for pid in pids]
        self.wall = 0.0
        self.cpu = 0.0

    def _cpu(self) -> float:
        total = time.process_time()
        for proc in self.procs:
            times = proc.cpu_times()
            total += times.user + times.system
        return total

    def __enter__(self) -> Clock:
        self._cpu_start = self._cpu()
        self._wall_start = time.perf_counter()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.wall = time.perf_counter() - self._wall_start
        self.cpu = self._cpu() - self._cpu_start
