#!/usr/bin/env bash
# make demo-compose: brings the Causeway compose mesh up (the images must
# exist: make images), waits until it is healthy, turns write fencing on,
# sends some traffic through the entry service, prints `meshctl status` and
# what to look at, and leaves the mesh running (make demo-compose-down).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

for img in sidecar controlplane meshctl examples; do
  if ! docker image inspect "causeway/$img:$TAG" >/dev/null 2>&1; then
    echo "error: image causeway/$img:$TAG is missing; run make images first" >&2
    exit 1
  fi
done

echo "== starting the mesh (${COMPOSE_CMD[*]} -p $PROJECT)"
t0=$(now_ms)
compose up -d
if ! wait_healthy 90 "${HEALTHCHECKED[@]}" "${APP_SERVICES[@]}"; then
  compose ps
  echo "error: the mesh did not become healthy; see: ${COMPOSE_CMD[*]} -p $PROJECT -f $COMPOSE_FILE logs" >&2
  exit 1
fi
echo "   healthy after $(secs_since "$t0")s"

echo "== applying the fencing policy (deploy/compose/policies/fencing.yaml)"
meshctl apply -f - <"$ROOT/deploy/compose/policies/fencing.yaml"

echo "== traffic through orders-1 (127.0.0.1:8080)"
ok=0
for i in $(seq 1 10); do
  if [ $((i % 3)) -eq 0 ]; then
    what="POST /orders"
    out=$(curl -sS -m 5 -X POST -H 'Content-Type: application/json' \
      -d '{"sku":"widget","quantity":1}' -w ' HTTP %{http_code}' http://127.0.0.1:8080/orders || true)
  else
    what="GET /orders/widget"
    out=$(curl -sS -m 5 -w ' HTTP %{http_code}' http://127.0.0.1:8080/orders/widget || true)
  fi
  case "$out" in *"HTTP 200") ok=$((ok + 1)) ;; esac
  printf '   %-18s %s\n' "$what" "$(echo "$out" | tr -d '\n')"
done
echo "   $ok of 10 answered 200"

# The fencing view appears once the sidecars have reported (every 2 s).
sleep 3
echo "== meshctl status"
meshctl status

cat <<EOF

== the mesh is running. What to look at:
  Entry service (orders-1):   curl http://127.0.0.1:8080/orders/widget
                              curl -X POST -d '{"sku":"widget","quantity":1}' http://127.0.0.1:8080/orders
  Minority entry (orders-2):  curl http://127.0.0.1:8081/orders/widget
  Control-plane API:          $CP_API_HOST/api/v1/... (bearer token in the
                              $CP_VOLUME volume, file api-token)
  meshctl (any command):      docker run --rm -i --network $EDGE_NET -v $CP_VOLUME:/var/lib/causeway:ro \\
                                causeway/meshctl:$TAG --server $CP_API_INNER --data-dir /var/lib/causeway status
                              ... trace (recent traces; trace ID for the causal timeline),
                              ... get fencingpolicy, ... proxy-config orders-1
  A sidecar's admin API:      docker exec has no shell in these images; its health port
                              serves /ready, /live, /metrics on the mesh network, e.g.
                              http://172.28.0.21:15020/metrics (inventory-1, from a Linux host)
  Cut the minority off (orders-2 + inventory-2) and watch it fence: writes via 8081
  refused, reads via 8081 still served by inventory-2 (network layout: docker-compose.yml):
      deploy/compose/partition.sh cut
      curl -X POST -d '{"sku":"widget","quantity":1}' http://127.0.0.1:8081/orders   # refused: fenced
      curl http://127.0.0.1:8081/orders/widget                                        # served
  Heal it (same addresses); fencing lifts within seconds:
      deploy/compose/partition.sh heal
  Logs:                       ${COMPOSE_CMD[*]} -p $PROJECT -f $COMPOSE_FILE logs -f orders-1-sidecar
  Stop and remove it all:     make demo-compose-down
EOF
