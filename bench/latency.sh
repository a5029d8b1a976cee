#!/usr/bin/env bash
# Glass to glass (issue 12), three systems one after the other in one run, each with the
# same publisher and the same page:
#   (a) streamcdn LL-HLS: ingest -> mid-tier -> edge, played from the edge over HTTPS/HTTP/2
#       with hls.js, then (a') hls.js catching up, then (a'') Shaka Player
#   (b) streamcdn plain HLS: the same servers, a provider with `low_latency = false`
#   (c) nginx + nginx-rtmp HLS (hls_fragment 2s, like streamcdn's 2 s segments), served by
#       nginx over HTTPS/HTTP/2
# Publisher: tests/browser/stamp.py (1280x720p30, x264 -tune zerolatency, keyframe every
# second, AAC, real time), which draws each frame's capture wall clock into the picture.
# Player: tests/browser/glass.mjs + glass.html in headless Chromium, hls.js (the copy the
# edges serve) with its defaults (lowLatencyMode=true, no catch-up) for all three, so the
# server is the only difference; plus (a') LL-HLS with hls.js allowed to catch up to its
# target latency (maxLiveSyncPlaybackRate=1.5, as tests/glass_to_glass.rs plays) and (a'')
# Shaka Player (tests/browser/package.json) with streaming.lowLatencyMode only. The page
# reads the time back from every presented frame and records shown - captured, for
# SECONDS from the first frame.
# Usage: bench/latency.sh [SECONDS]   (default 60)
# (needs: ffmpeg nginx libnginx-mod-rtmp redis-server chromium nodejs npm openssl curl
#  python3, and `npm install --prefix tests/browser`)
set -euo pipefail
cd "$(dirname "$0")/.."
MEASURE=${1:-60}
for t in ffmpeg nginx redis-server node openssl curl python3; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install ffmpeg nginx libnginx-mod-rtmp redis-server chromium nodejs npm openssl curl python3"; exit 1; }
done
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || { echo "missing nginx RTMP module: apt-get install libnginx-mod-rtmp"; exit 1; }
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || { echo "missing Chromium: apt-get install chromium"; exit 1; }
for p in playwright-core shaka-player; do
  [ -d tests/browser/node_modules/$p ] || { echo "missing $p: npm install --no-package-lock --prefix tests/browser"; exit 1; }
done

cargo build --release -q -p streamcdn
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
DIR=$(mktemp -d /tmp/streamcdn-latency.XXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" $(cat "$DIR/nginx.pid" 2>/dev/null) 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$DIR/logs" "$DIR/hls" "$DIR/results"
chmod 755 "$DIR"; chmod 777 "$DIR/hls"
echo "== $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), ffmpeg $(ffmpeg -version | head -1 | cut -d' ' -f3), $("${CHROMIUM:-/usr/bin/chromium}" --version 2>/dev/null | head -1)"

redis-server --port 16479 --bind 127.0.0.1 --save "" --appendonly no > "$DIR/logs/redis.log" 2>&1 &
PIDS+=($!)
REGISTRY='[registry]
backend = "redis"
url = "redis://127.0.0.1:16479/"
namespace = "latency"
lease = "3s"'
KEY=bench-key-123456
# `low_latency = false` is the per-provider switch; a build without it (LL-HLS not landed)
# rejects the key, and then every provider is plain HLS: said below, not hidden.
PLAIN_SWITCH='low_latency = false'
write_ingest_config() {
  cat > "$DIR/ingest.toml" <<TOML
[node]
data_dir = "$DIR/ingest"
[rtmp]
listen = "127.0.0.1:19450"
tls_listen = "off"
[origin]
listen = "127.0.0.1:18450"
[http]
listen = "127.0.0.1:18452"
tls_listen = "off"
[federation]
listen = "off"
[admin]
listen = "127.0.0.1:18451"
$REGISTRY
[[providers]]
name = "ll"
stream_key = "$KEY"
[[providers]]
name = "plain"
stream_key = "$KEY"
$PLAIN_SWITCH
TOML
}
write_ingest_config
if ! "$BIN/streamcdn" check-config "$DIR/ingest.toml" > "$DIR/logs/check-config.log" 2>&1; then
  if grep -q low_latency "$DIR/logs/check-config.log"; then
    echo "!! this build has no per-provider low_latency switch: (b) is the default provider's HLS"
    PLAIN_SWITCH=''
    write_ingest_config
  else
    cat "$DIR/logs/check-config.log"; exit 1
  fi
fi
start_edge() { # name http tls parents
  cat > "$DIR/$1.toml" <<TOML
[node]
data_dir = "$DIR/$1"
[http]
listen = "127.0.0.1:$2"
tls_listen = "127.0.0.1:$3"
[federation]
listen = "off"
[admin]
listen = "127.0.0.1:$(($2 + 1))"
$REGISTRY
[edge]
parents = [$4]
TOML
  STREAMCDN_LOG=warn "$BIN/streamcdn" edge --config "$DIR/$1.toml" > "$DIR/logs/$1.log" 2>&1 &
  PIDS+=($!)
}
STREAMCDN_LOG=warn "$BIN/streamcdn" ingest --config "$DIR/ingest.toml" > "$DIR/logs/ingest.log" 2>&1 &
PIDS+=($!)
start_edge mid 18460 18463 ''
start_edge edge 18470 18473 '"http://127.0.0.1:18460"'
for admin in 18451 18461 18471; do
  deadline=$((SECONDS + 20))
  until curl -sf -o /dev/null "http://127.0.0.1:$admin/healthz"; do
    [ $SECONDS -lt $deadline ] || { echo "the server with admin port $admin did not start:"; tail -n 20 "$DIR"/logs/*.log; exit 1; }
    sleep 0.2
  done
done

# nginx-rtmp writes HLS; nginx serves it over HTTPS/HTTP/2 with a self-signed certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$DIR/nginx.key" -out "$DIR/nginx.crt" 2>/dev/null
chmod 644 "$DIR/nginx.key"
cat > "$DIR/nginx.conf" <<NGINX
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/logs/nginx-error.log warn;
events { worker_connections 1024; }
rtmp {
  server {
    listen 127.0.0.1:19460;
    chunk_size 4096;
    application bench { live on; hls on; hls_path $DIR/hls; hls_fragment 2s; hls_playlist_length 12s; }
  }
}
http {
  access_log off;
  sendfile on; tcp_nopush on;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen 127.0.0.1:18483 ssl http2;
    ssl_certificate $DIR/nginx.crt;
    ssl_certificate_key $DIR/nginx.key;
    location /hls { root $DIR; add_header Cache-Control no-cache; }
  }
}
NGINX
nginx -p "$DIR" -c "$DIR/nginx.conf"
sleep 1

measure() { # name publish_url https_base playlist_path ready_path [page query]
  local name=$1 publish=$2 base=$3 playlist=$4 ready=$5 player=${6:-}
  python3 tests/browser/stamp.py publish "$publish" --gop 1 --seconds $((MEASURE + 60)) > "$DIR/logs/publish-$name.log" 2>&1 &
  local publisher=$!
  PIDS+=($publisher)
  # A viewer joining a running stream: the playlist holds four segments (hls.js starts
  # three target durations back; from a shorter playlist it would start closer to live).
  local deadline=$((SECONDS + 40))
  until [ "$(curl -ks "$base$ready" | grep -c '^#EXTINF')" -ge 4 ]; do
    [ $SECONDS -lt $deadline ] || { echo "$name: $base$ready never listed 4 segments"; cat "$DIR/logs/publish-$name.log"; exit 1; }
    sleep 0.2
  done
  node tests/browser/glass.mjs "$base/__glass__.html?src=$playlist&lowLatency=1&seconds=$MEASURE$player" $((MEASURE + 60)) --detached \
    > "$DIR/results/$name.jsonl" 2> "$DIR/logs/glass-$name.log" || true
  kill $publisher 2>/dev/null || true
  wait $publisher 2>/dev/null || true
  tail -1 "$DIR/results/$name.jsonl" > "$DIR/results/$name.json"
  python3 - "$name" "$DIR/results/$name.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
ll = r.get("ll") or {}
print(f"{name:<26} median {r['median']} ms  p90 {r['p90']} ms  max {r['max']} ms  min {r['min']} ms  "
      f"frames {r['frames']} (unreadable {r['invalidFrames']}, dropped {r['dropped']})  stalls {len(r['stalls'])}  "
      f"state {r['state']}  protocols {r['protocols']}  hls.js parts {ll.get('partList', 0)} "
      f"blocking reload {ll.get('canBlockReload', False)}  requests {r['requests']}  "
      f"player's latency {r['playerLatency']:.2f} s")
# Tune-in (glass.html's trace): how far behind its last part the first media playlist was
# (by PROGRAM-DATE-TIME, hls.js only) and how long after it arrived playback began.
trace = r.get("trace") or []
first = next((e for e in trace if e["what"] == "response" and e["url"].split("?")[0].endswith(".m3u8")
              and not e["url"].endswith("index.m3u8")), None)
playing = next((e for e in trace if e["what"] == "playing"), None)
behind = next((e.get("edgeAgeByPdt") for e in trace if e["what"] == "playlist"), None)
if first and playing:
    print(f"{'':<26} tune-in: first media playlist {behind} ms behind its last part, playing "
          f"{playing['t'] - first['start'] - first['end']} ms after it arrived")
PY
}

echo "== glass to glass, ${MEASURE} s from the first frame each (median, p90, max over every presented frame)"
measure "(a) streamcdn LL-HLS" "rtmp://127.0.0.1:19450/ll/lat?key=$KEY" https://127.0.0.1:18473 /ll/lat/index.m3u8 /ll/lat/live.m3u8
measure "(a') LL-HLS, catching up" "rtmp://127.0.0.1:19450/ll/lat2?key=$KEY" https://127.0.0.1:18473 /ll/lat2/index.m3u8 /ll/lat2/live.m3u8 '&maxLiveSyncPlaybackRate=1.5'
measure "(a'') LL-HLS, Shaka" "rtmp://127.0.0.1:19450/ll/lat3?key=$KEY" https://127.0.0.1:18473 /ll/lat3/index.m3u8 /ll/lat3/live.m3u8 '&player=shaka'
measure "(b) streamcdn plain HLS" "rtmp://127.0.0.1:19450/plain/lat?key=$KEY" https://127.0.0.1:18473 /plain/lat/index.m3u8 /plain/lat/live.m3u8
measure "(c) nginx-rtmp HLS" "rtmp://127.0.0.1:19460/bench/lat" https://127.0.0.1:18483 /hls/lat.m3u8 /hls/lat.m3u8
python3 - "$DIR/results" <<'PY'
import json, os, sys
d = sys.argv[1]
r = {n: json.load(open(os.path.join(d, n + ".json"))) for n in
     ["(a) streamcdn LL-HLS", "(a') LL-HLS, catching up", "(a'') LL-HLS, Shaka", "(b) streamcdn plain HLS",
      "(c) nginx-rtmp HLS"]}
for q in ["median", "p90"]:
    a, a2, a3, b, c = (r[n][q] for n in r)
    print(f"ratios of {q + 's:':<8} LL/nginx-rtmp {a / c:.2f}, LL catching up/nginx-rtmp {a2 / c:.2f}, "
          f"LL Shaka/nginx-rtmp {a3 / c:.2f}, plain/nginx-rtmp {b / c:.2f}, LL/plain {a / b:.2f}")
PY
echo "== load average at the end $(cut -d' ' -f1-3 /proc/loadavg); logs and every sample in $DIR"
