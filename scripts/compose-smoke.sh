#!/usr/bin/env bash
# Runs the compose cluster (deploy/compose/compose.yaml) end to end with podman-compose,
# with no image registry: the streamcdn image from a built binary and s3s-fs from an
# installed one (both the Dockerfiles' prebuilt targets), Redis and HAProxy from Debian
# packages over the Debian base scripts/container-smoke.sh bootstraps (stand-ins for the
# official images the file names). Then: publishes 8 s through HAProxy, plays it from
# the edge (ingest -> mid-tier -> edge), checks the router's redirect, purges through
# the command invocation system, archives the recording to S3 and plays it again from
# there, and takes the cluster down with its volumes.
#
# Usage: scripts/compose-smoke.sh [BINARY]    (BINARY as for scripts/container-smoke.sh)
# Needs (Debian): podman, runc, podman-compose, ffmpeg, curl; s3s-fs (`cargo install
# s3s-fs --version 0.14.1 --features binary`); root; the ports compose publishes on the
# host free (1935, 8080, 8443, 8081, 8082, 5353). Not part of the test suite (fixed host
# ports, nine containers); takes about a minute once the images exist.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { echo "==> [$((SECONDS - started))s] $*"; }
fail() {
  echo "compose smoke: FAILED: $*" >&2
  exit 1
}
need() {
  command -v "$1" >/dev/null || fail "\`$1\` is required: \`apt-get install $2\`"
}
need podman podman
need podman-compose podman-compose
need ffmpeg ffmpeg
need ffprobe ffmpeg
need curl curl
s3s_fs=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
[ -x "$s3s_fs" ] || fail "s3s-fs is required: cargo install s3s-fs --version 0.14.1 --features binary"
for port in 1935 8080 8443 8081 8082 5353; do
  [ -z "$(ss -Hltun "sport = :$port")" ] || fail "port $port is in use on this host; compose.yaml publishes it"
done

binary=${1:-}
if [ -z "$binary" ]; then
  target_dir=${CARGO_TARGET_DIR:-target}
  for candidate in "$target_dir/release/streamcdn" "$target_dir/debug/streamcdn"; do
    [ -x "$candidate" ] && binary=$candidate && break
  done
  [ -n "$binary" ] || fail "no streamcdn binary: run \`cargo build --release -p streamcdn\` or name one"
fi

# The Debian base and podman's flags on this machine (found and kept by container-smoke).
scripts/container-smoke.sh --base-only
base_image=${STREAMCDN_BASE_IMAGE:-localhost/debian:bookworm}
cache_root=/var/cache/streamcdn
[ "$(id -u)" -eq 0 ] || cache_root=${XDG_CACHE_HOME:-$HOME/.cache}/streamcdn
flags=${STREAMCDN_PODMAN_FLAGS-$(cat "$cache_root/podman-flags" 2>/dev/null || true)}
read -r -a podman_flags <<<"$flags"

project=streamcdn-compose-smoke
work=$(mktemp -d /tmp/streamcdn-compose-smoke.XXXXXX)
export STREAMCDN_IMAGE=localhost/streamcdn:compose-smoke
export S3_IMAGE=localhost/s3s-fs:compose-smoke
export REDIS_IMAGE=localhost/redis:compose-smoke
export HAPROXY_IMAGE=localhost/haproxy:compose-smoke
export S3_SECRET_KEY=compose-smoke-secret
compose() {
  podman-compose -f deploy/compose/compose.yaml -p "$project" --podman-run-args="$flags" "$@"
}
cleanup() {
  compose down -v >"$work/down.log" 2>&1 || true
  podman network rm "${project}_default" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- images -----------------------------------------------------------------------
build() {
  local log=$work/build-$RANDOM.log
  podman build "${podman_flags[@]}" --build-arg BUILDER_IMAGE="$base_image" \
    --build-arg RUNTIME_IMAGE="$base_image" "$@" >"$log" 2>&1 \
    || { tail -30 "$log" >&2; fail "podman build $* failed (log above)"; }
}
step "building the images over $base_image"
mkdir -p "$work/streamcdn/deploy/container" "$work/s3s-fs" "$work/stand-ins"
cp deploy/container/up.toml "$work/streamcdn/deploy/container/"
strip -o "$work/streamcdn/streamcdn" "$binary" 2>/dev/null || cp "$binary" "$work/streamcdn/streamcdn"
build --target runtime-prebuilt --build-arg STREAMCDN_BINARY=streamcdn -t "$STREAMCDN_IMAGE" \
  -f Dockerfile "$work/streamcdn"
cp "$s3s_fs" "$work/s3s-fs/s3s-fs"
build --target prebuilt -t "$S3_IMAGE" -f deploy/compose/s3s-fs.Dockerfile "$work/s3s-fs"
cat >"$work/stand-ins/redis.Dockerfile" <<EOF
FROM $base_image
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* && install -d -o redis -g redis /data
WORKDIR /data
USER redis
CMD ["redis-server"]
EOF
cat >"$work/stand-ins/haproxy.Dockerfile" <<EOF
FROM $base_image
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
    && rm -rf /var/lib/apt/lists/*
USER haproxy
CMD ["haproxy", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
EOF
build -t "$REDIS_IMAGE" -f "$work/stand-ins/redis.Dockerfile" "$work/stand-ins"
build -t "$HAPROXY_IMAGE" -f "$work/stand-ins/haproxy.Dockerfile" "$work/stand-ins"

# --- the cluster ------------------------------------------------------------------
step "podman-compose up (project $project)"
compose up -d >"$work/up.log" 2>&1 || { tail -30 "$work/up.log" >&2; fail "podman-compose up failed (log above)"; }
services=(redis s3 ingest-1 ingest-2 haproxy archiver mid edge.localhost router)
for service in "${services[@]}"; do
  [ "$(podman inspect -f '{{.State.Running}}' "${project}_${service}_1" 2>/dev/null)" = true ] \
    || fail "service $service is not running: $(podman logs "${project}_${service}_1" 2>&1 | tail -20)"
done

token=$(sed -n 's/^token = "\(.*\)"/\1/p' deploy/compose/config/router.toml | head -1)
key=$(sed -n 's/^stream_key = "\(.*\)"/\1/p' deploy/compose/config/ingest-1.toml | head -1)
admin() { curl -sS --max-time 5 -H "Authorization: Bearer $token" "http://127.0.0.1:8081$1"; }
nodes=""
for _ in $(seq 100); do
  nodes=$(admin /api/v1/nodes 2>/dev/null || true)
  [ "$(grep -o '"roles"' <<<"$nodes" | wc -l)" -ge 6 ] && break
  sleep 0.3
done
[ "$(grep -o '"roles"' <<<"$nodes" | wc -l)" -ge 6 ] \
  || fail "the node directory (router's admin API) does not list the 6 streamcdn servers: $nodes"

# --- publish through HAProxy, play from the edge ---------------------------------
step "publishing 8 s to rtmp://127.0.0.1:1935/newsroom/cam (HAProxy)"
ffmpeg -hide_banner -loglevel error -re \
  -f lavfi -i testsrc2=size=320x240:rate=30 -f lavfi -i sine=frequency=440 -t 8 \
  -c:v libx264 -preset ultrafast -g 30 -c:a aac \
  -f flv "rtmp://127.0.0.1:1935/newsroom/cam?key=$key" &
publisher=$!
redirect=""
for _ in $(seq 50); do
  redirect=$(curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' \
    http://127.0.0.1:8082/newsroom/cam/index.m3u8 2>/dev/null || true)
  [ "$redirect" = "302 http://edge.localhost:8080/newsroom/cam/index.m3u8" ] && break
  sleep 0.2
done
wait "$publisher" || fail "ffmpeg could not publish through HAProxy"
[ "$redirect" = "302 http://edge.localhost:8080/newsroom/cam/index.m3u8" ] \
  || fail "the router did not redirect to the edge: $redirect"

play() {
  local probe frames
  probe=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
    -of csv=p=0 "http://127.0.0.1:8080/newsroom/cam/index.m3u8" 2>&1) || fail "ffprobe: $probe"
  frames=$(grep -m1 -x '[0-9]\+' <<<"$probe") || fail "no video decoded from the edge: $probe"
  [ "$frames" -ge 180 ] || fail "the edge played $frames video frames of the 240 published"
  echo "$frames"
}
live_frames=$(play)
step "played $live_frames frames from the edge"

purge=$("$binary" trigger purge --admin http://127.0.0.1:8081 --token "$token" \
  --pattern '*/newsroom/cam/*' 2>&1) || fail "purge did not complete: $purge"
step "purged through the router's command invocation system"

# --- archive to S3, play from there -----------------------------------------------
# The provider's archive delay down to 1 s, through the archiver's own admin API (in
# the compose network only: bash's /dev/tcp inside its container).
body='{"archive_after":"1s"}'
podman exec "${project}_archiver_1" bash -c "exec 3<>/dev/tcp/127.0.0.1/8081
printf 'PUT /api/v1/providers/newsroom/settings HTTP/1.1\r\nHost: archiver\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' '$token' ${#body} '$body' >&3
head -1 <&3" | grep -q ' 200 ' || fail "the archiver's settings API refused the archive delay"
archived=""
for _ in $(seq 100); do
  archived=$(podman exec "${project}_s3_1" find /data/streamcdn-archive -name _complete.json 2>/dev/null || true)
  [ -n "$archived" ] && break
  sleep 0.3
done
[ -n "$archived" ] || fail "nothing archived to S3: $(podman logs "${project}_archiver_1" 2>&1 | tail -10)"
sleep 1
archive_frames=$(play)
step "archived to S3 ($archived) and played $archive_frames frames from there"

echo "compose smoke: OK (9 services; $live_frames frames live, $archive_frames archived; $((SECONDS - started)) s)"
