#!/usr/bin/env bash
# Connect rate with and without connect tokens, in one run against one
# server: ROUNDS times, 10,000 clients connect as guests, then 10,000
# connect with HS256 tokens they sign (user lt-<n>), alternately; each
# hold is 1 s. Prints each round's rate and the median ratio. Loopback
# only; bounded.
#
# Usage: scripts/tokenrate.sh [clients] [rounds] [out-dir]
set -euo pipefail
clients=${1:-10000}
rounds=${2:-3}
out=${3:-reports/tokenrate}
bin=./bin/parley
addr=127.0.0.1:18097
mkdir -p "$out"
head -c 48 /dev/urandom | base64 >"$out/secret" # HS256: at least 32 bytes
chmod 600 "$out/secret"
"$bin" serve --jwt-secret "$out/secret" --jwt-audience parley --guests on \
  --max-connections-per-addr -1 --connect-rate-per-addr -1 --room-create-rate off --addr "$addr" --log-level warn >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "http://$addr/test" >/dev/null 2>&1 && break; sleep 0.1; done
run() { # $1: name, then extra flags
  local name=$1; shift
  timeout 300 "$bin" loadtest --scenario hold --target "ws://$addr/ws" --clients "$clients" --hold 1s \
    --json "$out/$name.json" "$@" >"$out/$name.txt"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["connects_per_second"], r["failed"])' "$out/$name.json"
}
: >"$out/summary.txt"
for i in $(seq "$rounds"); do
  read -r g gf < <(run "guests-$i")
  read -r t tf < <(run "tokens-$i" --token-secret "$out/secret" --token-audience parley)
  echo "round $i: guests $g/s (failed $gf), tokens $t/s (failed $tf)" | tee -a "$out/summary.txt"
done
python3 - "$out" "$rounds" <<'PY' | tee -a "$out/summary.txt"
import json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
g = [json.load(open(f"{out}/guests-{i}.json"))["connects_per_second"] for i in range(1, n + 1)]
t = [json.load(open(f"{out}/tokens-{i}.json"))["connects_per_second"] for i in range(1, n + 1)]
print(f"median: guests {statistics.median(g):.0f}/s, tokens {statistics.median(t):.0f}/s, "
      f"ratio tokens/guests {statistics.median(t) / statistics.median(g):.3f}")
PY
