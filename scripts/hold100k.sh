#!/usr/bin/env bash
# Connect-and-hold of 100,000 clients on one machine: one process holds at
# most ~19,900 sockets, so six `parley serve` processes (ports 18101-18106)
# take ~16,700 clients each, and `parley loadtest` runs as six workers.
# Reports time to connect all, failures, and memory per connection on both
# sides. Loopback only; every process is stopped at the end.
#
# Usage: scripts/hold100k.sh [clients] [servers] [out-dir]
set -euo pipefail
clients=${1:-100000}
servers=${2:-6}
out=${3:-reports/hold100k}
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
targets=() pidflags=() metrics=()
for i in $(seq 1 "$servers"); do
  port=$((18100 + i))
  ./bin/parley serve --addr "127.0.0.1:$port" --log-level warn >"$out/server$i.log" 2>&1 &
  pids+=($!)
  targets+=(--target "ws://127.0.0.1:$port/ws")
  pidflags+=(--server-pid "$!")
  metrics+=(--metrics-url "http://127.0.0.1:$port/metrics")
done
for i in $(seq 1 "$servers"); do
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((18100 + i))/test" >/dev/null 2>&1 && break; sleep 0.1; done
done
timeout 900 ./bin/parley loadtest --scenario hold --clients "$clients" "${targets[@]}" "${pidflags[@]}" "${metrics[@]}" \
  --sources 127.0.0.2-127.0.0.33 --hold 10s --json "$out/result.json" --html "$out/report.html" | tee "$out/summary.txt"
