# Build (where a Docker engine runs): docker build -t comms-archiver .
# Run:   docker run -v /srv/comms-archiver/config.toml:/etc/comms-archiver/config.toml:ro \
#                   -v comms-archiver-state:/var/lib/comms-archiver comms-archiver
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The workspace's other member (the testkit) must be there to read the workspace; only the
# daemon is built.
COPY testkit ./testkit
RUN cargo build --release --locked --bin comms-archiver && strip target/release/comms-archiver

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/comms-archiver --shell /usr/sbin/nologin comms-archiver \
 && mkdir -p /etc/comms-archiver /var/lib/comms-archiver \
 && chown comms-archiver:comms-archiver /var/lib/comms-archiver
COPY --from=build /src/target/release/comms-archiver /usr/local/bin/comms-archiver
USER comms-archiver
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
