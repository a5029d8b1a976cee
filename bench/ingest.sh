#!/usr/bin/env bash
# Live-path benchmarks, streamcdn side by side with nginx + nginx-rtmp (HLS on) in one
# run on this machine:
#   (a) CPU per stream with 20 and 100 concurrent 3 Mbit/s publishers
#   (b) segment availability delay: last frame of a segment sent -> segment served
#   (c) cached segment and playlist throughput (wrk) against nginx serving the same files
# Usage: bench/ingest.sh [SECONDS_PER_LOAD_STEP]   (needs: ffmpeg nginx libnginx-mod-rtmp wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-20}
for t in ffmpeg nginx wrk; do command -v $t >/dev/null || { echo "missing $t: apt-get install ffmpeg nginx libnginx-mod-rtmp wrk"; exit 1; }; done
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || { echo "missing nginx RTMP module: apt-get install libnginx-mod-rtmp"; exit 1; }

cargo build --release -q -p streamcdn -p rtmp-load
BIN=target/release
DIR=$(mktemp -d /tmp/streamcdn-bench.XXXX)
trap 'kill $(cat $DIR/nginx.pid 2>/dev/null) $SC_PID 2>/dev/null || true' EXIT

echo "== source: 20 s of 1280x720p30 H.264 at 3 Mbit/s CBR + AAC 128k, keyframe every 2 s"
ffmpeg -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 20 -c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -b:v 3M -minrate 3M -maxrate 3M -bufsize 3M \
  -x264-params nal-hrd=cbr -c:a aac -b:a 128k -f flv "$DIR/src.flv"

mkdir -p "$DIR/hls" "$DIR/static" "$DIR/logs"
# nginx workers run as www-data: they must be able to write HLS and read the static files.
chmod 755 "$DIR" "$DIR/static"; chmod 777 "$DIR/hls"
cat > "$DIR/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/logs/error.log warn;
events { worker_connections 4096; }
rtmp {
  server {
    listen 127.0.0.1:19360;
    chunk_size 4096;
    application bench { live on; hls on; hls_path $DIR/hls; hls_fragment 2s; hls_playlist_length 12s; }
  }
}
http {
  access_log off;
  sendfile on; tcp_nopush on; keepalive_requests 100000;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; video/iso.segment m4s; }
  server {
    listen 127.0.0.1:18090;
    location /hls { root $DIR; add_header Cache-Control no-cache; }
    location /static { root $DIR; }
  }
}
NGINX
nginx -p "$DIR" -c "$DIR/nginx.conf"
cat > "$DIR/streamcdn.toml" <<TOML
[node]
data_dir = "$DIR/data"
[rtmp]
listen = "127.0.0.1:19350"
tls_listen = "off"
[origin]
listen = "127.0.0.1:18088"
[http]
listen = "127.0.0.1:18080"
tls_listen = "off"
[federation]
listen = "off"
[admin]
listen = "127.0.0.1:18081"
[[admin.tokens]]
token = "bench-admin-token-000000000001"
[edge]
cache_memory = "64MiB"
[[providers]]
name = "bench"
stream_key = "bench-key-123456"
TOML
STREAMCDN_LOG=warn $BIN/streamcdn up --config "$DIR/streamcdn.toml" > "$DIR/logs/streamcdn.log" 2>&1 &
SC_PID=$!
sleep 1
NGINX_PIDS() { echo $(cat "$DIR/nginx.pid") $(pgrep -P "$(cat "$DIR/nginx.pid")"); }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
rss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }
HZ=$(getconf CLK_TCK)

cpu_run() { # name url streams pids...
  local name=$1 url=$2 n=$3; shift 3
  $BIN/rtmp-load publish --url "$url" --flv "$DIR/src.flv" --streams "$n" --seconds $((WINDOW + 15)) > "$DIR/logs/load-$name-$n.log" 2>&1 &
  local load=$!
  sleep 8
  local t0; t0=$(ticks "$@")
  sleep "$WINDOW"
  local t1; t1=$(ticks "$@")
  local rss; rss=$(rss_kb "$@")
  wait $load || { echo "load generator failed for $name:"; cat "$DIR/logs/load-$name-$n.log"; exit 1; }
  python3 -c "c=($t1-$t0)/$HZ/$WINDOW*100; print(f'$name streams=$n cpu={c:.1f}% per_stream={c/$n:.3f}% rss={$rss/1024:.0f}MiB')"
}

echo "== (a) CPU per stream (${WINDOW}s window after 8s warm-up)"
for n in 20 100; do
  A=$(cpu_run streamcdn "rtmp://127.0.0.1:19350/bench/s$n?key=bench-key-123456" $n $SC_PID)
  B=$(cpu_run nginx-rtmp "rtmp://127.0.0.1:19360/bench/s$n" $n $(NGINX_PIDS))
  echo "$A"; echo "$B"
  python3 -c "import re; a=float(re.search(r'per_stream=([\d.]+)', '''$A''').group(1)); b=float(re.search(r'per_stream=([\d.]+)', '''$B''').group(1)); print(f'   ratio streamcdn/nginx-rtmp CPU per stream at $n: {a/b:.2f} (lower is better)')"
  sleep 3
done

echo "== (b) segment availability delay (40 s stream, polled every 2 ms)"
A=$($BIN/rtmp-load delay --url "rtmp://127.0.0.1:19350/bench/delay?key=bench-key-123456" --flv "$DIR/src.flv" --seconds 40 \
  --segment-url "http://127.0.0.1:18080/bench/delay/{rec}/{n}.m4s" --width 6 --recordings-url "http://127.0.0.1:18088/bench/delay/recordings")
B=$($BIN/rtmp-load delay --url "rtmp://127.0.0.1:19360/bench/delay" --flv "$DIR/src.flv" --seconds 40 \
  --segment-url "http://127.0.0.1:18090/hls/delay-{n}.ts")
echo "streamcdn   $A"; echo "nginx-rtmp  $B"

echo "== (c) cached throughput on the playback port (wrk -t2 -c64 -d10s)"
sleep 3
REC=$(ls "$DIR/data/recordings/bench/delay" | tail -1)
SEG="$DIR/data/recordings/bench/delay/$REC/000003.m4s"
cp "$SEG" "$DIR/static/seg.m4s"; chmod 644 "$DIR/static/seg.m4s"
curl -s "http://127.0.0.1:18088/bench/delay/$REC/playlist.m3u8" > "$DIR/static/playlist.m3u8"
echo "segment size: $(stat -c %s "$SEG") bytes"
wrk_rps() { wrk -t2 -c64 -d10s "$1" | awk '/Requests\/sec/{print $2}'; }
curl -s -o /dev/null "http://127.0.0.1:18080/bench/delay/$REC/000003.m4s"
for kind in segment playlist; do
  if [ $kind = segment ]; then U1="http://127.0.0.1:18080/bench/delay/$REC/000003.m4s"; U2="http://127.0.0.1:18090/static/seg.m4s";
  else U1="http://127.0.0.1:18080/bench/delay/$REC/playlist.m3u8"; U2="http://127.0.0.1:18090/static/playlist.m3u8"; fi
  R1=$(wrk_rps "$U1"); R2=$(wrk_rps "$U2")
  python3 -c "print(f'$kind: streamcdn {float($R1):.0f} req/s, nginx {float($R2):.0f} req/s, ratio {float($R1)/float($R2):.2f}')"
done
echo "streamcdn RSS after throughput runs: $(( $(rss_kb $SC_PID) / 1024 )) MiB (edge cache_memory = 64MiB)"
curl -s -H "Authorization: Bearer bench-admin-token-000000000001" http://127.0.0.1:18081/metrics | grep -E '^streamcdn_edge_cache_bytes'
echo "logs and data in $DIR"
