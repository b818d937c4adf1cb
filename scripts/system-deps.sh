#!/usr/bin/env bash
# Installs the system packages K2's local services and its tests need, only where missing.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
# the Iceberg catalog on PostgreSQL (`k2 services up postgres`): Debian keeps the server's programs
# (initdb, postgres) off PATH, in /usr/lib/postgresql/<version>/bin
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
# the dashboard's browser test (tests/integration/test_dashboard.py) drives Debian's chromium headless
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# Go builds the local S3 server (SeaweedFS) from its Go module on its first start (`k2 services up s3`,
# the S3 warehouse test); an older Go fetches the toolchain SeaweedFS asks for through the module proxy.
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || missing+=(golang-go)
# the reverse proxy in front of API replicas (`k2 services up proxy`, the replicas' scale test); Debian
# keeps nginx in /usr/sbin, off a non-root user's PATH
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# the native consumer (scripts/build-native.sh) compiles librdkafka from its crate: a C toolchain,
# make and zlib's headers; Rust itself comes from rustup (no Debian package is new enough)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v make >/dev/null 2>&1 || missing+=(make)
[ -f /usr/include/zlib.h ] || missing+=(zlib1g-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if ! command -v java >/dev/null 2>&1; then
  missing+=(openjdk-17-jre-headless)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts a system redis on 6379, a system PostgreSQL cluster on 5432 and (where systemd runs) an
# nginx on port 80 after install; K2 runs its own on other ports, in its data directory, and leaves them alone.
