#!/usr/bin/env bash
# Proves the container image (Dockerfile) with podman, with no image registry: bootstraps
# a Debian base with debootstrap and imports it (once; kept in the podman store and as a
# tarball in the cache), builds the image's `runtime-prebuilt` target over it from a
# streamcdn binary built outside, runs its default command (`streamcdn up`) with ports
# published on 127.0.0.1, publishes 4 s with ffmpeg over RTMP, plays the HLS back with
# ffprobe (which must decode the frames), reads the admin API with the token `up`
# generated, and stops the container, which must exit 0 (SIGTERM: a graceful stop).
#
# Usage: scripts/container-smoke.sh [--base-only] [BINARY]
#   --base-only  only make sure the base image exists (scripts/test.sh runs this before
#           the tests, so that the bootstrap, ~1 min, is not part of any test's time)
#   BINARY  the streamcdn binary to put in the image; default: target/release/streamcdn,
#           else target/debug/streamcdn (under $CARGO_TARGET_DIR when set). A debug
#           binary is stripped first (a copy), which keeps the image small.
# Environment:
#   STREAMCDN_BASE_IMAGE     base image for both build arguments (default
#                            localhost/debian:bookworm; bootstrapped when missing)
#   STREAMCDN_BASE_CACHE     the bootstrapped base's tarball (default
#                            /var/cache/streamcdn/debian-bookworm-minbase.tar)
#   STREAMCDN_DEBIAN_MIRROR  debootstrap's mirror (default: the one apt uses)
#   STREAMCDN_PODMAN_FLAGS   flags for `podman build` and `podman run` (default: found
#                            by trying, see below)
#
# Needs (Debian): podman, runc, debootstrap (only to bootstrap the base), ffmpeg, curl,
# python3; root. scripts/test.sh installs them.
#
# Podman on some machines needs flags: where the process lacks CAP_SYS_RESOURCE (a VM
# sandbox), the default ulimits (nofile 1048576) cannot be set: "crun: setrlimit
# `RLIMIT_NOFILE`: Operation not permitted"; so the limits are pinned to what this
# shell has (--ulimit). Where cgroups are mounted in hybrid mode (v1 controllers plus a
# v2 tree with a controller), crun refuses: "cgroups in hybrid mode not supported";
# runc runs there (--runtime runc). The script tries no flags, then the ulimits, then
# runc with the ulimits, and says what it uses.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { echo "==> [$((SECONDS - started))s] $*"; }
fail() {
  echo "container smoke: FAILED: $*" >&2
  exit 1
}
need() {
  command -v "$1" >/dev/null || fail "\`$1\` is required: run scripts/test.sh, or \`apt-get install $2\`"
}

base_only=""
if [ "${1:-}" = --base-only ]; then
  base_only=yes
  shift
fi

need podman podman
if [ -z "$base_only" ]; then
  need ffmpeg ffmpeg
  need ffprobe ffmpeg
  need curl curl
  need python3 python3
fi

base_image=${STREAMCDN_BASE_IMAGE:-localhost/debian:bookworm}
cache_root=/var/cache/streamcdn
[ "$(id -u)" -eq 0 ] || cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/streamcdn
base_cache=${STREAMCDN_BASE_CACHE:-$cache_root/debian-bookworm-minbase.tar}
# Per run: suites of several checkouts may run at once.
image=localhost/streamcdn:smoke-$$
container=streamcdn-smoke-$$

binary=${1:-}
if [ -z "$binary" ] && [ -z "$base_only" ]; then
  target_dir=${CARGO_TARGET_DIR:-target}
  for candidate in "$target_dir/release/streamcdn" "$target_dir/debug/streamcdn"; do
    if [ -x "$candidate" ]; then
      binary=$candidate
      break
    fi
  done
  [ -n "$binary" ] || fail "no streamcdn binary: run \`cargo build --release -p streamcdn\` or name one"
fi
[ -n "$base_only" ] || [ -x "$binary" ] || fail "$binary is not an executable"

work=$(mktemp -d /tmp/streamcdn-container-smoke.XXXXXX)
cleanup() {
  podman rm -f -v -t 0 "$container" >/dev/null 2>&1 || true
  # Only the binary's layer goes: the base stage's layers stay as the build cache.
  podman rmi "$image" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the base image: Debian bookworm (minbase), bootstrapped here once -------------
debian_mirror() {
  local uri
  uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]]*$/\1/p' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$uri" ] || uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\{0,1\}\([^[:space:]]*\/debian\)\/\{0,1\}[[:space:]]\+bookworm[[:space:]].*/\2/p' \
    /etc/apt/sources.list 2>/dev/null | head -1)
  echo "${uri:-http://deb.debian.org/debian}"
}

if ! podman image exists "$base_image"; then
  if [ ! -s "$base_cache" ]; then
    need debootstrap debootstrap
    mirror=${STREAMCDN_DEBIAN_MIRROR:-$(debian_mirror)}
    step "bootstrapping Debian bookworm (minbase) from $mirror into $base_cache"
    mkdir -p "$(dirname "$base_cache")"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; fail "debootstrap failed (log above)"; }
    tar -C "$work/rootfs" -cf "$base_cache.partial" .
    mv "$base_cache.partial" "$base_cache"
    rm -rf "$work/rootfs"
  fi
  step "importing $base_cache as $base_image"
  podman import --quiet "$base_cache" "$base_image" >/dev/null
fi

# --- podman's flags on this machine (the last ones found are tried first) ---------
flags_cache=$cache_root/podman-flags
if [ -n "${STREAMCDN_PODMAN_FLAGS+set}" ]; then
  read -r -a podman_flags <<<"$STREAMCDN_PODMAN_FLAGS"
else
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  ulimits="--ulimit nofile=$nofile:$nofile --ulimit nproc=4096:4096"
  candidates=("" "$ulimits" "--runtime runc $ulimits")
  [ -s "$flags_cache" ] && candidates=("$(cat "$flags_cache")" "${candidates[@]}")
  podman_flags=()
  found=""
  for flags in "${candidates[@]}"; do
    read -r -a podman_flags <<<"$flags"
    if podman run --rm "${podman_flags[@]}" "$base_image" true >"$work/try.log" 2>&1; then
      found=yes
      mkdir -p "$cache_root"
      echo "$flags" >"$flags_cache"
      break
    fi
    echo "    podman run ${flags:-(no flags)}: $(tail -1 "$work/try.log")"
  done
  [ -n "$found" ] || fail "podman cannot run a container here (tried: no flags; $ulimits; --runtime runc $ulimits; is runc installed?)"
fi
step "podman flags: ${podman_flags[*]:-(none)}"

# --- the image, from the prebuilt binary --------------------------------------------
mkdir -p "$work/context/deploy/container"
cp deploy/container/up.toml "$work/context/deploy/container/"
build() {
  podman build "${podman_flags[@]}" \
    --build-arg BUILDER_IMAGE="$base_image" --build-arg RUNTIME_IMAGE="$base_image" \
    -f Dockerfile "$@" "$work/context" >"$work/build.log" 2>&1 \
    || { tail -30 "$work/build.log" >&2; fail "podman build failed (log above)"; }
}
if [ -n "$base_only" ]; then
  # The runtime stage's own layers (apt-get, the user) are kept as the build cache.
  step "building the Dockerfile's base stage over $base_image"
  build --target base
  echo "container base: $base_image"
  exit 0
fi
strip -o "$work/context/streamcdn" "$binary" 2>/dev/null || cp "$binary" "$work/context/streamcdn"
step "building $image (target runtime-prebuilt, base $base_image) from $binary"
build --target runtime-prebuilt --build-arg STREAMCDN_BINARY=streamcdn -t "$image"

# --- run `up` with its ports published on 127.0.0.1 --------------------------------
read -r rtmp_port http_port admin_port < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
step "running $image (streamcdn up): RTMP 127.0.0.1:$rtmp_port, HTTP 127.0.0.1:$http_port, admin 127.0.0.1:$admin_port"
podman run -d --name "$container" "${podman_flags[@]}" \
  -p "127.0.0.1:$rtmp_port:1935" -p "127.0.0.1:$http_port:8080" -p "127.0.0.1:$admin_port:8081" \
  "$image" >/dev/null
logs() { podman logs "$container" 2>&1; }
# (Output captured first: `grep -q` on a pipe would cut podman off, a failure under pipefail.)
is_up() { grep -q "streamcdn is up" <<<"$(logs)"; }
for _ in $(seq 100); do
  is_up && break
  if [ "$(podman inspect -f '{{.State.Running}}' "$container")" != true ]; then
    logs | tail -30 >&2
    fail "the container exited before \`streamcdn up\` was up (log above)"
  fi
  sleep 0.2
done
is_up || { logs | tail -30 >&2; fail "\`streamcdn up\` was not up within 20 s (log above)"; }
quickstart=$(logs)
key=$(sed -n 's/.*Stream Key: mystream?key=\([^[:space:]]*\).*/\1/p' <<<"$quickstart" | head -1)
token=$(sed -n 's/.*Admin token: \([0-9a-f]*\).*/\1/p' <<<"$quickstart" | head -1)
[ -n "$key" ] && [ -n "$token" ] || fail "no stream key or admin token in the quickstart output: $quickstart"

uid=$(podman exec "$container" id -u)
[ "$uid" != 0 ] || fail "streamcdn runs as root in the container"
roles=$(podman exec "$container" streamcdn --help)
for role in up ingest edge archiver router check-config; do
  grep -q "^  $role " <<<"$roles" || fail "the image's streamcdn has no \`$role\` subcommand: $roles"
done

# --- publish over RTMP, play over HLS ---------------------------------------------------
step "publishing 4 s to rtmp://127.0.0.1:$rtmp_port/demo/smoke"
ffmpeg -hide_banner -loglevel error -re \
  -f lavfi -i testsrc2=size=320x240:rate=30 -f lavfi -i sine=frequency=440 -t 4 \
  -c:v libx264 -preset ultrafast -g 30 -c:a aac \
  -f flv "rtmp://127.0.0.1:$rtmp_port/demo/smoke?key=$key" &
publisher=$!
# The admin API, through its published port with the generated token, lists the stream
# while it is live.
listed=""
for _ in $(seq 40); do
  streams=$(curl -sS --max-time 2 -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$admin_port/api/v1/streams" 2>&1) || true
  grep -q '"stream":"smoke"' <<<"$streams" && listed=yes && break
  sleep 0.1
done
wait "$publisher" || fail "ffmpeg could not publish into the container: $(logs | tail -20)"
[ -n "$listed" ] || fail "the admin API (127.0.0.1:$admin_port) did not list the live stream: $streams"

playlist=http://127.0.0.1:$http_port/demo/smoke/index.m3u8
step "playing $playlist"
probe=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
  -of csv=p=0 "$playlist" 2>&1) || fail "ffprobe could not play $playlist: $probe"
frames=$(grep -m1 -x '[0-9]\+' <<<"$probe") || fail "ffprobe decoded no video from $playlist: $probe"
[ "$frames" -ge 60 ] || fail "ffprobe decoded $frames video frames of the 120 published"

step "stopping the container (SIGTERM)"
podman stop -t 15 "$container" >/dev/null
exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$container")
[ "$exit_code" = 0 ] || fail "streamcdn exited $exit_code on SIGTERM: $(logs | tail -20)"

echo "container smoke: OK ($frames video frames played back through the image; uid $uid; $((SECONDS - started)) s)"
