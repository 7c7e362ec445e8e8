#!/usr/bin/env bash
# The netns test tier: builds static sidecar, controlplane and kv binaries,
# then runs the real-partition tests in test/netns (build tag netns) as
# root. Everything the tests create (network namespaces with their veths
# and bridges, processes) is removed by the tests' clean-ups and, should
# the test binary die first, by this script's trap. Logs and data
# directories are kept on failure and their path printed.
#
# Usage: test/netns/run.sh [go test flags, e.g. -run TestCleanCut]
# Environment: CW_NETNS_CUTS (clean cuts, default 10), CW_NETNS_SEED
# (nemesis seed), CW_NETNS_STRICT=1 (no split-brain grace).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $(id -u) -ne 0 ]]; then
  echo "test/netns/run.sh: needs root (network namespaces, veths, bridges)" >&2
  exit 1
fi
command -v ip >/dev/null || { echo "test/netns/run.sh: needs iproute2 (ip)" >&2; exit 1; }

BIN=$(mktemp -d /tmp/cw-netns-bin.XXXXXX)
STATE=$(mktemp -d /tmp/cw-netns-state.XXXXXX)
ARTIFACTS=$(mktemp -d /tmp/cw-netns-logs.XXXXXX)
status=1

cleanup() {
  # Processes first (only ours: the PID must still run one of our binaries),
  # then the namespaces, which takes their veths and bridges with them.
  if [[ -f $STATE/pids ]]; then
    while read -r pid; do
      if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$BIN/"; then
        kill -TERM "$pid" 2>/dev/null || true
      fi
    done <"$STATE/pids"
    sleep 1
    while read -r pid; do
      if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "^$BIN/"; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$STATE/pids"
  fi
  if [[ -f $STATE/netns ]]; then
    while read -r ns; do
      if ip netns list | grep -q "^$ns\b"; then ip netns del "$ns" 2>/dev/null || true; fi
    done <"$STATE/netns"
  fi
  rm -rf "$BIN" "$STATE"
  if [[ $status -eq 0 ]]; then
    rm -rf "$ARTIFACTS"
  else
    echo "test/netns: logs and data directories kept in $ARTIFACTS" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== build (static)"
CGO_ENABLED=0 go build -o "$BIN/" ./cmd/sidecar ./cmd/controlplane ./examples/kv

echo "== netns tier"
set +e
CW_NETNS_BIN=$BIN CW_NETNS_STATE=$STATE CW_NETNS_ARTIFACTS=$ARTIFACTS \
  go test -tags netns -count=1 -timeout 20m -v "$@" ./test/netns/
status=$?
set -e
exit "$status"
