#!/usr/bin/env bash
# Edge and scale-out benchmarks, streamcdn side by side with nginx proxy_cache in one run:
#   (a) hot-cache throughput (wrk): our edge vs nginx proxy_cache, each in front of the
#       same streamcdn ingest origin (viewer -> cache -> origin)
#   (b) CPU and memory per 1,000 simulated viewers (hls-viewers) of a live stream on one
#       cache, ours and nginx's
#   (c) failover: kill -9 the ingest holding a live stream (two ingests behind HAProxy),
#       the publisher reconnects at once; time until the edge serves a segment from the
#       other ingest, and how far behind the new ingest's own origin that is
# Usage: bench/edge.sh [PARTS]   PARTS: any of a b c (default: abc)
# (needs: ffmpeg nginx wrk redis-server haproxy)
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${1:-abc}
for t in ffmpeg nginx wrk redis-server curl; do command -v $t >/dev/null || { echo "missing $t: apt-get install ffmpeg nginx wrk redis-server curl"; exit 1; }; done
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
[ -x "$HAPROXY" ] || { echo "missing haproxy: apt-get install haproxy"; exit 1; }

cargo build --release -q -p streamcdn -p rtmp-load -p hls-viewers
BIN=$PWD/target/release
DIR=$(mktemp -d /tmp/streamcdn-edge-bench.XXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" $(cat "$DIR/nginx.pid" 2>/dev/null) 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$DIR/logs" "$DIR/shared" "$DIR/ncache"
chmod 777 "$DIR" "$DIR/ncache"
HZ=$(getconf CLK_TCK)
# CPU ticks of one process; empty once it has exited.
ticks_of() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null; }
hwm_kb() { local t=0 k; for p in "$@"; do k=$(awk '/VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null); t=$((t + ${k:-0})); done; echo $t; }

echo "== source: 60 s of 640x360p30 H.264 at 1 Mbit/s + AAC, keyframe every 2 s"
ffmpeg -loglevel error -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 60 -c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -b:v 1M -maxrate 1M -bufsize 1M \
  -c:a aac -b:a 96k -f flv "$DIR/src.flv"

redis-server --port 16379 --bind 127.0.0.1 --save "" --appendonly no > "$DIR/logs/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.5
REGISTRY='[registry]
backend = "redis"
url = "redis://127.0.0.1:16379/"
namespace = "bench"
lease = "3s"'
PROVIDER='[[providers]]
name = "bench"
stream_key = "bench-key-123456"'

start_ingest() { # index
  local i=$1
  cat > "$DIR/ingest$i.toml" <<TOML
[node]
data_dir = "$DIR/shared"
[rtmp]
listen = "127.0.0.1:1935$i"
tls_listen = "off"
[origin]
listen = "127.0.0.1:1818$i"
[http]
listen = "127.0.0.1:1828$i"
tls_listen = "off"
[federation]
listen = "off"
[admin]
listen = "127.0.0.1:1838$i"
$REGISTRY
$PROVIDER
TOML
  STREAMCDN_LOG=warn $BIN/streamcdn ingest --config "$DIR/ingest$i.toml" >> "$DIR/logs/ingest$i.log" 2>&1 &
  eval "INGEST$i=$!"
  PIDS+=($!)
}
start_ingest 1
start_ingest 2
cat > "$DIR/edge.toml" <<TOML
[node]
data_dir = "$DIR/edge"
[http]
listen = "127.0.0.1:18080"
tls_listen = "off"
[federation]
listen = "off"
[admin]
listen = "127.0.0.1:18083"
[edge]
cache_memory = "256MiB"
$REGISTRY
TOML
STREAMCDN_LOG=warn $BIN/streamcdn edge --config "$DIR/edge.toml" > "$DIR/logs/edge.log" 2>&1 &
EDGE=$!
PIDS+=($EDGE)
cat > "$DIR/nginx.conf" <<NGINX
worker_processes 2;
pid $DIR/nginx.pid;
error_log $DIR/logs/nginx-error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  proxy_cache_path $DIR/ncache levels=1:2 keys_zone=hls:32m max_size=1g inactive=10m use_temp_path=off;
  upstream origin { server 127.0.0.1:18181; keepalive 32; }
  server {
    listen 127.0.0.1:18090;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache hls;
      proxy_cache_lock on;
      proxy_cache_valid 200 1s;
      add_header X-Cache \$upstream_cache_status;
    }
  }
}
NGINX
nginx -p "$DIR" -c "$DIR/nginx.conf"
NGINX_PIDS() { echo $(cat "$DIR/nginx.pid") $(pgrep -P "$(cat "$DIR/nginx.pid")"); }
sleep 1

if [[ $PARTS == *a* ]]; then
echo
echo "== (a) hot-cache throughput: wrk -t2 -c64 -d10s, same object through each cache"
$BIN/rtmp-load publish --url "rtmp://127.0.0.1:19351/bench/vod?key=bench-key-123456" --flv "$DIR/src.flv" --streams 1 --seconds 20 > "$DIR/logs/load-a.log" 2>&1
sleep 3
REC=$(ls "$DIR/shared/recordings/bench/vod-0")
SEG="/bench/vod-0/$REC/000003.m4s"
PLAYLIST="/bench/vod-0/$REC/playlist.m3u8"
SIZE=$(curl -s "http://127.0.0.1:18080$SEG" | wc -c)
echo "segment $SEG: $SIZE bytes"
rps() { wrk -t2 -c64 -d10s "$1" | awk '/Requests\/sec/{print $2}'; }
for url in "$SEG" "$PLAYLIST" "$SEG" "$PLAYLIST"; do
  for port in 18080 18090; do curl -s -o /dev/null "http://127.0.0.1:$port$url"; curl -s -o /dev/null "http://127.0.0.1:$port$url"; done
  OURS=$(rps "http://127.0.0.1:18080$url")
  NGINX=$(rps "http://127.0.0.1:18090$url")
  echo "$(basename "$url"): streamcdn edge $OURS req/s, nginx proxy_cache $NGINX req/s, ratio $(echo "$OURS / $NGINX" | bc -l | cut -c1-4)"
done
fi

if [[ $PARTS == *b* ]]; then
echo
echo "== (b) 1,000 simulated viewers of a live 1 Mbit/s stream for 30 s on one cache"
$BIN/rtmp-load publish --url "rtmp://127.0.0.1:19351/bench/live?key=bench-key-123456" --flv "$DIR/src.flv" --streams 1 --seconds 100 > "$DIR/logs/load-b.log" 2>&1 &
LOAD=$!
sleep 8
viewers_run() { # name port pids...
  local name=$1 port=$2; shift 2
  # Only processes that live through the whole window count: nginx's cache loader, a
  # child of its master, exits during the run.
  local -A before=()
  local p t used=0
  for p in "$@"; do t=$(ticks_of "$p"); [ -n "$t" ] && before[$p]=$t; done
  $BIN/hls-viewers --url "http://127.0.0.1:$port/bench/live-0/index.m3u8" --viewers 1000 --duration 30s --ramp 5s > "$DIR/logs/viewers-$name.json" 2> "$DIR/logs/viewers-$name.err"
  for p in "${!before[@]}"; do t=$(ticks_of "$p"); [ -n "$t" ] && used=$((used + t - before[$p])); done
  local cpu
  cpu=$(echo "$used / $HZ / 35" | bc -l | cut -c1-4)
  echo "$name: $cpu cores busy on average, peak RSS $(( $(hwm_kb "$@") / 1024 )) MiB; viewers: $(tr -d '\n ' < "$DIR/logs/viewers-$name.json" | grep -o '"segments":[0-9]*\|"bytes":[0-9]*\|"errors":[0-9]*\|"stalls":[0-9]*' | tr '\n' ' ')"
}
viewers_run "streamcdn edge" 18080 $EDGE
viewers_run "nginx proxy_cache" 18090 $(NGINX_PIDS)
kill $LOAD 2>/dev/null || true
wait $LOAD 2>/dev/null || true
fi

[[ $PARTS == *c* ]] || exit 0
echo
echo "== (c) failover: kill -9 the ingest holding a live stream; the publisher reconnects through HAProxy"
cat > "$DIR/haproxy.cfg" <<CFG
$(sed -e 's/0.0.0.0:1935/127.0.0.1:19350/' -e '/^    server /d' deploy/haproxy.cfg)
    server ingest1 127.0.0.1:19351 check
    server ingest2 127.0.0.1:19352 check
CFG
"$HAPROXY" -db -f "$DIR/haproxy.cfg" > "$DIR/logs/haproxy.log" 2>&1 &
PIDS+=($!)
sleep 1.5
last_seq() { curl -s "$1" | grep -v '^#' | grep -o '[0-9]\{6\}' | tail -1 | sed 's/^0*//'; }
holder() { for i in 1 2; do curl -s "http://127.0.0.1:1838$i/api/v1/streams" | grep -q '"stream":"fo' && { echo $i; return; }; done; }
for run in 1 2 3; do
  NAME="fo$run"
  publish() { ffmpeg -loglevel error -re -stream_loop -1 -i "$DIR/src.flv" -c copy -f flv "rtmp://127.0.0.1:19350/bench/$NAME?key=bench-key-123456" > /dev/null 2>&1 & PUB=$!; }
  publish
  sleep 10
  H=$(holder)
  [ -n "$H" ] || { echo "no ingest holds $NAME"; exit 1; }
  OTHER=$((3 - H))
  EDGE_URL="http://127.0.0.1:18080/bench/$NAME/live.m3u8"
  BEFORE=$(last_seq "$EDGE_URL")
  eval "VICTIM=\$INGEST$H"
  T0=$(date +%s.%N)
  kill -9 "$VICTIM"
  wait "$PUB" 2>/dev/null || true
  publish
  T_ORIGIN=""; T_EDGE=""
  while [ -z "$T_EDGE" ]; do
    NOW=$(date +%s.%N)
    if [ "$(echo "$NOW - $T0 > 30" | bc)" = 1 ]; then echo "edge never followed"; exit 1; fi
    O=$(last_seq "http://127.0.0.1:1818$OTHER/bench/$NAME/live.m3u8" || true)
    [ -z "$T_ORIGIN" ] && [ -n "$O" ] && [ "$O" -gt "${BEFORE:-0}" ] && T_ORIGIN=$NOW
    E=$(last_seq "$EDGE_URL" || true)
    [ -n "$E" ] && [ "$E" -gt "${BEFORE:-0}" ] && T_EDGE=$NOW
    sleep 0.05
  done
  [ -n "$T_ORIGIN" ] || T_ORIGIN=$T_EDGE
  echo "run $run: kill -> new segment at the new ingest $(echo "$T_ORIGIN - $T0" | bc | cut -c1-4) s, at the edge $(echo "$T_EDGE - $T0" | bc | cut -c1-4) s (edge behind origin by $(echo "$T_EDGE - $T_ORIGIN" | bc | cut -c1-4) s)"
  kill "$PUB" 2>/dev/null || true
  wait "$PUB" 2>/dev/null || true
  start_ingest "$H"
  sleep 2
done
