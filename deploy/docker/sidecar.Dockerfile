# The sidecar image: one static binary (built on the host by build-images.sh,
# CGO_ENABLED=0) on an empty base, run as an unprivileged user.
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="causeway-sidecar" \
      org.opencontainers.image.description="Causeway service mesh: sidecar" \
      org.opencontainers.image.source="https://github.com/causeway-mesh/causeway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY rootfs/ /
# Its state directory (--data-dir), owned by the unprivileged user so that a
# volume mounted there starts with that owner.
COPY --chown=65532:65532 data/ /var/lib/causeway/
COPY bin/sidecar /usr/local/bin/sidecar
USER 65532:65532
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/sidecar", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sidecar"]
