# The meshctl image: the operator's CLI, for use inside the compose network
# (docker run --rm --network causeway_mesh causeway/meshctl status).
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="causeway-meshctl" \
      org.opencontainers.image.description="Causeway service mesh: meshctl, the operator's CLI" \
      org.opencontainers.image.source="https://github.com/causeway-mesh/causeway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY rootfs/ /
COPY bin/meshctl /usr/local/bin/meshctl
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/meshctl"]
