#!/usr/bin/env bash
# Build K2's native consumer (native/: Rust over librdkafka, with pyo3) into src/k2/_native.abi3.so.
# Needs cargo (rustup) and a C toolchain: librdkafka is compiled from the rdkafka-sys crate's sources,
# every crate pinned with its checksum in native/Cargo.lock and fetched from crates.io by cargo.
# Without cargo it says so and exits 0: the pipeline then reads with confluent-kafka (the fallback).
# K2_NATIVE=0 skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
out=src/k2/_native.abi3.so
if [[ "${K2_NATIVE:-1}" == 0 ]]; then
  echo "K2_NATIVE=0: the native consumer is not built; the pipeline reads with confluent-kafka"
  exit 0
fi
CARGO=$(command -v cargo || echo "$HOME/.cargo/bin/cargo")
if [[ ! -x "$CARGO" ]]; then
  echo "no cargo on PATH or in ~/.cargo/bin: the native consumer is not built; the pipeline reads with confluent-kafka"
  exit 0
fi
stamp=native/target/.built-from
want=$(cat native/Cargo.toml native/Cargo.lock native/src/*.rs | sha256sum | cut -d' ' -f1)
if [[ -f "$out" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "building the native consumer (Rust, librdkafka from source; about a minute the first time) …"
PYO3_PYTHON="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" "$CARGO" build --release --locked --quiet --manifest-path native/Cargo.toml
cp native/target/release/lib_native.so "$out.tmp"
mv "$out.tmp" "$out"
echo "$want" > "$stamp"
"$PY" -c 'from k2 import _native; print("native consumer built, librdkafka", _native.LIBRDKAFKA_VERSION)'
