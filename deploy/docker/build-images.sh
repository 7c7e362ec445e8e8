#!/usr/bin/env bash
# Builds Causeway's container images without pulling anything: static
# binaries are compiled on the host (CGO_ENABLED=0) and copied onto an empty
# base together with CA certificates and a passwd entry for the unprivileged
# user 65532. Usage: deploy/docker/build-images.sh [TAG]  (default: dev)
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=${1:-dev}
CTX=deploy/docker/build
rm -rf "$CTX"
mkdir -p "$CTX/bin" "$CTX/rootfs/etc/ssl/certs" "$CTX/rootfs/tmp" "$CTX/data"
chmod 1777 "$CTX/rootfs/tmp"

REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)

echo "== building static binaries ($VERSION)"
for pkg in ./cmd/sidecar ./cmd/controlplane ./cmd/meshctl ./examples/echo ./examples/orders ./examples/inventory; do
  CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "$CTX/bin/$(basename "$pkg")" "$pkg"
done

echo "== root filesystem"
cat > "$CTX/rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
mesh:x:65532:65532:causeway:/nonexistent:/sbin/nologin
PASSWD
cat > "$CTX/rootfs/etc/group" <<'GROUP'
root:x:0:
mesh:x:65532:
GROUP
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$CTX/rootfs/etc/ssl/certs/"
else
  echo "warning: /etc/ssl/certs/ca-certificates.crt not found; images carry no CA bundle" >&2
fi

for img in sidecar controlplane meshctl examples; do
  echo "== image causeway/$img:$TAG"
  docker build -q -t "causeway/$img:$TAG" -f "deploy/docker/$img.Dockerfile" \
    --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" --build-arg CREATED="$CREATED" \
    "$CTX" >/dev/null
done
docker images --filter=reference='causeway/*' --format '{{.Repository}}:{{.Tag}}\t{{.Size}}'
