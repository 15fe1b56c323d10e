#!/usr/bin/env bash
# Measures batched fan-out across processes: for each case a fresh
# `parley serve` (the chat: every client is in the lobby, a plain-text
# message is said there) and a `parley loadtest --scenario burst` in
# another process. The chat's rate limit is off: client 0 sends bursts. Prints the load
# test's report and the server's own counters (writes, deliveries) at exit.
# Loopback only; every step is bounded in time.
#
# Usage: scripts/fanout.sh [clients] [out-dir]
set -euo pipefail
clients=${1:-10000}
out=${2:-reports/fanout}
bin=./bin/parley
addr=127.0.0.1:18090
mkdir -p "$out"

run_case() { # name burst rounds
  local name=$1 burst=$2 rounds=$3 log="$out/$1.server.log"
  "$bin" serve --max-connections-per-addr -1 --connect-rate-per-addr -1 --room-create-rate off --addr "$addr" --log-level info --rate-limit off >"$log" 2>&1 &
  local pid=$!
  trap 'kill $pid 2>/dev/null || true' EXIT
  for _ in $(seq 50); do grep -q 'msg=listening' "$log" && break; sleep 0.1; done
  echo "== $name: $clients clients, bursts of $burst, $rounds rounds (server pid $pid)"
  local status=0
  timeout 600 "$bin" loadtest --scenario burst --target "ws://$addr/ws" --clients "$clients" \
    --burst "$burst" --rounds "$rounds" --server-pid "$pid" --json "$out/$name.json" 2>/dev/null || status=$?
  kill -TERM "$pid"
  wait "$pid" || true
  trap - EXIT
  grep -o 'accepted=.*' "$log" | awk -v c="$clients" '{
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    w = v["writes"] - v["accepted"]   # each client'"'"'s 101 is one write too
    printf "server: %d deliveries in %d writes (%.4f writes per delivery, %.1f frames per write), %d frames encoded\n",
      v["deliveries"], w, w / v["deliveries"], v["deliveries"] / w, v["frames_encoded"] }'
  return $status
}

run_case single 1 20
run_case burst 100 5
