"""One chaos run: its names, its data directory, and the ``k2`` processes it starts and kills.

Every ``k2`` command runs as a real subprocess with the run's environment, so a SIGKILL is a real
SIGKILL and a restart really starts from what Kafka, Iceberg and the state store hold. Each run has
its own topic prefix, namespace, consumer group and Redis key prefix (runs share the services) and
its own data directory (catalog, warehouse, embedded state). Every random choice goes through
``self.rng``, seeded from the run's seed, so a seed replays the same choices.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Literal

from chaos.cluster import Services, k2_command
from k2.config import Settings, load_settings

__all__ = ["ASX_DATA", "WINDOW", "Backend", "Run"]

Backend = Literal["embedded", "redis"]
ASX_DATA = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"
#: K2's reorder window: above the simulator's reorder bound (50), below its late fills (> 60).
WINDOW = 55
#: The simulator's faults (those of the ground-truth tests): 1 % duplicates, 0.1 % gaps, reordering
#: within 50 ticks, late fills for half the gaps, a few malformed payloads.
SIM_FAULTS = ("--gap-rate", "0.001", "--dup-rate", "0.01", "--reorder-rate", "0.01",
              "--reorder-window", "50", "--late-fill-fraction", "0.5", "--malformed-rate", "0.0002")  # fmt: skip


class Run:
    """The context of one (scenario, backend, seed) run."""

    def __init__(self, services: Services, root: Path, scenario: str, backend: Backend, seed: int) -> None:
        self.services = services
        self.scenario = scenario
        self.backend = backend
        self.seed = seed
        self.rng = random.Random(f"{scenario}/{seed}")  # the same choices on both backends
        tag = f"c{random.Random().getrandbits(32):08x}"  # names only: never a choice of the run
        self.dir = root / f"{scenario}-{backend}-{seed}"
        self.dir.mkdir(parents=True)
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.names = {
            "K2_DATA_DIR": str(self.dir / "k2"),
            "K2_KAFKA__TOPIC_PREFIX": f"{tag}.",
            "K2_KAFKA__PARTITIONS": "4",
            "K2_LAKE__NAMESPACE": tag,
            "K2_PIPELINE__GROUP_ID": f"{tag}-ingest",
            "K2_REDIS__KEY_PREFIX": f"{tag}:",
            "K2_STATE__BACKEND": backend,
            "K2_STATE__REORDER_WINDOW": str(WINDOW),
            # embedded: fold the sequence-state log every 2 commits (default 16), so that SIGKILLs
            # land mid-fold too, not only on the commits a run of a few dozen checkpoints makes
            "K2_STATE__FOLD_ROWS": "4",
            "K2_LOG__FORMAT": "json",
        }
        # commits of a few thousand rows give a crash many places to land (chosen per seed)
        self.commit_rows = self.rng.choice([2_000, 5_000, 20_000])
        self.started = time.monotonic()
        self.notes: list[str] = []
        self._n = 0
        self._log_of: dict[int, Path] = {}

    # -- configuration -----------------------------------------------------------------------------
    def env(self, **extra: str) -> dict[str, str]:
        return {
            **self.services.env(),
            **self.names,
            "K2_LAKE__COMMIT_ROWS": str(self.commit_rows),
            "K2_PIPELINE__BATCH_MAX_MESSAGES": str(max(500, self.commit_rows // 4)),
            **extra,
        }

    def settings(self) -> Settings:
        """The run's settings in this process, for reading its tables."""
        return load_settings(
            data_dir=Path(self.names["K2_DATA_DIR"]),
            lake={"namespace": self.names["K2_LAKE__NAMESPACE"]},
            state={"reorder_window": WINDOW},
        )

    @property
    def catalog_db(self) -> Path:
        return Path(self.names["K2_DATA_DIR"]) / "catalog.db"

    @property
    def warehouse(self) -> Path:
        return Path(self.names["K2_DATA_DIR"]) / "warehouse"

    def note(self, text: str) -> None:
        """Something that happened, for the run's log line (e.g. a kill and when)."""
        self.notes.append(f"{time.monotonic() - self.started:.1f}s {text}")

    # -- processes -----------------------------------------------------------------------------------
    def start(self, *args: str, label: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        """Start ``k2 ARGS`` in the background; its output goes to ``logs/<n>-<label>.log``."""
        self._n += 1
        log = (self.logs / f"{self._n:03d}-{label or args[0]}.log").open("wb")
        proc = subprocess.Popen(
            k2_command(*args), env=self.env(**env), stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
        )
        log.close()
        self._log_of[proc.pid] = Path(log.name)
        return proc

    def wait_assigned(self, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> bool:
        """Wait until an ingest logs its first partition assignment (it takes a few seconds to start):
        a kill timed from here lands in its work, not in its imports. False if it never did."""
        log = self._log_of[proc.pid]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if b'"partitions assigned"' in log.read_bytes():
                return True
            time.sleep(0.1)
        return False

    def k2(self, *args: str, timeout_s: float = 600.0, label: str | None = None, **env: str) -> int:
        """Run ``k2 ARGS`` to the end and return its exit code."""
        proc = self.start(*args, label=label, **env)
        try:
            return proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise

    def ingest(
        self, *args: str, idle_s: float = 5.0, instance: str = "i1", **env: str
    ) -> subprocess.Popen[bytes]:
        """``k2 ingest`` with static membership: a restart under the same ``instance`` takes its
        partitions back at once instead of waiting out the killed member's session."""
        return self.start(
            "ingest", "--idle-timeout", str(idle_s), *args, label=f"ingest-{instance}",
            K2_PIPELINE__INSTANCE_ID=instance, **env,
        )  # fmt: skip

    def kill(self, proc: subprocess.Popen[bytes]) -> bool:
        """SIGKILL ``proc`` if it still runs; True if it was killed (rather than already done)."""
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        return alive

    def drain(self, *, idle_s: float = 5.0, attempts: int = 3) -> int:
        """A final clean ``k2 ingest`` until it exits 0: what the lake holds after it is the verdict.

        Returns how many attempts failed (an ingest that exits non-zero after chaos is worth a note).
        """
        failed = 0
        for _ in range(attempts):
            code = self.k2(
                "ingest", "--idle-timeout", str(idle_s), label="drain", K2_PIPELINE__INSTANCE_ID="i1"
            )
            if code == 0:
                return failed
            failed += 1
            self.note(f"drain ingest exited {code}")
        return failed

    # -- feeds ---------------------------------------------------------------------------------------
    @property
    def truth_file(self) -> Path:
        return self.dir / "truth.json"

    def simulate(
        self,
        count: int,
        *,
        reset_rate: float = 0.0,
        start: str | None = None,
        background: bool = False,
        rate: float | None = None,
    ) -> subprocess.Popen[bytes] | int:
        """``k2 feed simulate`` seeded from the run's seed, writing its exact truth (paced at ``rate``
        messages/s when given, so that it is still producing when a fault lands)."""
        args = ["feed", "simulate", "--symbols", "10", "--seed", str(self.seed), "--count", str(count),
                "--tick-rate", "0.2", *SIM_FAULTS, "--reset-rate", str(reset_rate),
                "--truth", str(self.truth_file), *(["--start", start] if start else []),
                *(["--rate", str(rate)] if rate else [])]  # fmt: skip
        if background:
            return self.start(*args, label="simulate")
        return self.k2(*args, label="simulate")

    def asx(self, *, symbols: list[str] | None = None, days: list[str] | None = None) -> int:
        """``k2 feed asx`` over the shipped sample (all of it unless ``symbols`` / ``days``)."""
        args = ["feed", "asx", str(ASX_DATA), "--no-reference"]
        if symbols:
            args += ["--symbols", ",".join(symbols)]
        if days:
            args += ["--days", ",".join(days)]
        return self.k2(*args, label="asx")
