# astra-bus image: build with the Rust toolchain, run in a slim Debian as a non-root user.
#   docker build -t astra-bus .
#   docker run --rm astra-bus check          (setup/docker-compose.yml runs the whole stack)
FROM rust:1.90-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin astra-bus

FROM debian:bookworm-slim
# ca-certificates: rediss:// to a server with a public certificate; curl: the HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin astra
COPY --from=build /src/target/release/astra-bus /usr/local/bin/astra-bus
COPY streams.toml /etc/astra-bus/streams.toml
COPY consumer-groups /etc/astra-bus/consumer-groups
# The HTTP port listens on loopback unless ASTRA_HTTP_LISTEN says otherwise; listening
# beyond it needs edge auth (setup/docker-compose.yml sets both).
ENV ASTRA_CONFIG_DIR=/etc/astra-bus
USER astra
EXPOSE 8000
# SIGTERM (docker stop) drains in-flight work and exits 0 within daemon.shutdown_deadline
# (10 s); give `docker stop -t` / stop_grace_period more than that.
STOPSIGNAL SIGTERM
# /ready: 200 once Redis answers and the groups are declared, else 503.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8000/ready || exit 1
ENTRYPOINT ["astra-bus"]
CMD ["run"]
