#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need (ffmpeg,
# srt-live-transmit from srt-tools, Chromium, redis-server, redis-sentinel, HAProxy, dig, iproute2, curl, podman and debootstrap from Debian, an Enhanced-RTMP-capable ffmpeg from
# PyPI's imageio-ffmpeg, schemathesis and aiortc from PyPI, the S3 server s3s-fs from crates.io,
# hls.js, Shaka Player and playwright-core from npm, cargo-nextest), then runs every test in the
# workspace. Safe to run again: installs are skipped when
# the tools are present.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
command -v python3 >/dev/null || need_apt+=(python3 python3-pip)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs npm)
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The replicated registry's tests run Redis Sentinel.
command -v redis-sentinel >/dev/null || need_apt+=(redis-sentinel)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null || need_apt+=(haproxy)
command -v dig >/dev/null || need_apt+=(bind9-dnsutils)
# SRT interop: libsrt's own client (ffmpeg's is the other).
command -v srt-live-transmit >/dev/null || need_apt+=(srt-tools)
command -v dnsmasq >/dev/null || need_apt+=(dnsmasq-base)
# The multi-site tests: network namespaces (ip) and requests inside them (curl).
command -v ip >/dev/null || need_apt+=(iproute2)
command -v curl >/dev/null || need_apt+=(curl)
# HTTPS playback: certificates made and inspected with openssl.
command -v openssl >/dev/null || need_apt+=(openssl)
# The container image (tests/container.rs): podman with runc (crun refuses hybrid
# cgroups), debootstrap for its Debian base, and PyYAML to read the compose file.
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || need_apt+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need_apt+=(debootstrap)
python3 -c "import yaml" 2>/dev/null || need_apt+=(python3-yaml)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]} from Debian"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c "import imageio_ffmpeg" 2>/dev/null; then
  echo "==> installing imageio-ffmpeg (ffmpeg with HEVC over Enhanced RTMP) from PyPI"
  python3 -m pip install -q imageio-ffmpeg 2>/dev/null \
    || python3 -m pip install -q --break-system-packages imageio-ffmpeg
fi

if ! python3 -c "import aiortc" 2>/dev/null; then
  echo "==> installing aiortc (the second WHIP client of tests/whip.rs) from PyPI"
  python3 -m pip install -q aiortc 2>/dev/null \
    || python3 -m pip install -q --break-system-packages aiortc
fi

# The version tests/openapi.rs pins.
if ! python3 -c "import sys, schemathesis; sys.exit(schemathesis.__version__ != '4.32.5')" 2>/dev/null; then
  echo "==> installing schemathesis (checks the admin API against its OpenAPI document) from PyPI"
  python3 -m pip install -q schemathesis==4.32.5 2>/dev/null \
    || python3 -m pip install -q --break-system-packages schemathesis==4.32.5
fi

if [ ! -d tests/browser/node_modules/hls.js ] || [ ! -d tests/browser/node_modules/playwright-core ] \
  || [ ! -d tests/browser/node_modules/shaka-player ]; then
  echo "==> installing hls.js, Shaka Player and playwright-core from npm (browser tests)"
  npm install --no-package-lock --no-audit --no-fund --silent --prefix tests/browser
fi

if ! command -v s3s-fs >/dev/null && [ ! -x "$HOME/.cargo/bin/s3s-fs" ]; then
  echo "==> installing s3s-fs (an S3-compatible server, for the archive tests)"
  cargo install s3s-fs --version 0.14.1 --features binary --locked
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "==> installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

# The container test's Debian base: bootstrapped once (about a minute) and kept in
# podman's store and /var/cache/streamcdn, not inside a test's time.
scripts/container-smoke.sh --base-only || echo "==> no container base image: tests/container.rs will fail and say why"

echo "==> ffmpeg: $(ffmpeg -version | head -1)"
echo "==> $(redis-server --version | cut -d' ' -f1-3), $(/usr/sbin/haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3)"
echo "==> building"
cargo build --workspace --all-targets
echo "==> running tests"
exec cargo nextest run --workspace --no-fail-fast "$@"
