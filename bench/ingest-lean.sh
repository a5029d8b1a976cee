#!/usr/bin/env bash
# Lean ingest (issue 12 point 5): streamcdn's `ingest` role alone against nginx +
# nginx-rtmp (master + worker, HLS on: both write segments to disk), with real-time
# 3 Mbit/s publishers, one load step at a time, each server started afresh for each step:
#   - resident memory at the end of the window (VmRSS) and its peak (VmHWM),
#   - CPU per stream (utime+stime over the window),
#   - the rate the server's sockets received, in multiples of the source's bitrate, to
#     show the publishers kept real time,
#   - the load generator's own CPU and the machine's idle time (of 200%), to show it was
#     not the bottleneck (two cores: the generator competes with the server), and the
#     CPU that niced processes (other work on a shared machine) took meanwhile.
# Loads: `rtmp-load` (one process, N connections) and real ffmpeg publishers
# (`ffmpeg -re -stream_loop -1 -i src.flv -c copy -f flv rtmp://...`, one process each).
#
# Usage: bench/ingest-lean.sh [WINDOW_SECONDS] [LOADS] [COUNTS] [SERVERS]
#   defaults: 20 "rtmp-load ffmpeg" "20 100" "streamcdn nginx-rtmp"
#   env BIN: where streamcdn and rtmp-load are (default: build target/release here)
#   env STREAMCDN_ENV: variables for streamcdn only, e.g. "MALLOC_ARENA_MAX=2" or
#     "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2" to compare allocators
#   env PERF_DIR: record a call-graph profile of each server over its window there
#     (`perf report -i PERF_DIR/<load>-<n>-<server>.data`); perf's own CPU skews the
#     machine's idle time, not the server's ticks
# Needs: ffmpeg nginx libnginx-mod-rtmp (apt-get install ffmpeg nginx libnginx-mod-rtmp)
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-20}
LOADS=${2:-"rtmp-load ffmpeg"}
COUNTS=${3:-"20 100"}
SERVERS=${4:-"streamcdn nginx-rtmp"}
# After the last publisher started: ffmpeg's -re catches up in bursts after a slow start
# (100 processes starting on two cores), so its streams get longer to settle.
WARMUP_RTMP_LOAD=10
WARMUP_FFMPEG=20
for t in ffmpeg nginx python3; do command -v $t >/dev/null || { echo "missing $t: apt-get install ffmpeg nginx libnginx-mod-rtmp python3"; exit 1; }; done
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || { echo "missing nginx RTMP module: apt-get install libnginx-mod-rtmp"; exit 1; }

if [ -z "${BIN:-}" ]; then
  cargo build --release -q -p streamcdn -p rtmp-load
  BIN=target/release
fi
DIR=$(mktemp -d /tmp/streamcdn-lean.XXXX)
SERVER_PIDS=""; LOAD_PIDS=""
stop_all() {
  local p
  # shellcheck disable=SC2086
  if [ -n "$LOAD_PIDS" ]; then kill $LOAD_PIDS 2>/dev/null || true; wait $LOAD_PIDS 2>/dev/null || true; fi
  if [ -f "$DIR/nginx.pid" ]; then kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true; fi
  for p in $SERVER_PIDS; do
    kill "$p" 2>/dev/null || true
    # streamcdn finishes its sessions' segments first (node.shutdown_grace): wait for it.
    timeout 30 tail --pid="$p" -f /dev/null || kill -9 "$p" 2>/dev/null || true
  done
  # What the servers recorded is not needed, and 100 streams write ~40 MB/s.
  rm -rf "$DIR/nginx.pid" "$DIR/streamcdn-data" "$DIR/nginx-hls"
  LOAD_PIDS=""; SERVER_PIDS=""
}
trap stop_all EXIT

echo "== source: 20 s of 1280x720p30 H.264 at 3 Mbit/s CBR + AAC 128k, keyframe every 2 s"
ffmpeg -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 20 -c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -b:v 3M -minrate 3M -maxrate 3M -bufsize 3M \
  -x264-params nal-hrd=cbr -c:a aac -b:a 128k -f flv "$DIR/src.flv"
SRC_BPS=$(python3 -c "import os; print(os.path.getsize('$DIR/src.flv') * 8 / 20)")

mkdir -p "$DIR/logs"
chmod 755 "$DIR"
cat > "$DIR/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/logs/nginx-error.log warn;
events { worker_connections 4096; }
rtmp {
  server {
    listen 127.0.0.1:19360;
    chunk_size 4096;
    application bench { live on; hls on; hls_path $DIR/nginx-hls; hls_fragment 2s; hls_playlist_length 12s; }
  }
}
NGINX
# Only what the ingest role needs: RTMP in, the HTTP origin, the admin API (metrics).
cat > "$DIR/streamcdn.toml" <<TOML
[node]
data_dir = "$DIR/streamcdn-data"
[rtmp]
listen = "127.0.0.1:19350"
tls_listen = "off"
[origin]
listen = "127.0.0.1:18088"
[admin]
listen = "127.0.0.1:18081"
[[admin.tokens]]
token = "bench-admin-token-000000000001"
[[providers]]
name = "bench"
stream_key = "bench-key-123456"
TOML

HZ=$(getconf CLK_TCK)
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
status_kb() { local key=$1 t=0 p; shift; for p in "$@"; do t=$((t + $(awk -v k="$key:" '$1==k{print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done; echo $t; }
# Bytes the server's publisher sockets have received (TCP_INFO), whatever the read call.
received() { ss -Htin state established "( sport = :$PORT )" | grep -o 'bytes_received:[0-9]*' | awk -F: '{t+=$2} END{print t+0}'; }
idle_ticks() { awk '/^cpu /{print $5+$6}' /proc/stat; }
niced_ticks() { awk '/^cpu /{print $3}' /proc/stat; }

start_server() { # name -> sets SERVER_PIDS, PORT, URL_BASE, URL_QUERY
  case $1 in
    streamcdn)
      rm -rf "$DIR/streamcdn-data"
      # shellcheck disable=SC2086
      env STREAMCDN_LOG=warn ${STREAMCDN_ENV:-} "$BIN/streamcdn" ingest --config "$DIR/streamcdn.toml" >> "$DIR/logs/streamcdn.log" 2>&1 &
      SERVER_PIDS=$!
      PORT=19350; URL_BASE="rtmp://127.0.0.1:$PORT/bench"; URL_QUERY="?key=bench-key-123456"
      for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/19350) 2>/dev/null && break; sleep 0.1; done ;;
    nginx-rtmp)
      rm -rf "$DIR/nginx-hls"; mkdir -p "$DIR/nginx-hls"; chmod 777 "$DIR/nginx-hls"
      nginx -p "$DIR" -c "$DIR/nginx.conf"
      sleep 0.5
      SERVER_PIDS="$(cat "$DIR/nginx.pid") $(pgrep -P "$(cat "$DIR/nginx.pid")")"
      PORT=19360; URL_BASE="rtmp://127.0.0.1:$PORT/bench"; URL_QUERY="" ;;
  esac
}

start_load() { # kind streams seconds
  local kind=$1 n=$2 secs=$3 i
  case $kind in
    rtmp-load)
      "$BIN/rtmp-load" publish --url "$URL_BASE/s$URL_QUERY" --flv "$DIR/src.flv" --streams "$n" \
        --seconds "$secs" --ramp-seconds 2 > "$DIR/logs/load.log" 2>&1 &
      LOAD_PIDS=$! ;;
    ffmpeg)
      LOAD_PIDS=""
      for i in $(seq 0 $((n - 1))); do
        timeout "$secs" ffmpeg -nostdin -loglevel error -re -stream_loop -1 -i "$DIR/src.flv" -c copy -f flv \
          "$URL_BASE/s-$i$URL_QUERY" >> "$DIR/logs/ffmpeg.log" 2>&1 &
        LOAD_PIDS="$LOAD_PIDS $!"
      done ;;
  esac
}

load_process_pids() { # the processes doing the work (timeout's children for ffmpeg)
  local p
  for p in $LOAD_PIDS; do pgrep -P "$p" || echo "$p"; done
}

RESULTS="$DIR/results.txt"
measure() { # kind n server
  local kind=$1 n=$2 server=$3
  start_server "$server"
  local warmup=$WARMUP_RTMP_LOAD
  [ "$kind" = ffmpeg ] && warmup=$WARMUP_FFMPEG
  # Killed when measured; the time limit only bounds a run the script lost.
  start_load "$kind" "$n" $((warmup + WINDOW + 120))
  sleep "$warmup"
  local gen; gen=$(load_process_pids | tr '\n' ' ')
  # shellcheck disable=SC2086
  local s0 g0 r0 i0 o0; s0=$(ticks $SERVER_PIDS); g0=$(ticks $gen); r0=$(received); i0=$(idle_ticks); o0=$(niced_ticks)
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    perf record -q -F 499 -g -o "$PERF_DIR/$kind-$n-$server.data" -p "$(echo $SERVER_PIDS | tr ' ' ',')" -- sleep "$WINDOW" 2>/dev/null
  else
    sleep "$WINDOW"
  fi
  # shellcheck disable=SC2086
  local s1 g1 r1 i1 o1 rss hwm conns
  s1=$(ticks $SERVER_PIDS); g1=$(ticks $gen); r1=$(received); i1=$(idle_ticks); o1=$(niced_ticks)
  rss=$(status_kb VmRSS $SERVER_PIDS); hwm=$(status_kb VmHWM $SERVER_PIDS)
  conns=$(ss -Htn state established "( sport = :$PORT )" | wc -l)
  stop_all
  python3 - "$kind" "$n" "$server" "$s0" "$s1" "$g0" "$g1" "$r0" "$r1" "$i0" "$i1" "$o0" "$o1" "$rss" "$hwm" "$conns" <<PY | tee -a "$RESULTS"
import sys
kind, n, server = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s0, s1, g0, g1, r0, r1, i0, i1, o0, o1, rss, hwm, conns = map(int, sys.argv[4:])
hz, window, src_bps = $HZ, $WINDOW, $SRC_BPS
cpu = (s1 - s0) / hz / window * 100
gen = (g1 - g0) / hz / window * 100
idle = (i1 - i0) / hz / window * 100
niced = (o1 - o0) / hz / window * 100
rate = (r1 - r0) * 8 / window / max(n, 1) / src_bps
print(f"{kind:9} n={n:3} {server:10} cpu={cpu:5.1f}% per_stream={cpu / n:.3f}% rss={rss / 1024:6.1f}MiB hwm={hwm / 1024:6.1f}MiB "
      f"in_rate={rate:.2f}x_realtime conns={conns} generator_cpu={gen:5.1f}% idle={idle:5.1f}% niced_others={niced:5.1f}%")
PY
  sleep 2
}

echo "== window ${WINDOW}s after a warm-up of ${WARMUP_RTMP_LOAD}s (rtmp-load) or ${WARMUP_FFMPEG}s (ffmpeg); each server fresh for each step"
for kind in $LOADS; do
  for n in $COUNTS; do
    for server in $SERVERS; do measure "$kind" "$n" "$server"; done
  done
done

echo "== ratios streamcdn / nginx-rtmp (target: RSS at 100 <= 2.0, CPU per stream with ffmpeg <= 0.5)"
python3 - "$RESULTS" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    kind, n, server = re.match(r"(\S+)\s+n=\s*(\d+)\s+(\S+)", line).groups()
    n = int(n)
    vals = {k: float(v) for k, v in re.findall(r"(per_stream|rss|hwm)=\s*([\d.]+)", line)}
    rows[(kind, n, server)] = vals
for (kind, n, server), a in sorted(rows.items()):
    if server != "streamcdn" or (kind, n, "nginx-rtmp") not in rows:
        continue
    b = rows[(kind, n, "nginx-rtmp")]
    print(f"{kind:9} n={n:3}: CPU per stream {a['per_stream'] / b['per_stream']:.2f}x  "
          f"RSS {a['rss'] / b['rss']:.2f}x ({a['rss']:.1f} / {b['rss']:.1f} MiB)  "
          f"peak RSS {a['hwm'] / b['hwm']:.2f}x ({a['hwm']:.1f} / {b['hwm']:.1f} MiB)")
PY
echo "logs in $DIR"
