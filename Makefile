# Parley. `make run` starts the server on its defaults; `make test` is what CI runs.
GO      ?= go
BIN     := bin/parley
PKGS    := ./...
REV     := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION := $(shell git describe --tags 2>/dev/null || echo dev)
LDFLAGS := -X main.buildRevision=$(REV) -X main.buildVersion=$(VERSION)

.PHONY: all build baseline run cluster test vet fmt bench container fuzz fanout roundtrip loadtest compare hold-100k loadtest-100k loadtest-100k-kill chaos siege clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/parley

# The container image: a static binary in a FROM-scratch image, run as a
# user that is not root (Containerfile). Built with podman (apt-get install
# podman), offline, then checked: its files, user, entry point, and a run
# that answers /readyz. IMAGE names it.
IMAGE ?= parley:dev
container:
	scripts/container.sh $(IMAGE)

# ADDR (host:port) moves the server, or a cluster's first node, off
# localhost:1337: make run ADDR=0.0.0.0:8080.
ADDR ?=
ADDR_FLAG = $(if $(ADDR),--addr $(ADDR))

run: build
	./$(BIN) serve $(ADDR_FLAG)

# A one-machine cluster: an embedded NATS (or NATS_SERVERS of them,
# clustered, with three replicas) and NODES nodes on ports 1337...,
# metrics on 9100... (parley cluster --help).
NODES ?= 3
NATS_SERVERS ?= 1
cluster: build
	./$(BIN) cluster --nodes $(NODES) --nats-servers $(NATS_SERVERS) $(ADDR_FLAG)

vet:
	$(GO) vet $(PKGS)
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	@$(GO) mod tidy -diff || { echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1; }

test: vet
	$(GO) test -race -count=1 -timeout 10m $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# Benchmarks of the hot paths; compare runs with benchstat.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS)

# Each fuzz target for FUZZTIME (their seed corpora also run in make test).
FUZZTIME ?= 30s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseHeader$$' -fuzztime $(FUZZTIME) ./internal/wsproto/
	$(GO) test -run '^$$' -fuzz '^FuzzFrameRoundTrip$$' -fuzztime $(FUZZTIME) ./internal/wsproto/
	$(GO) test -run '^$$' -fuzz '^FuzzClosePayload$$' -fuzztime $(FUZZTIME) ./internal/wsproto/
	$(GO) test -run '^$$' -fuzz '^FuzzCheckUpgrade$$' -fuzztime $(FUZZTIME) ./engine/
	$(GO) test -run '^$$' -fuzz '^FuzzRequest$$' -fuzztime $(FUZZTIME) ./chat/

# Fan-out across processes: 10,000 clients, single messages and bursts of
# 100, each against a fresh server. Reports go to reports/fanout/.
fanout: build
	scripts/fanout.sh 10000 reports/fanout

# Sequential echo round trips, parley against the gorilla baseline, each
# in its own process, alternately; prints the medians.
roundtrip: build baseline
	scripts/roundtrip.sh 10

# A 10,000-client chat against a freshly started server; reports in
# reports/loadtest/ (summary.txt, result.json, report.html).
loadtest: build
	scripts/loadtest.sh 10000 reports/loadtest

# The gorilla baseline (its own module under loadtest/baseline).
baseline:
	cd loadtest/baseline && $(GO) build -o ../../bin/baseline .

# Parley against the baseline, 15,000 clients, the same load; prints ratios.
compare: build baseline
	scripts/compare.sh 15000 reports/compare

# 100,000 clients held against six server processes; reports in reports/hold100k/.
hold-100k: build
	scripts/hold100k.sh 100000 6 reports/hold100k

# The chat with 100,000 clients over a cluster (an embedded NATS and seven
# nodes), rooms of 100 spread over every node, each client saying 0.1
# messages per second for 30 s; reports in reports/loadtest100k/.
loadtest-100k: build
	scripts/loadtest100k.sh 100000 7 reports/loadtest100k

# The same at half the rate with node n3 killed (SIGKILL) 15 s into the
# chat: its clients reconnect to the others and resume from their last
# sequence number. At the full rate this machine has no CPU left for the
# reconnection storm, which then outlasts the 100-message history (see the
# README). Reports in reports/loadtest100k-kill/.
loadtest-100k-kill: build
	RATE=0.05 KILL_AFTER=15 scripts/loadtest100k.sh 100000 7 reports/loadtest100k-kill

clean:
	rm -rf bin

# The cluster's promise under failures: a chat of CHAOS_CLIENTS clients on
# three NATS servers (a NATS cluster) and three nodes, while a NATS server
# is killed, restarted, every NATS server restarted, a node killed and a
# node paused; prints lost / duplicated / out of order and the latency
# around each event (scripts/chaos.sh). Reports in reports/chaos/.
CHAOS_CLIENTS ?= 3000
chaos: build
	scripts/chaos.sh $(CHAOS_CLIENTS) reports/chaos

# Many addresses against one server (scripts/siege.sh; MODE=before for the
# server without its defences).
siege: build
	scripts/siege.sh reports/siege
