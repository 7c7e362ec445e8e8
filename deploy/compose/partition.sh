#!/usr/bin/env bash
# Cuts the compose mesh in two, or heals it:
#   deploy/compose/partition.sh cut    side B (orders-2, inventory-2) loses side A
#   deploy/compose/partition.sh heal   every container gets its addresses back
# See the network layout in docker-compose.yml.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
case "${1:-}" in
  cut) cut_side_b && echo "cut: side B (orders-2, inventory-2) is cut off from side A (controlplane, orders-1, inventory-1, echo-1)" ;;
  heal) heal_side_b && echo "healed: both sides reach each other again" ;;
  *) echo "usage: $0 cut|heal" >&2; exit 2 ;;
esac
