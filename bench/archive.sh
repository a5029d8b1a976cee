#!/usr/bin/env bash
# Archive benchmark: streamcdn's archiver next to the AWS CLI uploading the same files
# to the same S3 server (s3s-fs) in one run.
#   (a) throughput: 10 recordings of 60 s at 3 Mbit/s; the provider sets
#       archive_after to 0 through the API, and the clock runs until every recording is
#       uploaded, verified, marked complete and its local copy removed. The AWS CLI then
#       uploads a copy of the same files (`aws s3 cp --recursive`, its defaults: 10
#       requests in flight).
#   (b) time from archive_after expiry to a verified archive, for a single recording.
# Usage: bench/archive.sh   (needs: ffmpeg, aws (pip install awscli), s3s-fs (cargo install s3s-fs --features binary))
set -euo pipefail
cd "$(dirname "$0")/.."
command -v aws >/dev/null || { echo "missing aws: pip install awscli"; exit 1; }
S3S=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
[ -x "$S3S" ] || { echo "missing s3s-fs: cargo install s3s-fs --version 0.14.1 --features binary"; exit 1; }
command -v ffmpeg >/dev/null || { echo "missing ffmpeg"; exit 1; }

cargo build --release -q -p streamcdn -p rtmp-load
BIN=$PWD/target/release
DIR=$(mktemp -d /tmp/streamcdn-archive-bench.XXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
mkdir -p "$DIR/s3/recordings" "$DIR/logs"
"$S3S" --host 127.0.0.1 --port 18014 --access-key bench --secret-key bench-secret "$DIR/s3" > "$DIR/logs/s3.log" 2>&1 &
PIDS+=($!)
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_DEFAULT_REGION=us-east-1
KEY=bench-key-123456

ffmpeg -loglevel error -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
  -t 60 -c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -b:v 3M -minrate 3M -maxrate 3M -bufsize 3M \
  -x264-params nal-hrd=cbr -c:a aac -b:a 128k -f flv "$DIR/src.flv"

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
[archive]
store = "s3"
default_after = "1h"
concurrency = 8
[archive.s3]
bucket = "recordings"
region = "us-east-1"
endpoint = "http://127.0.0.1:18014"
path_style = true
access_key_id = "bench"
secret_access_key = "bench-secret"
[[providers]]
name = "bench"
stream_key = "$KEY"
TOML
STREAMCDN_LOG=info $BIN/streamcdn up --config "$DIR/streamcdn.toml" > "$DIR/logs/streamcdn.log" 2>&1 &
PIDS+=($!)
sleep 1
set_after() {
  curl -sf -X PUT -H "Authorization: Bearer bench-admin-token-000000000001" -H 'Content-Type: application/json' \
    -d "{\"archive_after\":\"$1\"}" http://127.0.0.1:18081/api/v1/providers/bench/settings > /dev/null
}
recordings_left() { find "$DIR/data/recordings" -name journal.json 2>/dev/null | wc -l; }

echo "== (a) throughput: 10 recordings of 60 s, 3 Mbit/s"
$BIN/rtmp-load publish --url "rtmp://127.0.0.1:19350/bench/tp?key=$KEY" --flv "$DIR/src.flv" --streams 10 --seconds 60 > "$DIR/logs/load.log" 2>&1
sleep 3
mkdir -p "$DIR/copy"
cp -r "$DIR/data/recordings/bench" "$DIR/copy/"
BYTES=$(find "$DIR/copy" -name '*.m4s' -o -name '*.mp4' | xargs cat | wc -c)
FILES=$(find "$DIR/copy" -name '*.m4s' -o -name '*.mp4' | wc -l)
find "$DIR/copy" -type f ! -name '*.m4s' ! -name '*.mp4' -delete
T0=$(date +%s.%N)
set_after 0s
while [ "$(recordings_left)" -gt 0 ]; do sleep 0.05; done
T1=$(date +%s.%N)
OURS=$(echo "$T1 - $T0" | bc -l)
T2=$(date +%s.%N)
aws --endpoint-url http://127.0.0.1:18014 s3 cp --recursive --only-show-errors "$DIR/copy/bench" s3://recordings/awscli/ > "$DIR/logs/aws.log" 2>&1
T3=$(date +%s.%N)
AWS=$(echo "$T3 - $T2" | bc -l)
MB=$(echo "$BYTES / 1048576" | bc -l)
echo "$FILES files, $(printf %.1f "$MB") MiB"
echo "streamcdn archiver (upload + verify + playlists + metadata + marker + local removal): $(printf %.2f "$OURS") s, $(printf %.1f "$(echo "$MB / $OURS" | bc -l)") MiB/s"
echo "aws s3 cp --recursive (upload only): $(printf %.2f "$AWS") s, $(printf %.1f "$(echo "$MB / $AWS" | bc -l)") MiB/s"
echo "ratio (streamcdn / aws cli throughput): $(printf %.2f "$(echo "$AWS / $OURS" | bc -l)")"

echo
echo "== (b) archive_after expiry -> verified archive, one 60 s recording (3 runs)"
for run in 1 2 3; do
  set_after 1h
  $BIN/rtmp-load publish --url "rtmp://127.0.0.1:19350/bench/one$run?key=$KEY" --flv "$DIR/src.flv" --streams 1 --seconds 60 > "$DIR/logs/load-one.log" 2>&1
  sleep 2
  T0=$(date +%s.%N)
  set_after 0s
  while [ "$(recordings_left)" -gt 0 ]; do sleep 0.02; done
  echo "run $run: $(printf %.2f "$(echo "$(date +%s.%N) - $T0" | bc -l)") s"
done
