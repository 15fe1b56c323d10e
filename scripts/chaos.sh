#!/usr/bin/env bash
# The cluster's promise, tried: a chat on three NATS servers (a NATS
# cluster, `parley nats`) and three nodes (`parley serve`), and during it,
# one after the other, GAP seconds apart:
#   nats-kill     SIGKILL of the NATS server that leads the most rooms'
#                 streams (s1 when none leads more), left down
#   nats-restart  that server started again (from its store)
#   nats-rolling  every NATS server stopped (SIGTERM) and started again, one
#                 after the other, all within 5 s
#   node-kill     SIGKILL of node n3 (its clients reconnect to the others and
#                 resume their rooms from the last sequence number they saw)
#   node-pause    node n2 stopped (SIGSTOP) for 5 s, then continued
#   nats-bounce   that server stopped (SIGTERM) and started again 3 s later: with
#                 NATS_SERVERS=1, a lone NATS restarted within 5 s
# The load generator checks that every message said reaches every member of
# its room once, in the order said; it says a message answered
# not_delivered again under its id. Printed: lost / duplicated / out of order
# for the run, the latency around each event (in the GAP seconds from it:
# the worst second's p99, the worst delivery, and how many seconds had a p99
# over 2 s), and what the nodes counted.
#
# Reports in OUT: summary.txt (the load generator's), events.txt, chaos.txt
# (the table), result.json, report.html, the processes' logs.
# Loopback only; every process is stopped at the end.
#
# Usage: scripts/chaos.sh [clients] [out-dir]
# Environment: ROOM_SIZE (100), RATE (0.5 messages per client per second),
# GAP (15 s), EVENTS (default: the first five above, in that order; with
# NATS_SERVERS=1: nats-bounce node-kill node-pause; "none": a chat without
# failures, for what it costs), NATS_SERVERS (3, or 1:
# a lone server), STORAGE (file or memory), REPLICAS (3, or 1 with a lone
# server; 1 to compare), SERVE_FLAGS, LOADTEST_FLAGS.
set -euo pipefail
clients=${1:-3000}
out=${2:-reports/chaos}
room_size=${ROOM_SIZE:-100}
rate=${RATE:-0.5}
gap=${GAP:-15}
servers=${NATS_SERVERS:-3}
if [ "${EVENTS:-}" = none ]; then
  events=() # a chat without failures: what it costs
  replicas=${REPLICAS:-$([ "$servers" = 1 ] && echo 1 || echo 3)}
elif [ "$servers" = 1 ]; then
  events=(${EVENTS:-nats-bounce node-kill node-pause})
  replicas=${REPLICAS:-1}
else
  events=(${EVENTS:-nats-kill nats-restart nats-rolling node-kill node-pause})
  replicas=${REPLICAS:-3}
fi
storage=${STORAGE:-file}
bin=./bin/parley
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }

mkdir -p "$out"
rm -rf "$out/data" "$out"/*.log "$out/events.txt"
tok="$out/nats.token"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$tok"
chmod 600 "$tok"

declare -A pid
cleanup() {
  for p in "${pid[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

routes= urls=
for i in $(seq "$servers"); do
  routes+=${routes:+,}127.0.0.1:$((26220 + i))
  urls+=${urls:+,}nats://127.0.0.1:$((24220 + i))
done
start_nats() { # $1: 1..servers
  cluster=()
  [ "$servers" -gt 1 ] && cluster=(--cluster-addr "127.0.0.1:$((26220 + $1))" --routes "$routes")
  "$bin" nats --addr "127.0.0.1:$((24220 + $1))" "${cluster[@]}" \
    --name "s$1" --store-dir "$out/data/s$1" --token-file "$tok" --monitor-addr "127.0.0.1:$((28220 + $1))" \
    --log-level warn >>"$out/nats-s$1.log" 2>&1 &
  pid[s$1]=$!
}
start_node() { # $1: 1..3
  "$bin" serve --nats "$urls" --nats-token-file "$tok" --node "n$1" --addr "127.0.0.1:$((28100 + $1))" \
    --metrics-listen "127.0.0.1:$((29100 + $1))" --history-storage "$storage" --replicas "$replicas" \
    --max-connections-per-addr -1 --connect-rate-per-addr -1 --room-create-rate off --log-level warn ${SERVE_FLAGS:-} >>"$out/node-n$1.log" 2>&1 &
  pid[n$1]=$!
}
up() { for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; return 1; }
metric() { # sum of a metric over the nodes up
  for i in 1 2 3; do curl -sf --max-time 2 "http://127.0.0.1:$((29100 + i))/metrics" 2>/dev/null || true; done |
    awk -v m="$1" '$1 == m {n += $2} END {print n + 0}'
}
stamp() { echo "$1 $(date +%s.%N) ${2:-}" >>"$out/events.txt"; echo "$(date +%T) $1 ${2:-}" >&2; }
# leader prints the number of the NATS server leading the most rooms'
# streams, as a server up tells (its /jsz); 1 when none does.
leader() { # each server lists the streams it keeps a copy of
  for i in $(seq "$servers"); do
    curl -sf --max-time 2 "http://127.0.0.1:$((28220 + i))/jsz?accounts=true&streams=true" 2>/dev/null || true
  done | jq -rs '[.[].account_details[]?.stream_detail[]? | select(.name | startswith("parley_room_")) | {name, l: (.cluster.leader // "")}]
    | unique_by(.name) | map(.l) | map(select(. != "")) | group_by(.) | map({s: .[0], n: length}) | max_by(.n) | .s // "s1"' 2>/dev/null |
    tr -dc '0-9' | grep . || echo 1
}
victim=1

for i in $(seq "$servers"); do start_nats "$i"; done
for i in $(seq "$servers"); do up "http://127.0.0.1:$((28220 + i))/healthz" || { echo "NATS s$i did not start:" >&2; cat "$out/nats-s$i.log" >&2; exit 1; }; done
for i in 1 2 3; do start_node "$i"; done
for i in 1 2 3; do up "http://127.0.0.1:$((28100 + i))/test" || { echo "node n$i did not start:" >&2; cat "$out/node-n$i.log" >&2; exit 1; }; done

# A gap after each event, and one more for what the events themselves take
# (a rolling restart ~10 s, a pause 5 s).
duration=$((gap * (${#events[@]} + 2)))
targets=() metrics=()
for i in 1 2 3; do
  targets+=(--target "ws://127.0.0.1:$((28100 + i))/ws")
  metrics+=(--metrics-url "http://127.0.0.1:$((29100 + i))/metrics")
done
timeout $((duration + 600)) "$bin" loadtest --scenario chat --clients "$clients" --room-size "$room_size" --rate "$rate" \
  --duration "${duration}s" --reconnect "${targets[@]}" "${metrics[@]}" --json "$out/result.json" --html "$out/report.html" \
  ${LOADTEST_FLAGS:-} >"$out/summary.txt" 2>"$out/loadtest.log" &
lt=$!

# The chat starts once every client is in the lobby and its room.
for _ in $(seq 1200); do
  [ "$(metric parley_room_members)" -ge $((2 * clients)) ] && break
  sleep 0.25
done
stamp chat-start
cpu() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat" 2>/dev/null || echo 0; } # user + system, clock ticks
procs=("${!pid[@]}")
declare -A pid0 cpu0
for k in "${procs[@]}"; do pid0[$k]=${pid[$k]} cpu0[$k]=$(cpu "$k"); done
for e in "${events[@]}"; do
  sleep "$gap"
  case "$e" in
  nats-kill | nats-bounce) victim=$(leader) ;;
  esac
  stamp "$e" "s$victim"
  case "$e" in
  nats-kill) kill -9 "${pid[s$victim]}" ;;
  nats-restart) start_nats "$victim" ;;
  nats-bounce)
    kill "${pid[s$victim]}"
    while kill -0 "${pid[s$victim]}" 2>/dev/null; do sleep 0.05; done
    sleep 3
    start_nats "$victim" ;;
  nats-rolling)
    for i in $(seq "$servers"); do
      kill "${pid[s$i]}" 2>/dev/null || true
      while kill -0 "${pid[s$i]}" 2>/dev/null; do sleep 0.05; done
      start_nats "$i"
      sleep 1
    done ;;
  node-kill) kill -9 "${pid[n3]}" ;;
  node-pause) kill -STOP "${pid[n2]}"; sleep 5; kill -CONT "${pid[n2]}" ;;
  *) echo "unknown event $e" >&2; exit 2 ;;
  esac
done
status=0
wait "$lt" || status=$?
# The servers' CPU over the chat, of the processes up throughout (a
# process killed or restarted takes its CPU with it: with no events, all).
steady=() used=0
for k in "${procs[@]}"; do
  if [ "${pid[$k]}" = "${pid0[$k]}" ] && kill -0 "${pid[$k]}" 2>/dev/null; then
    steady+=("$k") used=$((used + $(cpu "$k") - ${cpu0[$k]}))
  fi
done
cat "$out/summary.txt"

# The latency around each event: the seconds of the load generator's
# series from the event to GAP seconds after it.
start=$(date -d "$(jq -r .started_at "$out/result.json")" +%s.%N)
{
  printf '%s NATS servers, storage %s, replicas %s; %d clients in rooms of %d at %s msg/s\n' "$servers" "$storage" "$replicas" "$clients" "$room_size" "$rate"
  jq -r '"run: missing \(.missing), duplicated \(.duplicated), out of order \(.out_of_order); delivered \(.deliveries) of \(.deliveries_expected); retried after not_delivered \(.not_delivered_retries); reconnects \(.reconnects // 0)"' "$out/result.json"
  printf '%-14s %8s %13s %10s %14s %12s\n' event at_s worst_p99_ms max_ms s_p99_over_2s deliveries
  while read -r name at who; do
    [ "$name" = chat-start ] && continue
    t0=$(awk -v a="$at" -v s="$start" 'BEGIN {printf "%.3f", a - s}')
    jq -r --argjson t0 "$t0" --argjson g "$gap" '
      [.series[] | select(.t > $t0 and .t <= $t0 + $g)] as $w
      | "\([$w[].p99_ms] | max // 0) \([$w[].max_ms] | max // 0) \([$w[] | select(.p99_ms > 2000)] | length) \([$w[].received] | add // 0)"' "$out/result.json" |
      { read -r p99 mx slow n; printf '%-14s %8.1f %13.1f %10.1f %14d %12d\n' "$name" "$t0" "$p99" "$mx" "$slow" "$n"; }
  done <"$out/events.txt"
  jq -r --argjson ticks "$(getconf CLK_TCK)" --argjson c "$used" --arg who "${steady[*]}" \
    '"servers: \(.deliveries_per_second | floor) deliveries/s; CPU of \($who): \($c / $ticks) s, \(if .deliveries > 0 then ($c / $ticks) / .deliveries * 1e6 | . * 100 | floor / 100 else 0 end) s per million deliveries"' "$out/result.json"
  echo "nodes (summed over those up at the end):"
  for m in parley_nats_publish_retries_total parley_nats_publish_errors_total parley_nats_overtaken_total \
    parley_nats_lost_total parley_nats_room_resets_total parley_nats_repaired_total parley_nats_fetch_retries_total \
    parley_nats_reconnects_total parley_nats_provision_retries_total; do
    printf '  %-40s %s\n' "$m" "$(metric "$m")"
  done
} | tee "$out/chaos.txt"
exit "$status"
