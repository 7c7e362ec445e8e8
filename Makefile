# Causeway. `make demo` runs a mesh on this machine; `make test` runs the tests.
GO        ?= go
BIN       := bin
PKGS      := ./...
# Packages whose code runs concurrently: always tested under the race detector.
RACE_PKGS := ./proxy/... ./cmd/... ./discovery/...

.PHONY: all build test race lint bench demo h2spec fuzz clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/...

## test: unit, end-to-end (in-process on 127.0.0.1:0) and multi-process tests, then the race detector over the concurrent packages.
test:
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 10m $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)

race:
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

## lint: golangci-lint with the linters listed in .golangci.yml.
lint:
	golangci-lint run $(PKGS)

## h2spec: HTTP/2 conformance of the inbound listener (also part of `make test`).
h2spec:
	$(GO) test -count=1 -run TestH2Spec -v ./proxy/

## fuzz: each fuzz target for a bounded time.
FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzTracker -fuzztime $(FUZZTIME) ./proxy/h1guard/

## bench: the load benchmark (direct, sidecar, mesh hop, nginx, HAProxy); see bench/README.md.
bench:
	bash bench/run.sh

## demo: a mesh of example services and sidecars on this machine; stops everything it started.
demo: build
	$(BIN)/demo -bin $(BIN)

clean:
	rm -rf $(BIN)
