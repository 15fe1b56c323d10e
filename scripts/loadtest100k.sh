#!/usr/bin/env bash
# The chat scenario with 100,000 clients on one machine: a `parley cluster`
# (an embedded NATS and NODES `parley serve` processes on consecutive ports,
# each under the 20,000 open-file limit), and `parley loadtest` as several
# worker processes: rooms of 100, every member on a different node than
# most of the others, each client saying RATE messages per second for
# DURATION. Every message must reach every member.
#
# With KILL_AFTER set (seconds after the chat starts), node n$KILL_NODE is
# killed with SIGKILL then: its clients reconnect to the other nodes and
# resume their rooms from the last sequence number they saw (--reconnect).
#
# Reports: $out/summary.txt, result.json, report.html, nats.txt (the NATS
# process's CPU), nodes.txt. Loopback only; every process is stopped at the
# end.
#
# Usage: scripts/loadtest100k.sh [clients] [nodes] [out-dir]
# Environment: RATE (0.1), DURATION (30s), KILL_AFTER, KILL_NODE (3),
# NATS_SERVERS (1: embedded in the cluster process; 3: a NATS cluster of
# `parley nats` processes, rooms with 3 replicas),
# NATS_GOMAXPROCS (the cluster process's), SERVE_FLAGS (extra serve flags), LOADTEST_FLAGS (extra loadtest flags),
# GOMAXPROCS (1).
set -euo pipefail
export GOMAXPROCS=${GOMAXPROCS:-1}
clients=${1:-100000}
nodes=${2:-7}
out=${3:-reports/loadtest100k}
rate=${RATE:-0.1}
duration=${DURATION:-30s}
mkdir -p "$out"
rm -f "$out/nodes.txt"
cluster=
trap '[ -n "$cluster" ] && kill "$cluster" 2>/dev/null; wait 2>/dev/null || true' EXIT

# Every process, NATS (in the cluster process) included, on one P: NATS_GOMAXPROCS=2
# gave NATS both cores, with no clear change (p50 438 ms vs 249 ms, noise).
natsservers=${NATS_SERVERS:-1}
rm -f "$out/nats-servers.txt"
GOMAXPROCS=${NATS_GOMAXPROCS:-$GOMAXPROCS} ./bin/parley cluster --node-gomaxprocs "$GOMAXPROCS" --nodes "$nodes" --addr 127.0.0.1:18101 --nats-addr 127.0.0.1:14222 --metrics-port 19101 \
  --nats-servers "$natsservers" --nats-cluster-port 16222 --nats-pid-file "$out/nats-servers.txt" \
  --pid-file "$out/nodes.txt" --log-level warn -- --max-connections-per-addr -1 --connect-rate-per-addr -1 --room-create-rate off ${SERVE_FLAGS:-} >"$out/cluster.log" 2>&1 &
cluster=$!
for _ in $(seq 100); do [ -s "$out/nodes.txt" ] && break; sleep 0.1; done
[ -s "$out/nodes.txt" ] || { echo "the cluster did not start:" >&2; cat "$out/cluster.log" >&2; exit 1; }
targets=() pidflags=() metrics=()
while read -r name pid addr maddr; do
  up=
  for _ in $(seq 100); do curl -sf "http://$addr/test" >/dev/null 2>&1 && up=1 && break; sleep 0.1; done
  [ -n "$up" ] || { echo "node $name did not start:" >&2; cat "$out/cluster.log" >&2; exit 1; }
  targets+=(--target "ws://$addr/ws")
  pidflags+=(--server-pid "$pid")
  metrics+=(--metrics-url "http://$maddr/metrics")
done <"$out/nodes.txt"

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, in clock ticks
# NATS runs in the cluster process, or in the processes of nats-servers.txt.
natspids=("$cluster")
[ -s "$out/nats-servers.txt" ] && natspids=($(awk '{print $2}' "$out/nats-servers.txt"))
natscpu() { for p in "${natspids[@]}"; do cpu "$p"; done | awk '{n += $1} END {print n + 0}'; }
nats0=$(natscpu)
began=$(date +%s.%N)

if [ -n "${KILL_AFTER:-}" ]; then
  victim=$(awk -v n="n${KILL_NODE:-3}" '$1 == n {print $2}' "$out/nodes.txt")
  (
    # The chat starts once every client is in the lobby and its room: wait
    # for the nodes' room memberships to reach twice the clients, then
    # KILL_AFTER.
    for _ in $(seq 1200); do
      members=$(awk '{print $4}' "$out/nodes.txt" | while read -r m; do curl -sf "http://$m/metrics" || true; done |
        awk '/^parley_room_members / {n += $2} END {print n + 0}')
      [ "$members" -ge $((2 * clients)) ] && break
      sleep 0.5
    done
    sleep "$KILL_AFTER"
    kill -9 "$victim" && echo "killed node n${KILL_NODE:-3} (pid $victim) at $(date +%T)" >"$out/killed.txt"
  ) &
fi

status=0
timeout 1200 ./bin/parley loadtest --scenario chat --clients "$clients" --room-size 100 --rate "$rate" \
  --duration "$duration" --reconnect ${LOADTEST_FLAGS:-} "${targets[@]}" "${pidflags[@]}" "${metrics[@]}" \
  --sources 127.0.0.2-127.0.0.41 --json "$out/result.json" --html "$out/report.html" | tee "$out/summary.txt" || status=$?

# Writes per delivery, summed over the nodes still up.
while read -r name pid addr maddr; do
  { curl -sf "http://$maddr/metrics" 2>/dev/null || true; } | awk -v n="$name" '
    /^parley_deliveries_total / {d = $2} /^parley_writes_total / {w = $2}
    /^parley_nats_published_total / {p = $2} /^parley_nats_received_total / {r = $2}
    /^parley_nats_repaired_total / {f = $2} /^process_resident_memory_bytes / {m = $2}
    END { if (d != "") printf "%s deliveries %d writes %d published %d received %d repaired %d rss %.1f MB\n", n, d, w, p, r, f, m / 1048576 }'
done <"$out/nodes.txt" | tee "$out/nodes-metrics.txt"
awk '{d += $3; w += $5} END { if (d > 0) printf "all nodes: %d deliveries in %d writes: %.3f writes per delivery\n", d, w, w / d }' \
  "$out/nodes-metrics.txt" | tee -a "$out/nodes-metrics.txt"
nats1=$(natscpu)
ticks=$(getconf CLK_TCK)
awk -v a="$nats0" -v b="$nats1" -v t="$ticks" -v s="$began" -v e="$(date +%s.%N)" \
  -v n="$natsservers" 'BEGIN { printf "NATS (%d server(s)) CPU: %.2f s over %.1f s of run\n", n, (b - a) / t, e - s }' | tee "$out/nats.txt"
[ -f "$out/killed.txt" ] && cat "$out/killed.txt"
exit "$status"
