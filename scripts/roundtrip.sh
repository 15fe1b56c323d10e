#!/usr/bin/env bash
# Request/response latency: 1,000 sequential 16-byte echoes (Autobahn
# 9.7/9.8's shape) against `parley serve --echo-path /echo` on its default
# flush window, the same with `--flush-window off`, and the gorilla
# baseline; each server in a process of its own, the client in the
# benchmark's (BenchmarkEchoRoundTrip). They alternate, RUNS times, so that
# the machine's drift falls on all three; prints each run and the medians.
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
    awk '/^Benchmark/ { printf "%s ", $5 } END { print "" }'
done)
echo "$results" | awk '{ printf "us per round trip: parley %s, parley without window %s, gorilla %s\n", $1, $2, $3 }'
echo "$results" | awk '
  { p[NR] = $1; o[NR] = $2; g[NR] = $3 }
  function median(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    mp = median(p, NR); mo = median(o, NR); mg = median(g, NR)
    printf "median over %d runs: parley %.1f us, without window %.1f us, gorilla %.1f us\n", NR, mp, mo, mg
    printf "parley/without window %.2f, parley/gorilla %.2f\n", mp / mo, mp / mg
  }'
