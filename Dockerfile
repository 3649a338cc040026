# syntax=docker/dockerfile:1
# Builds both binaries (handlers, gateway) into one small non-root image.
#   docker build -t nats-mesh .
#   docker run --rm nats-mesh gateway --help

FROM rust:1-bookworm AS build
WORKDIR /src
# 1. Dependencies only, cached until a manifest or the lock file changes: the
#    workspace's manifests with stub sources.
COPY Cargo.toml Cargo.lock ./
COPY schemas/Cargo.toml schemas/
COPY core/Cargo.toml core/
COPY handlers/Cargo.toml handlers/
COPY gateway/Cargo.toml gateway/
COPY testsupport/Cargo.toml testsupport/
COPY checks/Cargo.toml checks/
COPY bench/Cargo.toml bench/
RUN for c in schemas core handlers gateway testsupport checks bench; do mkdir -p $c/src/bin && echo '' > $c/src/lib.rs; done \
 && echo 'fn main() {}' > handlers/src/bin/handlers.rs \
 && echo 'fn main() {}' > gateway/src/bin/gateway.rs \
 && echo 'fn main() {}' > bench/src/main.rs \
 && cargo build --release --locked -p handlers -p gateway \
 && rm -rf schemas/src core/src handlers/src gateway/src testsupport/src checks/src bench/src
# 2. The sources.
COPY . .
RUN touch schemas/src/lib.rs core/src/lib.rs handlers/src/lib.rs gateway/src/lib.rs \
 && cargo build --release --locked -p handlers -p gateway --bins \
 && strip target/release/handlers target/release/gateway

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home mesh
COPY --from=build /src/target/release/handlers /src/target/release/gateway /usr/local/bin/
COPY topology/ /etc/nats-mesh/
USER mesh
ENV MESH_TOPOLOGY=/etc/nats-mesh/seed.toml GATEWAY_LISTEN=0.0.0.0:8080
EXPOSE 8080
CMD ["gateway"]
