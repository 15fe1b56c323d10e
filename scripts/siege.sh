#!/usr/bin/env bash
# Many addresses against one server: `parley loadtest --scenario siege` holds
# idle WebSocket clients (upgraded, answering pings, never saying anything)
# and TCP sockets that never upgrade, from ADDRS loopback addresses each in a
# network of its own (127.N.0.2: per-network limits do not help), every one
# dialed again as soon as the server drops it, up to the attacker's file
# limit; meanwhile 20 healthy guests from another address (127.255.0.2)
# connect, join a room and chat, and must see every message with p99 under
# 100 ms. The server runs on its defaults; MODE=before gives it the old
# behaviour (no slots kept for users, silent guests never closed, no
# per-network limit) for comparison.
#
# Reports in OUT: siege.txt, healthy.txt (+ .json), metrics.txt, server.log.
# Loopback only; every process is stopped at the end.
#
# Usage: scripts/siege.sh [out-dir]
# Environment: ADDRS (250), CLIENTS (19400 idle clients: more than the
# server's 19,000 slots), SOCKETS (1500 never-upgraded sockets: with the
# clients, past the server's 20,000 files), HEALTHY (20), PORT (18080), MODE
# (after|before), SERVE_FLAGS.
set -euo pipefail
out=${1:-reports/siege}
addrs=${ADDRS:-250}
clients=${CLIENTS:-19400}
sockets=${SOCKETS:-1500}
healthy=${HEALTHY:-20}
port=${PORT:-18080}
mode=${MODE:-after}
mkdir -p "$out"
bin=./bin/parley
[ -x "$bin" ] || { echo "build first: make build" >&2; exit 1; }

extra=()
if [ "$mode" = before ]; then
	extra=(--keep-silent-guests --reserved-connections -1 --max-connections-per-network -1)
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# shellcheck disable=SC2086
"$bin" serve --addr "127.0.0.1:$port" --log-level warn "${extra[@]}" ${SERVE_FLAGS:-} >"$out/server.log" 2>&1 &
pids+=($!)
server=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/test" >/dev/null && break; sleep 0.1; done

sources=$(for i in $(seq 1 "$addrs"); do printf '127.%d.0.2,' "$i"; done)
sources=${sources%,}
echo "siege: $clients idle clients and $sockets sockets from $addrs addresses, each in its own /24 (two processes: one holds at most 19,500 sockets)"
"$bin" loadtest --scenario siege --target "ws://127.0.0.1:$port/ws" --clients "$clients" \
	--sources "$sources" --dialers 256 --duration 75s >"$out/siege.txt" 2>"$out/siege.log" &
pids+=($!)
siege=$!
"$bin" loadtest --scenario siege --target "ws://127.0.0.1:$port/ws" --clients 1 --idle-sockets "$sockets" \
	--sources "$sources" --dialers 256 --duration 75s >"$out/sockets.txt" 2>"$out/sockets.log" &
pids+=($!)
sockets_pid=$!

# Wait until the besiegers hold every slot they can get: past 17,000 and
# no more for 2 s (at most 60 s).
prev=-1 still=0
for _ in $(seq 120); do
	n=$(curl -s --max-time 2 "http://127.0.0.1:$port/metrics" | awk '$1 == "parley_connections" {print $2}' || true)
	if [ "${n:-0}" -ge 17000 ] && [ "$n" = "$prev" ]; then still=$((still + 1)); else still=0; fi
	[ "$still" -ge 4 ] && break
	prev=${n:-0}
	sleep 0.5
done
echo "server holds ${n:-0} clients; $healthy healthy guests connect, join and chat for 20 s"
set +e
"$bin" loadtest --scenario chat --target "ws://127.0.0.1:$port/ws" --clients "$healthy" --room-size "$healthy" --rate 1 \
	--duration 20s --sources 127.255.0.2 --max-p99 100ms --json "$out/healthy.json" >"$out/healthy.txt" 2>"$out/healthy.log"
verdict=$?
set -e
curl -s --max-time 5 "http://127.0.0.1:$port/metrics" | grep -E '^parley_(connections|connections_evicted_total|handshakes_refused_total)' >"$out/metrics.txt"
ps -o rss=,time= -p "$server" | awk '{print "server RSS " $1 " KiB, CPU " $2 " (whole run so far)"}' >>"$out/metrics.txt"
ps -o time= -p "$siege" | awk '{print "besiegers CPU " $1 " (idle clients)"}' >>"$out/metrics.txt"
ps -o time= -p "$sockets_pid" | awk '{print "besiegers CPU " $1 " (sockets)"}' >>"$out/metrics.txt"
wait "$siege" "$sockets_pid" || true
echo "--- healthy clients (mode $mode)"
cat "$out/healthy.txt"
echo "--- besiegers"
cat "$out/siege.txt" "$out/sockets.txt"
echo "--- server"
cat "$out/metrics.txt"
exit $verdict
