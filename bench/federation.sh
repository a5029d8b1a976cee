#!/usr/bin/env bash
# Federation benchmark: how long a purge takes from the command to `complete` across two
# participants with 100 edge servers in all, loopback only.
#   A (127.0.1.1): `streamcdn up` (its CIS, its top tier) + (EDGES/2 - 1) edges below it
#   B (127.0.2.1): `streamcdn up` + (EDGES/2 - 1) edges, every one carrying A's
#                  configuration `live-a` (delegated over mutual TLS)
# A purge of a `live.a.test` URL at A's admin API runs on A's 50 servers and, through B's
# CIS (RFC 8007, polled with If-None-Match), on B's 50: `complete` only when all 100
# reported. Measured by a client that polls the status resource every 2 ms, over
# ROUNDS commands: p50 / p99 / max, and the CIS's own histogram.
# Target: p99 <= 200 ms (Fastly and Cloudflare advertise ~150 ms global purge, with no
# completion report at all).
# Usage: bench/federation.sh [ROUNDS] [EDGES]   (needs: redis-server openssl python3)
#   STREAMCDN_BIN=path/to/streamcdn runs that binary instead of building this checkout's
#   (to compare two commits back to back on one machine).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-100}
EDGES=${2:-100}
for t in redis-server openssl python3 curl; do command -v $t >/dev/null || { echo "missing $t: apt-get install redis-server openssl python3 curl"; exit 1; }; done

if [ -n "${STREAMCDN_BIN:-}" ]; then
  BIN=$(realpath "$STREAMCDN_BIN")
else
  cargo build --release -q -p streamcdn
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/streamcdn
fi
DIR=$(mktemp -d /tmp/streamcdn-federation-bench.XXXX)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
mkdir -p "$DIR/logs" "$DIR/certs"

# Every port the run needs, distinct and below the kernel's ephemeral range (outgoing
# connections of 100 servers would otherwise take some before they are bound).
PORTS=($(python3 - 1000 <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
candidates = list(range(10000, low)); random.shuffle(candidates)
ports = []
for p in candidates:
    if len(ports) == int(sys.argv[1]): break
    s = socket.socket()
    try: s.bind(("127.0.0.1", p)); ports.append(p)
    except OSError: pass
    finally: s.close()
print(*ports)
PY
))
NEXT=0

# Certificates: one CA, a leaf per participant naming its id (subject CN).
cd "$DIR/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=bench federation CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign -keyout ca.key -out ca.pem 2>/dev/null
leaf() { # name id ip
  printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" > "$1.ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
    -keyout "$1.key" -out "$1.csr" 2>/dev/null
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
leaf a AS64496:1 127.0.1.1
leaf b AS64500:1 127.0.2.1
cd - >/dev/null

P_REDIS=${PORTS[$NEXT]}; NEXT=$((NEXT + 1))
redis-server --port "$P_REDIS" --bind 127.0.0.1 --save "" --appendonly no >"$DIR/logs/redis.log" 2>&1 &
PIDS+=($!)

# `up` for a participant: name ip federation-port partner-id partner-ip partner-port
# delegate extra-toml participant-id; sets UP_HTTP and UP_ADMIN.
start_up() {
  local name=$1 ip=$2 fed=$3 pid_id=$4 pip=$5 pport=$6 delegate=$7 extra=$8
  read -r rtmp origin http admin dns rhttp <<<"${PORTS[*]:$NEXT:6}"; NEXT=$((NEXT + 6))
  cat > "$DIR/$name.toml" <<TOML
[node]
data_dir = "$DIR/$name-data"
id = "$name-top"
[rtmp]
listen = "$ip:$rtmp"
tls_listen = "off"
[origin]
listen = "$ip:$origin"
[http]
listen = "$ip:$http"
tls_listen = "off"
[admin]
listen = "$ip:$admin"
[[admin.tokens]]
token = "bench-admin-token-000000000001"
[router]
dns_listen = "$ip:$dns"
http_listen = "$ip:$rhttp"
[registry]
backend = "redis"
url = "redis://127.0.0.1:$P_REDIS/"
namespace = "bench-$name"
[federation]
participant = "$9"
listen = "$ip:$fed"
cert = "$DIR/certs/$name.pem"
key = "$DIR/certs/$name.key"
ca = "$DIR/certs/ca.pem"
[[federation.partners]]
id = "$pid_id"
url = "https://$pip:$pport"
delegate = [$delegate]
$extra
TOML
  "$BIN" up --config "$DIR/$name.toml" >"$DIR/logs/$name.log" 2>&1 &
  PIDS+=($!)
  UP_HTTP=$http UP_ADMIN=$admin
}

start_edges() { # name ip parent-http count
  local name=$1 ip=$2 parent=$3 count=$4
  for i in $(seq 1 "$count"); do
    read -r http admin <<<"${PORTS[*]:$NEXT:2}"; NEXT=$((NEXT + 2))
    cat > "$DIR/$name-edge-$i.toml" <<TOML
[node]
data_dir = "$DIR/$name-edge-$i-data"
id = "$name-edge-$i"
[http]
listen = "$ip:$http"
tls_listen = "off"
[admin]
listen = "$ip:$admin"
[edge]
parents = ["http://$ip:$parent"]
cache_memory = "16MiB"
[registry]
backend = "redis"
url = "redis://127.0.0.1:$P_REDIS/"
namespace = "bench-$name"
TOML
    "$BIN" edge --config "$DIR/$name-edge-$i.toml" >"$DIR/logs/$name-edge-$i.log" 2>&1 &
    PIDS+=($!)
  done
}

read -r F_A F_B <<<"${PORTS[*]:$NEXT:2}"; NEXT=$((NEXT + 2))
PER=$((EDGES / 2 - 1))
start_up a 127.0.1.1 "$F_A" AS64500:1 127.0.2.1 "$F_B" '"live-a"' \
  $'[[configurations]]\nid = "live-a"\nhostnames = ["live.a.test"]' AS64496:1
A_HTTP=$UP_HTTP A_ADMIN=$UP_ADMIN
start_up b 127.0.2.1 "$F_B" AS64496:1 127.0.1.1 "$F_A" '' '' AS64500:1
B_HTTP=$UP_HTTP B_ADMIN=$UP_ADMIN
start_edges a 127.0.1.1 "$A_HTTP" "$PER"
start_edges b 127.0.2.1 "$B_HTTP" "$PER"

echo "waiting for $EDGES servers in the two node directories and the delegation..."
if ! python3 - "$A_ADMIN" "$B_ADMIN" "$((PER + 1))" <<'PY'
import json, sys, time, urllib.request
a, b, want = sys.argv[1], sys.argv[2], int(sys.argv[3])
def count(ip, port):
    try:
        request = urllib.request.Request(f"http://{ip}:{port}/api/v1/nodes",
            headers={"Authorization": "Bearer bench-admin-token-000000000001"})
        nodes = json.load(urllib.request.urlopen(request, timeout=2))
        nodes = nodes.get("nodes", nodes) if isinstance(nodes, dict) else nodes
        return sum(1 for n in nodes if "control" in n.get("addresses", {}))
    except Exception:
        return 0
deadline = time.time() + 120
while time.time() < deadline:
    ca, cb = count("127.0.1.1", a), count("127.0.2.1", b)
    if ca >= want and cb >= want:
        print(f"A: {ca} servers, B: {cb} servers"); break
    time.sleep(0.5)
else:
    sys.exit(f"only A {ca} / B {cb} servers of {want} each came up (logs with errors below)")
PY
then
  for log in "$DIR"/logs/*.log; do
    grep -qiE "error|panicked" "$log" && { echo "== $log"; tail -3 "$log"; }
  done
  exit 1
fi
grep -q "configuration received and deployed" "$DIR/logs/b.log" || sleep 3
grep -q "configuration received and deployed" "$DIR/logs/b.log" || { echo "B never received live-a"; exit 1; }

python3 - "$A_ADMIN" "$ROUNDS" <<'PY'
import http.client, json, sys, time
admin, rounds = int(sys.argv[1]), int(sys.argv[2])
ct = "application/cdni; ptype=ci-trigger-command"
AUTH = {"Authorization": "Bearer bench-admin-token-000000000001"}
def command(i):
    body = json.dumps({"trigger": {"type": "purge",
        "content.urls": [f"http://live.a.test/demo/cam/bench/{i:06d}.m4s"]}})
    c = http.client.HTTPConnection("127.0.1.1", admin, timeout=30)
    start = time.perf_counter()
    c.request("POST", "/api/v1/triggers", body, {"Content-Type": ct, **AUTH})
    r = c.getresponse(); r.read()
    assert r.status == 201, r.status
    path = "/api/v1/" + r.getheader("Location").split("/api/v1/", 1)[1]
    etag = None
    while True:
        headers = {"If-None-Match": etag, **AUTH} if etag else dict(AUTH)
        c.request("GET", path, headers=headers)
        r = c.getresponse(); text = r.read()
        if r.status == 200:
            etag = r.getheader("ETag")
            status = json.loads(text)["status"]
            if status not in ("pending", "active", "cancelling"):
                elapsed = time.perf_counter() - start
                assert status == "complete", text
                servers = json.loads(urlopen_servers(c, path))
                return elapsed, len(servers)
        time.sleep(0.002)
def urlopen_servers(c, path):
    c.request("GET", path + "/servers", headers=AUTH); r = c.getresponse(); return r.read()
command(0)  # warm-up: connections, the partner's deployment
times, targets = [], None
for i in range(1, rounds + 1):
    t, targets = command(i)
    times.append(t * 1000)
times.sort()
pct = lambda p: times[min(len(times) - 1, int(round(p / 100 * (len(times) - 1))))]
print(f"purge -> complete over {rounds} commands, A's targets: {targets} (A's servers + partner B)")
print(f"  p50 {pct(50):.1f} ms   p90 {pct(90):.1f} ms   p99 {pct(99):.1f} ms   max {times[-1]:.1f} ms")
print(f"  target p99 <= 200 ms: {'met' if pct(99) <= 200 else 'NOT met'}")
PY
echo "A's CIS histogram (accepted -> complete):"
curl -s -H "Authorization: Bearer bench-admin-token-000000000001" "http://127.0.1.1:$A_ADMIN/metrics" | grep -E '^streamcdn_cis_trigger_duration_seconds(_sum|_count|\{.*quantile="0.(5|99)")' || true
echo "A's kept triggers (registry document): $(redis-cli -p "$P_REDIS" strlen bench-a:document:cis-triggers 2>/dev/null || echo '?') bytes"
echo "B's edges that ran A's commands:"
curl -s -H "Authorization: Bearer bench-admin-token-000000000001" "http://127.0.2.1:$B_ADMIN/metrics" | grep -E '^streamcdn_cis_(commands_total|triggers_finished_total)' || true
