#!/usr/bin/env bash
# make test-containers: the container tier's test. It brings the compose
# mesh up (the images must exist: make images) and checks, in order:
#
#   a. the mesh becomes healthy and traffic through the entry service
#      crosses the sidecars (answers name an inventory instance; the
#      sidecars' request counters move);
#   b. a sidecar restarted while a steady load runs costs the callers no
#      request (the callers follow readiness: the draining sidecar turns
#      not-ready over gossip and its peers stop picking it);
#   c. a killed container is dropped by the others, and comes back;
#   d. a cut leaves the minority (orders-2, inventory-2) fenced, its reads
#      still served, the majority writing; healing lifts the fencing.
#
# Bounded: every wait has a timeout and the whole run at most TEST_LIMIT
# seconds (default 600). Everything it created (the compose project with its
# volumes and networks, helper containers, a temporary directory) is
# removed on exit, whatever the outcome. Exit status 0 only when every
# check passed. Needs docker, compose (v1 or v2), curl and go.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

TEST_LIMIT=${TEST_LIMIT:-600}
LOAD_RPS=20
LOAD_SECONDS=20
SKU=widget
WORK=""
WATCHDOG=""
LOAD_PID=""
RESULTS=()
T_START=$(now_ms)

log() { echo "[$(secs_since "$T_START")s] $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -z "$LOAD_PID" ] || kill "$LOAD_PID" 2>/dev/null || true
  [ -z "$WATCHDOG" ] || kill "$WATCHDOG" 2>/dev/null || true
  if [ "$rc" -ne 0 ] && [ "${STARTED:-0}" = 1 ]; then
    echo "== state at failure"
    compose ps || true
    for svc in orders-1 orders-2 inventory-1 inventory-2; do
      echo "-- $svc's sidecar: /fencing $(fencing_of "$svc" 2>&1)"
    done
    meshctl status 2>&1 || true
    for svc in orders-1-sidecar orders-2-sidecar inventory-1-sidecar inventory-2-sidecar controlplane; do
      echo "-- last log lines of $svc"
      compose logs --no-color --tail=25 "$svc" 2>&1 | grep -v 'xds snapshot applied\|configuration applied' | tail -n 15 || true
    done
  fi
  echo "== cleaning up"
  remove_helpers
  compose down -v --remove-orphans >/dev/null 2>&1 || echo "warning: compose down failed" >&2
  [ -z "$WORK" ] || rm -rf "$WORK"
  if [ "$rc" -eq 0 ]; then
    echo "== PASS in $(secs_since "$T_START")s"
    printf '   %s\n' "${RESULTS[@]}"
  else
    echo "== FAILED (exit $rc) after $(secs_since "$T_START")s" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT
trap 'echo "FAIL: over the time limit of ${TEST_LIMIT}s (or terminated)" >&2; exit 124' TERM

# The watchdog: TERM to this script once the time limit is reached.
main_pid=$$
(
  for ((i = 0; i < TEST_LIMIT; i++)); do sleep 1; done
  kill -TERM "$main_pid" 2>/dev/null
) &
WATCHDOG=$!

# record STEP START_MS: logs a passed step and its time.
record() {
  local line
  line=$(printf '%-58s %6ss' "$1" "$(secs_since "$2")")
  RESULTS+=("$line")
  log "ok: $line"
}

# until_ok TIMEOUT_S WHAT CMD...: runs CMD every second until it succeeds;
# fails the test naming WHAT after TIMEOUT_S seconds.
until_ok() {
  local timeout=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${timeout}s"
    sleep 1
  done
}

# --- probes ----------------------------------------------------------------

# probe_ns SERVICE URL: GET URL from inside the network namespace of the
# service's container (the sidecar's loopback admin API lives there).
probe_ns() {
  docker run --rm --label "$HELPER_LABEL" --network "container:$(cid "$1")" \
    -v "$WORK/meshprobe:/meshprobe:ro" --entrypoint /meshprobe "causeway/meshctl:$TAG" get "$2"
}

# probe_mesh URL: GET URL from a helper on mesh-a, where every container has
# an address until a cut (the sidecars' health ports).
probe_mesh() {
  docker run --rm --label "$HELPER_LABEL" --network "$MESH_A_NET" \
    -v "$WORK/meshprobe:/meshprobe:ro" --entrypoint /meshprobe "causeway/meshctl:$TAG" get "$1"
}

# http METHOD URL [BODY]: prints "STATUS BODY" (STATUS 000 when no answer).
http() {
  local out
  if [ -n "${3:-}" ]; then
    out=$(curl -sS -m 5 -X "$1" -H 'Content-Type: application/json' -d "$3" -w '\n%{http_code}' "$2" 2>&1) || true
  else
    out=$(curl -sS -m 5 -X "$1" -w '\n%{http_code}' "$2" 2>&1) || true
  fi
  echo "${out##*$'\n'} $(echo "${out%$'\n'*}" | tr -d '\n')"
}
read_via() { http GET "http://127.0.0.1:$1/orders/$SKU"; }
write_via() { http POST "http://127.0.0.1:$1/orders" "{\"sku\":\"$SKU\",\"quantity\":1}"; }

# inbound_from_orders SERVICE: the requests from orders that the service's
# sidecar answered 2xx (its mesh_requests_total).
inbound_from_orders() {
  local octet
  case "$1" in inventory-1) octet=21 ;; inventory-2) octet=22 ;; *) return 1 ;; esac
  probe_mesh "http://172.28.0.$octet:15020/metrics" 2>/dev/null |
    awk '/^mesh_requests_total\{/ && /direction="inbound"/ && /source_service="orders"/ && /status_class="2xx"/ {s += $NF} END {printf "%d\n", s}'
}

# lists_endpoint SERVICE ADDRESS: the service's sidecar has ADDRESS among
# its clusters' endpoints.
lists_endpoint() { probe_ns "$1" http://127.0.0.1:15000/clusters 2>/dev/null | grep -q "\"address\": \"$2\""; }
drops_endpoint() { probe_ns "$1" http://127.0.0.1:15000/clusters >"$WORK/clusters.json" 2>/dev/null && ! grep -q "\"address\": \"$2\"" "$WORK/clusters.json"; }

# fenced SERVICE / unfenced SERVICE: the service's sidecar's /fencing.
# While waiting, each view that does not match is logged.
fencing_of() { probe_ns "$1" http://127.0.0.1:15000/fencing 2>&1 | tr -s '\n ' ' '; }
fenced() {
  local v
  v=$(fencing_of "$1")
  [[ "$v" =~ \"fenced\":\ ?true ]] || { log "$1 /fencing: $v"; return 1; }
}
unfenced() {
  local v
  v=$(fencing_of "$1")
  [[ "$v" =~ \"fenced\":\ ?false ]] || { log "$1 /fencing: $v"; return 1; }
}

# quorum_of N: meshctl status shows the mesh domain's quorum group with N
# members.
quorum_of() { meshctl status 2>/dev/null | grep -Eq "^mesh +true .*yes \($1 members\)"; }

# --- preflight -------------------------------------------------------------

for tool in docker curl go; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
for img in sidecar controlplane meshctl examples; do
  docker image inspect "causeway/$img:$TAG" >/dev/null 2>&1 || fail "image causeway/$img:$TAG is missing; run make images"
done
if [ -n "$(compose ps -q 2>/dev/null)" ]; then
  # Not ours to remove: the demo, or another run, owns it.
  trap - EXIT
  echo "FAIL: compose project '$PROJECT' is already running (make demo-compose-down first)" >&2
  kill "$WATCHDOG" 2>/dev/null || true
  exit 1
fi
WORK=$(mktemp -d)
chmod 755 "$WORK"
log "building the test client (deploy/compose/meshprobe)"
(cd "$ROOT" && CGO_ENABLED=0 go build -o "$WORK/meshprobe" ./deploy/compose/meshprobe) || fail "building meshprobe"

# --- a. up, healthy, traffic crosses the sidecars -----------------------------

log "== a. bringing the mesh up (${COMPOSE_CMD[*]})"
t=$(now_ms)
STARTED=1
compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log"; fail "compose up"; }
wait_healthy 120 "${HEALTHCHECKED[@]}" "${APP_SERVICES[@]}" || fail "the mesh did not become healthy"
record "a. mesh up and healthy" "$t"

t=$(now_ms)
meshctl apply -f - <"$ROOT/deploy/compose/policies/fencing.yaml" || fail "applying the fencing policy"
until_ok 30 "every sidecar reporting to the fencing quorum (5 members)" quorum_of 5
record "a. fencing policy applied, quorum of 5" "$t"

t=$(now_ms)
before=$(( $(inbound_from_orders inventory-1) + $(inbound_from_orders inventory-2) ))
declare -A served=()
for i in $(seq 1 10); do
  out=$(read_via 8080)
  [[ "$out" == 200\ * ]] || fail "GET /orders/$SKU via 127.0.0.1:8080: $out"
  [[ "$out" =~ \"inventory_instance\":\"(inventory-[12])\" ]] || fail "GET answered without an inventory instance: $out"
  served[${BASH_REMATCH[1]}]=1
done
for i in 1 2; do
  out=$(write_via 8080)
  [[ "$out" == 200\ *\"reserved\":1* ]] || fail "POST /orders via 127.0.0.1:8080: $out"
done
after=$(( $(inbound_from_orders inventory-1) + $(inbound_from_orders inventory-2) ))
log "inventory sidecars' inbound 2xx from orders: $before -> $after; instances that answered: ${!served[*]}"
[ $((after - before)) -ge 12 ] || fail "the inventory sidecars counted $((after - before)) requests from orders, want >= 12"
record "a. 10 GET + 2 POST via :8080 crossed both sidecars" "$t"

# --- b. restart a sidecar under load ---------------------------------------------

log "== b. restarting inventory-1's sidecar under ${LOAD_RPS} rps for ${LOAD_SECONDS}s"
t=$(now_ms)
"$WORK/meshprobe" load --url "http://127.0.0.1:8080/orders/$SKU" --rps "$LOAD_RPS" \
  --duration "${LOAD_SECONDS}s" --timeout 3s --tally inventory_instance >"$WORK/load.txt" 2>&1 &
LOAD_PID=$!
sleep 4 # let the load settle before the restart
tr=$(now_ms)
docker restart -t 30 "$(cid inventory-1-sidecar)" >/dev/null || fail "docker restart inventory-1-sidecar"
log "inventory-1-sidecar restarted in $(secs_since "$tr")s (drain period 2s)"
wait_healthy 60 inventory-1-sidecar || fail "inventory-1-sidecar not healthy after its restart"
log "inventory-1-sidecar healthy again $(secs_since "$tr")s after the restart began"
load_rc=0
wait "$LOAD_PID" || load_rc=$?
LOAD_PID=""
sed 's/^/   /' "$WORK/load.txt"
[ "$load_rc" -eq 0 ] || fail "requests failed through 127.0.0.1:8080 while inventory-1's sidecar restarted (see above)"
until_ok 30 "orders-1's sidecar listing inventory-1 again" lists_endpoint orders-1 172.28.0.21:15006
record "b. sidecar restart under load: 0 failed requests" "$t"

# --- c. kill a container -----------------------------------------------------------

log "== c. killing inventory-2's app container (its sidecar loses the network with it)"
t=$(now_ms)
docker kill "$(cid inventory-2)" >/dev/null || fail "docker kill inventory-2"
until_ok 45 "orders-1's sidecar dropping inventory-2 (172.28.1.22:15006)" drops_endpoint orders-1 172.28.1.22:15006
record "c. killed inventory-2 dropped by orders-1's sidecar" "$t"

t=$(now_ms)
docker start "$(cid inventory-2)" >/dev/null || fail "docker start inventory-2"
# The sidecar's namespace died with the app's: it must start again in the new one.
docker restart -t 30 "$(cid inventory-2-sidecar)" >/dev/null || fail "docker restart inventory-2-sidecar"
wait_healthy 60 inventory-2 inventory-2-sidecar || fail "inventory-2 not healthy after its restart"
until_ok 45 "orders-1's sidecar listing inventory-2 again" lists_endpoint orders-1 172.28.1.22:15006
until_ok 30 "the fencing quorum back to 5 members" quorum_of 5
record "c. inventory-2 back: listed again, quorum of 5" "$t"

# --- d. partition ------------------------------------------------------------------------

log "== d. cutting side B (orders-2, inventory-2) off"
t=$(now_ms)
cut_side_b || fail "docker network disconnect"
log "cut made in $(secs_since "$t")s; the times below count from then"
t=$(now_ms)
until_ok 30 "orders-2's sidecar fenced" fenced orders-2
log "orders-2's sidecar: $(fencing_of orders-2)"
record "d. minority fenced (orders-2's sidecar /fencing)" "$t"

# wait_refused: a write through 8081 is refused for fencing.
wait_refused() {
  local out
  out=$(write_via 8081)
  [[ "$out" == 200\ * ]] && { log "write via :8081 still accepted: $out"; return 1; }
  [[ "$out" == *fenced* ]] || { log "write via :8081 failed, but not for fencing: $out"; return 1; }
}
until_ok 20 "a write via 127.0.0.1:8081 refused as fenced" wait_refused
log "write via :8081: $(write_via 8081)"
record "d. minority write via :8081 refused: fenced" "$t"

# reads_served PORT INSTANCE: five reads in a row through PORT answered 200,
# each by INSTANCE.
reads_served() {
  local i out
  for i in 1 2 3 4 5; do
    out=$(read_via "$1")
    [[ "$out" == 200\ *\"inventory_instance\":\"$2\"* ]] || { log "read via :$1: $out"; return 1; }
  done
}
until_ok 30 "reads via 127.0.0.1:8081 served by inventory-2" reads_served 8081 inventory-2
record "d. minority reads via :8081 served by inventory-2" "$t"

# writes_accepted PORT: three writes in a row through PORT accepted.
writes_accepted() {
  local i out
  for i in 1 2 3; do
    out=$(write_via "$1")
    [[ "$out" == 200\ * ]] || { log "write via :$1: $out"; return 1; }
  done
}
until_ok 30 "writes via 127.0.0.1:8080 accepted on the majority" writes_accepted 8080
record "d. majority writes via :8080 accepted" "$t"

until_ok 30 "the control plane's quorum group down to 3 members" quorum_of 3
meshctl status | sed -n '/^FENCING-DOMAIN/,$p' | sed 's/^/   /'
record "d. control plane: quorum group of 3" "$t"

log "== d. healing the cut"
t=$(now_ms)
heal_side_b || fail "docker network connect"
log "healed in $(secs_since "$t")s; the times below count from then"
t=$(now_ms)
until_ok 30 "writes via 127.0.0.1:8081 accepted again" writes_accepted 8081
until_ok 30 "orders-2's sidecar unfenced" unfenced orders-2
record "d. healed: writes via :8081 accepted, unfenced" "$t"
until_ok 30 "the fencing quorum back to 5 members" quorum_of 5
meshctl status | sed -n '/^FENCING-DOMAIN/,$p' | sed 's/^/   /'
record "d. control plane: quorum group of 5 again" "$t"
