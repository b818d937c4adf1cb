"""Schemathesis against a real ``k2 serve`` on loopback, every phase (stateful included), every check.

``python -m benchmarks.fuzz [--max-examples 30]`` (``make fuzz``). Every check but
``positive_data_acceptance``: K2 takes most parameters as plain strings and checks them itself, so
a request the schema allows may still get a 400 that says why. The same setup as the soak: Kafka
through K2's launcher, the ASX sample in a throwaway lake, the server in its own process. Exits
non-zero when schemathesis finds anything.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.services import kafka_broker
from benchmarks.soak import KEYS, _load_lake, _serve, _wait_ready
from k2.services.process import free_port
from k2.stream.admin import ensure_topics

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=30)
    parser.add_argument("--seconds", type=int, default=900, help="stop schemathesis after this long")
    args = parser.parse_args(argv)
    with kafka_broker(heap="512m") as settings:
        ensure_topics(settings.kafka)
        _load_lake(settings)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = _serve(settings, port)
        try:
            _wait_ready(url, server)
            cmd = [
                sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
                "--phases", "examples,coverage,fuzzing,stateful", "--checks", "all",
                # K2's rules that OpenAPI cannot state (snapshot_id or as_of, ranges, caps, which
                # symbols exist) answer schema-valid requests with a clear 400: not a finding.
                "--exclude-checks", "positive_data_acceptance",
                "--max-examples", str(args.max_examples), "-H", f"X-API-Key: {KEYS[0]}",
                "--request-timeout", "30", "--workers", "2", "--generation-deterministic",
                "--suppress-health-check", "all",
            ]  # fmt: skip
            code = subprocess.run(cmd, timeout=args.seconds, check=False).returncode
        finally:
            server.terminate()
            server.wait(20)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
