#!/usr/bin/env bash
# SRT ingest benchmark, streamcdn side by side with srt-live-transmit in one run on this
# machine: N concurrent SRT publishers of the same 3 Mbit/s MPEG-TS file (paced with
# `ffmpeg -re -c copy`, caller mode), first into streamcdn's ingest (SRT transport +
# MPEG-TS demux + CMAF remux + recording to disk), then into N `srt-live-transmit`
# listeners relaying to /dev/null (SRT transport only). Prints CPU per stream, RSS and
# the ratio (target: streamcdn <= 1.5x srt-live-transmit's CPU per stream).
# Usage: bench/srt.sh [STREAMS=100] [SECONDS=20]   (needs: ffmpeg srt-tools)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100}
WINDOW=${2:-20}
WARMUP=8
for t in ffmpeg srt-live-transmit; do
  command -v $t >/dev/null || { echo "missing $t: apt-get install ffmpeg srt-tools"; exit 1; }
done

cargo build --release -q -p streamcdn
BIN=${CARGO_TARGET_DIR:-target}/release
DIR=$(mktemp -d /tmp/streamcdn-srt-bench.XXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; }
trap cleanup EXIT

echo "== source: 20 s of 1280x720p30 H.264 at 3 Mbit/s CBR + AAC 128k in MPEG-TS, keyframe every 2 s"
ffmpeg -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 20 -c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -b:v 3M -minrate 3M -maxrate 3M -bufsize 3M \
  -x264-params nal-hrd=cbr -c:a aac -b:a 128k -muxrate 3500k -f mpegts "$DIR/src.ts"

mkdir -p "$DIR/logs"
cat > "$DIR/streamcdn.toml" <<TOML
[node]
data_dir = "$DIR/data"
[rtmp]
listen = "127.0.0.1:19350"
tls_listen = "off"
[srt]
listen = "127.0.0.1:19890"
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
STREAMCDN_LOG=warn $BIN/streamcdn ingest --config "$DIR/streamcdn.toml" > "$DIR/logs/streamcdn.log" 2>&1 &
SC_PID=$!
PIDS+=($SC_PID)
sleep 1

ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
rss_kb() { local t=0; for p in "$@"; do t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status))); done; echo $t; }
HZ=$(getconf CLK_TCK)

# N paced senders of the file, looped, to the SRT URLs `url_of i` prints.
senders() {
  local name=$1; shift
  local pids=()
  for i in $(seq 1 "$N"); do
    ffmpeg -loglevel error -nostdin -re -stream_loop -1 -i "$DIR/src.ts" -c copy -f mpegts \
      "$("$@" "$i")" > "$DIR/logs/send-$name-$i.log" 2>&1 &
    pids+=($!)
  done
  echo "${pids[@]}"
}

# CPU and RSS of the receiving processes over WINDOW seconds after WARMUP.
measure() { # name pids...
  local name=$1; shift
  sleep $WARMUP
  local t0; t0=$(ticks "$@")
  sleep "$WINDOW"
  local t1; t1=$(ticks "$@")
  local rss; rss=$(rss_kb "$@")
  python3 -c "c=($t1-$t0)/$HZ/$WINDOW*100; print(f'$name streams=$N cpu={c:.1f}% per_stream={c/$N:.3f}% rss={$rss/1024:.0f}MiB')"
}

ours_url() { echo "srt://127.0.0.1:19890?streamid=#!::r=bench/s$1,m=publish,s=bench-key-123456&latency=200000&pkt_size=1316"; }
relay_url() { echo "srt://127.0.0.1:$((20000 + $1))?latency=200000&pkt_size=1316"; }

echo "== CPU per stream, $N streams (${WINDOW}s window after ${WARMUP}s warm-up)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
SEND=$(senders streamcdn ours_url)
PIDS+=($SEND)
A=$(measure streamcdn $SC_PID)
LIVE=$(curl -s -H "Authorization: Bearer bench-admin-token-000000000001" http://127.0.0.1:18081/api/v1/streams | grep -o '"protocol":"srt"' | wc -l)
kill $SEND 2>/dev/null || true
sleep 3

RELAYS=()
for i in $(seq 1 "$N"); do
  srt-live-transmit -q "srt://127.0.0.1:$((20000 + i))?mode=listener&latency=200" file://con > /dev/null 2> "$DIR/logs/relay-$i.log" &
  RELAYS+=($!)
done
PIDS+=("${RELAYS[@]}")
sleep 1
SEND=$(senders relay relay_url)
PIDS+=($SEND)
B=$(measure srt-live-transmit "${RELAYS[@]}")
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
kill $SEND 2>/dev/null || true

echo "$A (live SRT streams seen: $LIVE)"
echo "$B"
python3 -c "import re; a=float(re.search(r'per_stream=([\d.]+)', '''$A''').group(1)); b=float(re.search(r'per_stream=([\d.]+)', '''$B''').group(1)); print(f'   ratio streamcdn/srt-live-transmit CPU per stream: {a/b:.2f} (target <= 1.5; lower is better)')"
echo "recorded: $(du -sh "$DIR/data/recordings" | cut -f1) in $DIR/data/recordings; logs in $DIR/logs"
