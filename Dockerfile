# The comms-archiver image: the daemon alone, as an unprivileged user (uid and gid 10001),
# its state in the volume /var/lib/comms-archiver (the stage may be Azure instead).
#
# Where the public registries are reachable:
#   docker build -t comms-archiver .
# Where they are not, make the base image locally from Debian's packages and tag it so
# that `FROM debian:bookworm-slim` resolves without a pull, then give the binary built on
# the host instead of building it in a container (contrib/container/test.sh does both):
#   debootstrap --variant=minbase bookworm rootfs http://deb.debian.org/debian
#   tar -C rootfs -c . | docker import - debian:bookworm-slim
#   cargo build --release --locked --bin comms-archiver
#   DOCKER_BUILDKIT=1 docker build --build-arg BINARY=prebuilt -t comms-archiver .
# Run:
#   docker run -v /srv/comms-archiver/config.toml:/etc/comms-archiver/config.toml:ro \
#              -v comms-archiver-state:/var/lib/comms-archiver comms-archiver
# contrib/container/docker-compose.yml runs the demo for a trial.

# Where the binary comes from: `build` (compiled here, the default) or `prebuilt`
# (target/release/comms-archiver of the build context).
ARG BINARY=build

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the testkit) must be there to read the workspace; only the
# daemon is built.
COPY testkit ./testkit
RUN cargo build --release --locked --bin comms-archiver \
 && strip target/release/comms-archiver \
 && mkdir /out && cp target/release/comms-archiver /out/

FROM scratch AS prebuilt
COPY target/release/comms-archiver /out/comms-archiver

FROM ${BINARY} AS binary

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 comms-archiver \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/comms-archiver \
      --shell /usr/sbin/nologin comms-archiver \
 && mkdir -p /etc/comms-archiver /var/lib/comms-archiver \
 && chown 10001:10001 /var/lib/comms-archiver
COPY --from=binary /out/comms-archiver /usr/local/bin/comms-archiver
USER 10001:10001
WORKDIR /var/lib/comms-archiver
VOLUME ["/var/lib/comms-archiver"]
ENV COMMS_ARCHIVER_CONFIG=/etc/comms-archiver/config.toml
# The health endpoint on loopback inside the container, for HEALTHCHECK; override with
# telemetry.listen (and telemetry.allow_remote) to let Prometheus scrape from outside.
ENV COMMS_ARCHIVER__TELEMETRY__LISTEN=127.0.0.1:9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/comms-archiver", "healthcheck"]
# Exec form: comms-archiver is PID 1 and receives the SIGTERM of `docker stop` itself;
# `run` handles SIGTERM and SIGINT.
ENTRYPOINT ["/usr/local/bin/comms-archiver", "--log-format", "json"]
CMD ["run"]
