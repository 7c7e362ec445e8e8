# Causeway. `make demo` runs a mesh on this machine; `make test` runs the tests.
GO        ?= go
BIN       := bin
PKGS      := ./...
# Packages whose code runs concurrently: always tested under the race detector.
RACE_PKGS := ./proxy/... ./cmd/... ./discovery/... ./control/... ./resilience/... ./tracing/...

.PHONY: all build test race lint bench demo h2spec fuzz fuzz-seeds clean images demo-compose demo-compose-down test-containers test-netns

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/...

## test: unit, end-to-end (in-process on 127.0.0.1:0) and multi-process tests, then the race detector over the concurrent packages.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 10m $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)
	cd deploy/kubernetes && $(GO) vet ./... && $(GO) test -count=1 -timeout 5m ./...

race:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## lint: golangci-lint with the linters listed in .golangci.yml.
lint:
	golangci-lint run $(PKGS)
	cd deploy/kubernetes && golangci-lint run --config ../../.golangci.yml ./...

## h2spec: HTTP/2 conformance of the inbound listener (also part of `make test`).
h2spec:
	$(GO) test -count=1 -run TestH2Spec -v ./proxy/

## fuzz: each fuzz target for a bounded time. Seed inputs live in each
## package's testdata/fuzz/<target>/ (go test replays them as regression
## cases; a crasher a run finds is written there by go test itself); new
## interesting inputs go to Go's fuzz cache only: see fuzz-seeds.
FUZZTIME ?= 20s
# Every parser the sidecar owns that reads what a peer or client sends.
FUZZ_TARGETS := FuzzTracker:./proxy/h1guard/ FuzzParseLamport:./tracing/clock/ FuzzParseVector:./tracing/clock/ \
	FuzzDecodeMeta:./discovery/ FuzzParseGRPCTimeout:./resilience/ FuzzNormalize:./proxy/authz/ \
	FuzzParse:./control/identity/spiffeid/ FuzzDecode:./control/policy/ FuzzDecode:./proxy/config/ \
	FuzzMeshExtension:./control/xdsclient/
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz $${t%%:*} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}$$" -fuzztime $(FUZZTIME) "$${t#*:}" || exit 1; \
	done

## fuzz-seeds: after make fuzz, copy inputs it found from Go's fuzz cache
## into each target's testdata/fuzz/<target>/, up to FUZZSEEDS files there.
FUZZSEEDS ?= 30
fuzz-seeds:
	@cache=$$($(GO) env GOCACHE)/fuzz; for t in $(FUZZ_TARGETS); do \
		name=$${t%%:*}; pkg=$${t#*:}; \
		src=$$cache/$$($(GO) list "$$pkg")/$$name; dst=$${pkg%/}/testdata/fuzz/$$name; \
		[ -d "$$src" ] || continue; mkdir -p "$$dst"; \
		for f in "$$src"/*; do \
			[ "$$(ls "$$dst" | wc -l)" -ge $(FUZZSEEDS) ] && break; \
			cp -n "$$f" "$$dst/"; \
		done; \
		echo "$$dst: $$(ls "$$dst" | wc -l) seeds"; \
	done

## bench: the load benchmark (direct, sidecar, mesh hop, nginx, HAProxy); see bench/README.md.
bench:
	bash bench/run.sh

## demo: a mesh of example services and sidecars on this machine; stops everything it started.
demo: build
	$(BIN)/demo -bin $(BIN)

## images: container images from static binaries built on the host (no image is pulled).
images:
	deploy/docker/build-images.sh

COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
COMPOSE_FILE := deploy/compose/docker-compose.yml

## demo-compose: the mesh in containers, left running (make demo-compose-down stops it).
demo-compose: images
	deploy/compose/demo.sh

demo-compose-down:
	$(COMPOSE) -p causeway -f $(COMPOSE_FILE) down -v --remove-orphans

## test-netns: real partitions in network namespaces (root, iproute2): fence/unfence times and the history check.
test-netns:
	test/netns/run.sh

## test-containers: the container tier (images, compose mesh, kill, partition, restart under load).
test-containers: images
	deploy/compose/test.sh

clean:
	rm -rf $(BIN)
