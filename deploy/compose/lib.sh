# Shared by demo.sh and test.sh (sourced, not run): the compose command, the
# project's names, and the waits. Every wait is bounded.
#
# Environment: CAUSEWAY_TAG (image tag, default dev), COMPOSE (override the
# detected compose command, e.g. COMPOSE="docker compose").

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
COMPOSE_FILE="$ROOT/deploy/compose/docker-compose.yml"
PROJECT=causeway
TAG=${CAUSEWAY_TAG:-dev}
# The two address networks (see docker-compose.yml): side A's addresses
# are on mesh-a, side B's on mesh-b.
MESH_A_NET=${PROJECT}_mesh-a
MESH_B_NET=${PROJECT}_mesh-b
EDGE_NET=${PROJECT}_edge
CP_VOLUME=${PROJECT}_controlplane-data
# The control plane's API inside the compose networks and on the host.
CP_API_INNER=http://controlplane:18080
CP_API_HOST=http://127.0.0.1:18080
# Every container a script starts itself (helpers, not compose services)
# carries this label, so that cleanup finds them all.
HELPER_LABEL=dev.causeway.compose-helper=$PROJECT

# Compose v2 (the docker plugin) when present, else docker-compose v1.
if [ -n "${COMPOSE:-}" ]; then
  read -r -a COMPOSE_CMD <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE_CMD=(docker-compose)
else
  echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi

# compose ARGS... runs compose on this project.
compose() {
  "${COMPOSE_CMD[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"
}

# The services, and those whose image carries a HEALTHCHECK.
APP_SERVICES=(orders-1 orders-2 inventory-1 inventory-2 echo-1)
HEALTHCHECKED=(controlplane orders-1-sidecar orders-2-sidecar inventory-1-sidecar inventory-2-sidecar echo-1-sidecar)

# now_ms prints the time in milliseconds.
now_ms() { date +%s%3N; }

# secs_since START_MS prints the seconds elapsed since START_MS ("12.3").
secs_since() {
  local d=$(( $(now_ms) - $1 ))
  printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100))
}

# cid SERVICE prints the id of the service's container (running or not).
cid() {
  local id
  id=$(compose ps -a -q "$1" 2>/dev/null | head -n1)
  if [ -z "$id" ]; then
    echo "error: no container for service $1" >&2
    return 1
  fi
  echo "$id"
}

# health_of CONTAINER prints its health (healthy, unhealthy, starting), or
# its state when it has no HEALTHCHECK (running, exited, ...).
health_of() {
  docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$1" 2>/dev/null || echo missing
}

# wait_healthy TIMEOUT_S SERVICE... waits until every service's container
# is healthy (or running, without a HEALTHCHECK); returns 1 on timeout,
# naming the laggards.
wait_healthy() {
  local timeout=$1; shift
  local deadline=$(( $(date +%s) + timeout )) svc pending
  while :; do
    pending=()
    for svc in "$@"; do
      local id st
      id=$(cid "$svc" 2>/dev/null) || { pending+=("$svc=missing"); continue; }
      st=$(health_of "$id")
      case "$st" in healthy|running) ;; *) pending+=("$svc=$st") ;; esac
    done
    [ ${#pending[@]} -eq 0 ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "not healthy after ${timeout}s: ${pending[*]}" >&2
      return 1
    fi
    sleep 1
  done
}

# meshctl ARGS... runs meshctl from its image on the edge network, with the
# control plane's token read from its data volume (read-only). Standard
# input is passed through (apply -f -).
meshctl() {
  docker run --rm -i --label "$HELPER_LABEL" --network "$EDGE_NET" \
    -v "$CP_VOLUME:/var/lib/causeway:ro" \
    "causeway/meshctl:$TAG" --server "$CP_API_INNER" --data-dir /var/lib/causeway --timeout 10s "$@"
}

# remove_helpers removes every helper container the scripts started.
remove_helpers() {
  local ids
  ids=$(docker ps -aq --filter "label=$HELPER_LABEL")
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
}

# The two sides of the usual cut, as "SERVICE LAST-ADDRESS-BYTE".
SIDE_A=("controlplane 2" "orders-1 11" "inventory-1 21" "echo-1 31")
SIDE_B=("orders-2 12" "inventory-2 22")

# cut_side_b cuts side B (orders-2, inventory-2) off the rest: side B's
# containers leave mesh-a and side A's leave mesh-b, so each side keeps
# reaching its own members' addresses and none of the other's. The six
# disconnects run at once: while only some are done, the cut is one-way
# (side A still reaches side B), and gossip carries side A's suspicions
# into side B, where they can get side B's members to mark each other
# failed.
cut_side_b() {
  local e pids=() ok=0 pid
  for e in "${SIDE_B[@]}"; do
    docker network disconnect "$MESH_A_NET" "$(cid "${e% *}")" & pids+=($!)
  done
  for e in "${SIDE_A[@]}"; do
    docker network disconnect "$MESH_B_NET" "$(cid "${e% *}")" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || ok=1; done
  return "$ok"
}

# heal_side_b undoes cut_side_b, giving every container back its address
# (all at once, like the cut). Containers already connected are left alone.
heal_side_b() {
  local e id pids=() ok=0 pid
  for e in "${SIDE_B[@]}"; do
    id=$(cid "${e% *}") || return 1
    on_network "$id" "$MESH_A_NET" || { docker network connect --ip "172.28.0.${e#* }" "$MESH_A_NET" "$id" & pids+=($!); }
  done
  for e in "${SIDE_A[@]}"; do
    id=$(cid "${e% *}") || return 1
    on_network "$id" "$MESH_B_NET" || { docker network connect --ip "172.28.1.${e#* }" "$MESH_B_NET" "$id" & pids+=($!); }
  done
  for pid in "${pids[@]}"; do wait "$pid" || ok=1; done
  return "$ok"
}

# on_network CONTAINER NETWORK succeeds when the container is attached to it.
on_network() {
  docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$1" 2>/dev/null | tr ' ' '\n' | grep -qx "$2"
}
