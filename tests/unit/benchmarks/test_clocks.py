"""The benchmark clock counts this process's CPU and that of the processes it is given."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from benchmarks.clocks import Clock


def test_counts_the_cpu_of_a_helper_process_too() -> None:
    # The helper spins for 0.3 s of CPU, then idles while the clocks are read (it must still be alive).
    spin = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)\n"
    helper = subprocess.Popen([sys.executable, "-c", spin])
    try:
        with Clock() as alone, Clock(helper.pid) as both:
            deadline = time.monotonic() + 20
            while psutil.Process(helper.pid).cpu_times().user < 0.3 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        helper.kill()
        helper.wait()
    assert both.cpu >= alone.cpu + 0.2  # the helper's spinning, not this process's waiting


def test_wall_and_cpu_of_a_block() -> None:
    with Clock() as clock:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
    assert clock.cpu >= 0.04 and clock.wall >= clock.cpu * 0.5
