"""Schemathesis against a real ``k2 serve`` on loopback, every phase (stateful included), every check.

``python -m benchmarks.fuzz [--max-examples 30]`` (``make fuzz``). Every check, including
``positive_data_acceptance``: the schema states each parameter's pattern, enum, bounds and whether
it is required, and the server accepts exactly that. The rules between parameters that OpenAPI
cannot state (snapshot_id or as_of, end after start within api.max_range_days, a cursor from the
previous page) are in the operations' descriptions and in ``benchmarks.fuzz_hooks``, which makes
positive cases obey them. The same setup as the soak: Kafka through K2's launcher, the ASX sample
in a throwaway lake, the server in its own process, with streams cut at 10 s (api.stream_max_s) so
that a valid slow replay ends inside the request timeout. Exits non-zero when schemathesis finds
anything.
"""

from __future__ import annotations

import argparse
import os
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
        server = _serve(settings, port, K2_API__STREAM_MAX_S="10")
        try:
            _wait_ready(url, server)
            cmd = [
                sys.executable, "-m", "schemathesis.cli", "run", f"{url}/openapi.json",
                "--phases", "examples,coverage,fuzzing,stateful", "--checks", "all",
                "--max-examples", str(args.max_examples), "-H", f"X-API-Key: {KEYS[0]}",
                "--request-timeout", "30", "--workers", "2", "--generation-deterministic",
                "--suppress-health-check", "all",
            ]  # fmt: skip
            env = {**os.environ, "SCHEMATHESIS_HOOKS": "benchmarks.fuzz_hooks"}
            code = subprocess.run(cmd, timeout=args.seconds, check=False, env=env).returncode
        finally:
            server.terminate()
            server.wait(20)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
