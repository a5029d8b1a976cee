#!/usr/bin/env bash
# Request router benchmark: streamcdn's authoritative DNS (inside `streamcdn up`) side by
# side with gdnsd serving the same names, in one run on this machine, loopback only:
#   (a) dnsperf at full rate (fixed outstanding queries), same query file, without and
#       with EDNS Client Subnet: queries/s, latency, lost queries, CPU per query
#   (b) dnsperf at a fixed rate both servers sustain: latency at equal load
# Two gdnsd instances: "gdnsd" with `live` as a plain A record (static zone data: ECS is
# echoed with scope 0, never used) and "gdnsd-geoip" with `live` as a geoip DYNA record
# mapped by a `nets` table (no GeoIP database): a per-query, ECS-aware decision.
#   (c) the multi-site test's reaction times: an RTT change to the new answer, an edge's
#       death to its removal, a full edge to the next best (needs root and /dev/net/tun)
# Usage: bench/router.sh [SECONDS_PER_RUN]   (needs: dnsperf gdnsd dig)
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-15}
for t in dnsperf dig python3; do command -v $t >/dev/null || { echo "missing $t: apt-get install dnsperf gdnsd bind9-dnsutils"; exit 1; }; done
GDNSD=$(command -v gdnsd || echo /usr/sbin/gdnsd)
[ -x "$GDNSD" ] || { echo "missing gdnsd: apt-get install dnsperf gdnsd bind9-dnsutils"; exit 1; }

cargo build --release -q -p streamcdn
BIN=$PWD/target/release
DIR=$(mktemp -d /tmp/streamcdn-router-bench.XXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$DIR/logs"
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

# Eight ports free for both TCP and UDP on 127.0.0.1.
read -r P_DNS P_RHTTP P_RTMP P_ORIGIN P_HTTP P_ADMIN P_GD P_GEO < <(python3 - <<'PY'
import socket
ports, held = [], []
while len(ports) < 8:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try: u.bind(("127.0.0.1", p))
    except OSError: t.close(); u.close(); continue
    held += [t, u]; ports.append(p)
print(*ports)
PY
)

cat > "$DIR/streamcdn.toml" <<TOML
[node]
data_dir = "$DIR/data"
[rtmp]
listen = "127.0.0.1:$P_RTMP"
tls_listen = "off"
[origin]
listen = "127.0.0.1:$P_ORIGIN"
[http]
listen = "127.0.0.1:$P_HTTP"
tls_listen = "off"
[federation]
listen = "off"
[admin]
listen = "127.0.0.1:$P_ADMIN"
[[admin.tokens]]
token = "bench-admin-token-000000000001"
[router]
dns_listen = "127.0.0.1:$P_DNS"
http_listen = "127.0.0.1:$P_RHTTP"
[[providers]]
name = "bench"
stream_key = "bench-key-123456"
TOML
STREAMCDN_LOG=warn $BIN/streamcdn up --config "$DIR/streamcdn.toml" > "$DIR/logs/streamcdn.log" 2>&1 &
SC_PID=$!
PID_streamcdn=$SC_PID
PIDS+=($SC_PID)

# gdnsd: its own config dir, listening on 127.0.0.1 only (never port 53).
start_gdnsd() { # name port live-record-rdata
  local name=$1 port=$2 live=$3 d="$DIR/$1"
  mkdir -p "$d/zones"
  cat > "$d/config" <<CFG
options => {
  listen => [ 127.0.0.1:$port ]
  dns_port => $port
  run_dir => $d/run
  state_dir => $d/state
}
plugins => { geoip => {
  maps => { edges => {
    datacenters => [ edge1, edge2 ]
    nets => { 127.0.42.0/24 => [ edge1, edge2 ], 10.0.0.0/8 => [ edge2, edge1 ] }
  } }
  resources => { live => {
    map => edges
    service_types => up
    dcmap => { edge1 => 127.0.0.1, edge2 => 127.0.0.2 }
  } }
} }
CFG
  cat > "$d/zones/streamcdn.test" <<ZONE
\$TTL 3600
@     SOA ns1 hostmaster 1 7200 1800 1209600 20
@     NS  ns1
ns1   A   127.0.0.1
live  20  $live
ZONE
  "$GDNSD" -c "$d" start > "$DIR/logs/$name.log" 2>&1 &
  eval "PID_${name//-/_}=$!"
  PIDS+=($!)
}
start_gdnsd gdnsd "$P_GD" "A 127.0.0.1"
start_gdnsd gdnsd-geoip "$P_GEO" "DYNA geoip!live"

wait_answer() { # port name
  for _ in $(seq 150); do
    [ "$(dig @127.0.0.1 -p "$1" +time=1 +tries=1 live.streamcdn.test A +short 2>/dev/null)" = 127.0.0.1 ] && return
    sleep 0.1
  done
  echo "$2 never answered live.streamcdn.test A on 127.0.0.1:$1; logs in $DIR/logs"; exit 1
}
wait_answer "$P_DNS" streamcdn
wait_answer "$P_GD" gdnsd
wait_answer "$P_GEO" gdnsd-geoip

ECS_HEX=000118007f002a   # family 1 (IPv4), source /24, scope 0, address 127.0.42
echo "== versions: $(dnsperf -h 2>&1 | grep -m1 '^Version' | sed 's/^/dnsperf /'), $("$GDNSD" -h 2>&1 | grep -o -m1 'gdnsd version [0-9.]*'), streamcdn $(git rev-parse --short HEAD)"
echo "== the same answers from each (ECS 127.0.42.0/24):"
for s in "streamcdn $P_DNS" "gdnsd $P_GD" "gdnsd-geoip $P_GEO"; do
  set -- $s
  out=$(dig @127.0.0.1 -p "$2" live.streamcdn.test A +subnet=127.0.42.0/24 +norecurse +nocookie)
  printf '   %-12s %s; %s; %s; %s\n' "$1" "$(grep -o 'status: [A-Z]*' <<<"$out")" "$(grep -o 'CLIENT-SUBNET: [0-9./]*' <<<"$out")" \
    "$(grep -E '^live\.streamcdn\.test\.' <<<"$out" | tr -s '\t ' ' ')" "$(grep -o 'rcvd: [0-9]*' <<<"$out")"
done

# The query file: 90% the delivery name, 5% the zone's SOA, 5% names that do not exist.
python3 - > "$DIR/queries.txt" <<'PY'
for i in range(2000):
    if i % 20 == 7: print("streamcdn.test SOA")
    elif i % 20 == 17: print(f"nx{i}.streamcdn.test A")
    else: print("live.streamcdn.test A")
PY

OUTSTANDING=200; CLIENTS=4
run() { # name port mode(max|rate) ecs(0|1) seconds
  local name=$1 port=$2 mode=$3 ecs=$4 secs=$5 opts
  opts=(-s 127.0.0.1 -p "$port" -d "$DIR/queries.txt" -l "$secs" -c $CLIENTS -T 1 -t 2 -q $OUTSTANDING -O suppress=timeouts,congestion,sendfailed,sockready,unexpected)
  [ "$mode" = max ] || opts+=(-Q "$mode")
  if [ "$ecs" = 1 ]; then opts+=(-E "8:$ECS_HEX"); else opts+=(-e); fi
  local pid; eval "pid=\$PID_${name//-/_}"
  local t0 t1; t0=$(ticks "$pid")
  dnsperf "${opts[@]}" > "$DIR/logs/dnsperf-$name-$mode-$ecs.txt" 2>&1
  t1=$(ticks "$pid")
  python3 - "$DIR/logs/dnsperf-$name-$mode-$ecs.txt" "$name" "$(( t1 - t0 ))" "$HZ" <<'PY'
import re, sys
text, name, ticks, hz = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
g = lambda p: re.search(p, text).group(1)
qps, comp, lost = float(g(r"Queries per second:\s+([\d.]+)")), int(g(r"Queries completed:\s+(\d+)")), g(r"Queries lost:\s+(\d+ \([\d.]+%\))")
avg, mn, mx = (float(x) * 1000 for x in re.search(r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)", text).groups())
sd = float(g(r"Latency StdDev \(s\):\s+([\d.]+)")) * 1000
cpu = ticks / hz
rc = g(r"Response codes:\s+(.*)")
size = re.search(r"Average packet size:\s+request (\d+), response (\d+)", text).groups()
print(f"{name:<12} {qps:>9.0f} qps  latency avg {avg:.3f} ms sd {sd:.3f} min {mn:.3f} max {mx:.2f}  lost {lost}  server CPU {cpu:.1f} s = {cpu/comp*1e6:.1f} us/query  bytes {size[0]}/{size[1]}  [{rc}]")
print(f"#qps {qps}")
PY
}

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
for ecs in 0 1; do
  [ $ecs = 1 ] && label="with ECS (-E 8:$ECS_HEX = 127.0.42.0/24)" || label="without ECS (-e: EDNS0, no option)"
  echo
  echo "== (a) full rate, $label: dnsperf -c $CLIENTS -T 1 -q $OUTSTANDING -l $DUR, alternating"
  declare -A Q=()
  for s in "streamcdn $P_DNS" "gdnsd $P_GD" "gdnsd-geoip $P_GEO"; do
    set -- $s
    out=$(run "$1" "$2" max $ecs "$DUR")
    grep -v '^#qps' <<<"$out"
    Q[$1]=$(grep '^#qps' <<<"$out" | cut -d' ' -f2)
    sleep 1
  done
  echo "   ratio streamcdn/gdnsd qps: $(ratio "${Q[streamcdn]}" "${Q[gdnsd]}"); streamcdn/gdnsd-geoip: $(ratio "${Q[streamcdn]}" "${Q[gdnsd-geoip]}")"
done

RATE=20000; RDUR=$(( (DUR + 1) / 2 ))
for ecs in 0 1; do
  echo
  echo "== (b) fixed rate $RATE qps ($([ $ecs = 1 ] && echo with || echo without) ECS), dnsperf -Q $RATE -l $RDUR: latency at equal load"
  for s in "streamcdn $P_DNS" "gdnsd $P_GD" "gdnsd-geoip $P_GEO"; do
    set -- $s
    run "$1" "$2" $RATE $ecs "$RDUR" | grep -v '^#qps'
    sleep 1
  done
done

echo
echo "streamcdn RSS: $(( $(awk '/VmRSS/{print $2}' /proc/$SC_PID/status) / 1024 )) MiB (whole \`up\`: ingest, edge, archiver, router); gdnsd RSS: $(( $(awk '/VmRSS/{print $2}' /proc/$PID_gdnsd/status) / 1024 )) MiB"
curl -s -H "Authorization: Bearer bench-admin-token-000000000001" "http://127.0.0.1:$P_ADMIN/metrics" | grep -E '^streamcdn_router_(dns_queries|dns_dropped|dns_responses|dns_truncated|decisions)_total' | grep -v ' 0$' | head -24 || true
echo
echo "== (c) reaction times in an emulated WAN (three edge sites, four client sites, two routers;"
echo "   crates/streamcdn/tests/router_sites.rs, reprobe_after 3s, health checks every 1s)"
if [ "$(id -u)" = 0 ] && [ -e /dev/net/tun ]; then
  kill "${PIDS[@]}" 2>/dev/null || true
  cargo build -q -p wan-emu -p hls-viewers && cargo nextest run -p streamcdn --test router_sites --no-capture 2>&1 \
    | grep -E '^(every client|D moved|answers followed|a full E3|C came back|a dead E3)' \
    || echo "   the multi-site test failed: run it alone to see why"
else
  echo "   skipped: needs root and /dev/net/tun (network namespaces and TUN devices)"
fi
echo "logs in $DIR"
