#!/usr/bin/env bash
# Parley against the gorilla baseline (loadtest/baseline), the same load in
# one run: a hold (connect rate, memory per connection) then bursts of 100
# messages that each server relays to every client (deliveries/s, p99).
# Prints the ratios. Loopback only; every step bounded.
#
# Usage: scripts/compare.sh [clients] [out-dir]
set -euo pipefail
clients=${1:-15000}
out=${2:-reports/compare}
mkdir -p "$out"

run_server() { # name addr cmd...
  local name=$1 addr=$2; shift 2
  "$@" >"$out/$name.server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null && break; sleep 0.1; done
  for scenario in hold burst; do
    echo "== $name: $scenario, $clients clients"
    local extra=()
    [ "$scenario" = burst ] && extra=(--burst 100 --rounds 5)
    timeout 900 ./bin/parley loadtest --scenario "$scenario" --target "ws://$addr/ws" --clients "$clients" \
      --hold 5s "${extra[@]}" --server-pid "$pid" --json "$out/$name.$scenario.json" 2>/dev/null |
      grep -E "connected|throughput|end to end|server RSS|verdict" || true
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_server parley 127.0.0.1:18096 ./bin/parley serve --max-connections-per-addr -1 --connect-rate-per-addr -1 --room-create-rate off --addr 127.0.0.1:18096 --log-level warn --rate-limit off
run_server gorilla 127.0.0.1:18097 ./bin/baseline -addr 127.0.0.1:18097

python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
def load(n, s): return json.load(open(f"{d}/{n}.{s}.json"))
rows = [
  ("server memory per connection (B, held)", lambda n: load(n, "hold")["server_rss_bytes_per_conn"], "lower"),
  ("connect rate (connections/s)",           lambda n: load(n, "hold")["connects_per_second"], "higher"),
  ("deliveries/s (bursts of 100)",           lambda n: load(n, "burst")["deliveries_per_second"], "higher"),
  ("end-to-end p99 (ms, bursts)",            lambda n: load(n, "burst")["end_to_end_latency"]["p99_ms"], "lower"),
  ("missing messages (bursts)",              lambda n: load(n, "burst")["missing"], "lower"),
]
print(f"\n{'':42} {'parley':>12} {'gorilla':>12}  gorilla/parley")
for name, f, better in rows:
  p, g = f("parley"), f("gorilla")
  ratio = f"{g / p:.2f}x" if p else "-"
  print(f"{name:42} {p:12.1f} {g:12.1f}  {ratio} ({better} is better)")
PY
