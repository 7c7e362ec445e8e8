# The example services (echo, orders, inventory) in one image; the compose
# file picks one with `entrypoint`. Their sidecars carry the health checks.
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="causeway-examples" \
      org.opencontainers.image.description="Causeway service mesh: example services" \
      org.opencontainers.image.source="https://github.com/causeway-mesh/causeway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY rootfs/ /
COPY bin/echo bin/orders bin/inventory /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/echo"]
