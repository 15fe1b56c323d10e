#!/bin/sh
# Builds Parley's container image (Containerfile) from a static binary and
# checks it: nothing in it but the binary and an empty /tmp, a user that
# is not root, the entry point, and a container that serves /healthz and
# /readyz and the page. Usage: scripts/container.sh [IMAGE]
set -eu
IMAGE=${1:-parley:dev}
command -v podman >/dev/null || { echo "container: podman is needed (apt-get install podman)" >&2; exit 1; }
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"; podman rm -f parley-container-check >/dev/null 2>&1 || true' EXIT
mkdir "$ctx/tmp"
chmod 1777 "$ctx/tmp"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.buildRevision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" -o "$ctx/parley" ./cmd/parley
if file "$ctx/parley" | grep -q dynamically; then echo "container: the binary is not static" >&2; exit 1; fi
podman build -q -f Containerfile -t "$IMAGE" "$ctx" >/dev/null
echo "built $IMAGE: $(podman image inspect -f '{{.Size}}' "$IMAGE") bytes"

user=$(podman image inspect -f '{{.Config.User}}' "$IMAGE")
entry=$(podman image inspect -f '{{join .Config.Entrypoint " "}}' "$IMAGE")
[ "$user" = "65532:65532" ] || { echo "container: user $user, want 65532:65532" >&2; exit 1; }
[ "$entry" = "/parley serve" ] || { echo "container: entry point $entry" >&2; exit 1; }
# Its files: the binary and /tmp, nothing else.
files=$(podman create --name parley-container-check "$IMAGE" >/dev/null && podman export parley-container-check | tar -t | sort | tr '\n' ' ')
podman rm parley-container-check >/dev/null
case "$files" in
"parley tmp/ "|"./parley ./tmp/ "|"parley tmp/ ") ;;
*) echo "container: files: $files" >&2; exit 1 ;;
esac
echo "files: $files; user $user; entry point $entry"

# A run: host networking (no image is pulled, no bridge needed), a free
# port. Where the container runtime may not set the container's rlimits
# (a sandbox without CAP_SYS_RESOURCE: "setrlimit: operation not
# permitted"), the image's root filesystem runs under chroot as its user
# instead, and the script says so.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
stopit=""
if podman run -d --rm --name parley-container-check --network host --ulimit nofile=$(ulimit -Sn):$(ulimit -Hn) \
	-e PARLEY_ADDR=127.0.0.1:$port "$IMAGE" >/dev/null 2>"$ctx/run.err"; then
	how="podman run"
	stopit="podman stop -t 10 parley-container-check"
else
	echo "podman run failed here: $(tail -1 "$ctx/run.err")"
	mkdir "$ctx/rootfs"
	podman create --name parley-container-check "$IMAGE" >/dev/null
	podman export parley-container-check | tar -x -C "$ctx/rootfs"
	podman rm parley-container-check >/dev/null
	PARLEY_ADDR=127.0.0.1:$port chroot --userspec=65532:65532 "$ctx/rootfs" /parley serve >"$ctx/serve.log" 2>&1 &
	pid=$!
	how="chroot of the image's files as 65532:65532 (pid $pid)"
	stopit="kill -TERM $pid"
fi
ok=""
for i in $(seq 1 100); do
	if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ok=1; break; fi
	sleep 0.1
done
[ -n "$ok" ] || { echo "container: /readyz never answered" >&2; exit 1; }
curl -fsS "http://127.0.0.1:$port/healthz" | grep -q ok
curl -fsS "http://127.0.0.1:$port/" | grep -qi "<html"
curl -fsS "http://127.0.0.1:$port/metrics" | grep -q parley_build_info
$stopit >/dev/null
echo "ran ($how): /readyz, /healthz, the page and /metrics answered on port $port"
