#!/usr/bin/env bash
# A 10,000-client chat load test against a freshly started server: rooms of
# 100, one message per second per client, every delivery checked. Reports
# go to the output directory (summary, JSON, HTML). Loopback only; bounded.
#
# Usage: scripts/loadtest.sh [clients] [out-dir] [extra loadtest flags...]
set -euo pipefail
clients=${1:-10000}
out=${2:-reports/loadtest}
shift 2 2>/dev/null || true
bin=./bin/parley
addr=127.0.0.1:18095
mkdir -p "$out"
"$bin" serve --max-connections-per-addr -1 --connect-rate-per-addr -1 --room-create-rate off --addr "$addr" --log-level warn >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://$addr/test" >/dev/null 2>&1 && break; sleep 0.1; done
timeout 600 "$bin" loadtest --scenario chat --target "ws://$addr/ws" --clients "$clients" \
  --room-size 100 --rate 1 --duration 10s --metrics-url "http://$addr/metrics" --server-pid "$pid" \
  --json "$out/result.json" --html "$out/report.html" "$@" | tee "$out/summary.txt"
