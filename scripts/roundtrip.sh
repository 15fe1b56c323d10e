#!/usr/bin/env bash
# Request/response latency: 1,000 sequential 16-byte echoes (Autobahn
# 9.7/9.8's shape), `parley serve --echo-path /echo` against the gorilla
# baseline, each server in a process of its own and the client in the
# benchmark's (BenchmarkEchoRoundTrip). The two alternate, RUNS times, so
# that the machine's drift falls on both; prints each run and the medians.
# Loopback only; bounded.
#
# Usage: scripts/roundtrip.sh [runs]   (make build baseline first)
set -euo pipefail
runs=${1:-10}
root=$(pwd)
for b in bin/parley bin/baseline; do
  [ -x "$b" ] || { echo "$b missing: make build baseline" >&2; exit 1; }
done
results=$(for _ in $(seq "$runs"); do
  PARLEY_BIN=$root/bin/parley PARLEY_BASELINE=$root/bin/baseline timeout 300 \
    go test -run '^$' -bench 'EchoRoundTrip/server=(parley|gorilla)-process' -benchtime 1000x ./engine/ |
    awk '/^Benchmark/ { split($1, n, /[=-]/); printf "%s %s ", n[2], $5 } END { print "" }'
done)
echo "$results" | awk '{ print "us per round trip:", $0 }'
echo "$results" | awk '
  { p[NR] = $2; g[NR] = $4 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    mp = median(p, NR); mg = median(g, NR)
    printf "median over %d runs: parley %.1f us, gorilla %.1f us: parley/gorilla %.2f\n", NR, mp, mg, mp / mg
  }'
