#!/usr/bin/env bash
# Connect-and-hold of 100,000 clients on one machine: one process holds at
# most ~19,900 sockets, so six `parley serve` processes (ports 18101-18106)
# take ~16,700 clients each, and `parley loadtest` runs as six workers.
# Reports time to connect all, failures, and memory per connection on both
# sides. Loopback only; every process is stopped at the end.
#
# Usage: scripts/hold100k.sh [clients] [servers] [out-dir]
# Environment: SERVE_FLAGS (extra `parley serve` flags), GOMAXPROCS.
set -euo pipefail
# Twelve processes share two cores: one P each avoids their schedulers
# fighting (measured: 100k connected about 10% sooner than with two).
export GOMAXPROCS=${GOMAXPROCS:-1}
clients=${1:-100000}
servers=${2:-6}
out=${3:-reports/hold100k}
mkdir -p "$out"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
targets=() pidflags=() metrics=()
for i in $(seq 1 "$servers"); do
  port=$((18100 + i))
  ./bin/parley serve --max-connections-per-addr -1 --connect-rate-per-addr -1 --room-create-rate off --addr "127.0.0.1:$port" --log-level warn ${SERVE_FLAGS:-} >"$out/server$i.log" 2>&1 &
  pids+=($!)
  targets+=(--target "ws://127.0.0.1:$port/ws")
  pidflags+=(--server-pid "$!")
  metrics+=(--metrics-url "http://127.0.0.1:$port/metrics")
done
for i in $(seq 1 "$servers"); do
  up=
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((18100 + i))/test" >/dev/null 2>&1 && up=1 && break; sleep 0.1; done
  [ -n "$up" ] || { echo "server $i did not start:" >&2; cat "$out/server$i.log" >&2; exit 1; }
done
timeout 900 ./bin/parley loadtest --scenario hold --clients "$clients" "${targets[@]}" "${pidflags[@]}" "${metrics[@]}" \
  --sources 127.0.0.2-127.0.0.33 --hold 10s --json "$out/result.json" --html "$out/report.html" | tee "$out/summary.txt"
