# One image for the whole stack: both binaries (handlers, gateway) and Debian's
# nats-server, running as the unprivileged user `mesh`.
#
#   docker build -t nats-mesh .                  builds the binaries from source
#   docker run --rm nats-mesh gateway --help
#
# Without a registry (air-gapped machines, CI), scripts/images builds a Debian base image
# from Debian's packages and this file's other path, which takes binaries built on the
# host instead of compiling in a Rust image (scripts/images stages them in target/image/):
#
#   cargo build --release -p handlers -p gateway
#   mkdir -p target/image && cp target/release/handlers target/release/gateway target/image/
#   docker build --build-arg BINARIES=host --build-arg BUILDER=<base> \
#                --build-arg BASE=<base> --build-arg APT_PACKAGES= -t nats-mesh .
#
# Both paths work with the classic builder and with BuildKit.

# Where the binaries come from: `source` (compiled here) or `host` (target/release/).
ARG BINARIES=source
# The image that compiles (any image with a shell will do for BINARIES=host).
ARG BUILDER=rust:1-bookworm
# The runtime image.
ARG BASE=debian:bookworm-slim

FROM ${BUILDER} AS build
ARG BINARIES
WORKDIR /src
# 1. Dependencies only, cached until a manifest or the lock file changes: the
#    workspace's manifests with stub sources.
COPY Cargo.toml Cargo.lock ./
COPY schemas/Cargo.toml schemas/
COPY core/Cargo.toml core/
COPY wasm/Cargo.toml wasm/
COPY handlers/Cargo.toml handlers/
COPY gateway/Cargo.toml gateway/
COPY testsupport/Cargo.toml testsupport/
COPY checks/Cargo.toml checks/
COPY bench/Cargo.toml bench/
RUN if [ "$BINARIES" = source ]; then \
      for c in schemas core wasm handlers gateway testsupport checks bench; do mkdir -p $c/src/bin && echo '' > $c/src/lib.rs; done \
      && echo 'fn main() {}' > handlers/src/bin/handlers.rs \
      && echo 'fn main() {}' > gateway/src/bin/gateway.rs \
      && echo 'fn main() {}' > bench/src/main.rs \
      && cargo build --release --locked -p handlers -p gateway \
      && rm -rf schemas/src core/src wasm/src handlers/src gateway/src testsupport/src checks/src bench/src; \
    fi
# 2. The sources (and, for BINARIES=host, the host's binaries staged in target/image/).
COPY . .
RUN mkdir -p /out \
 && if [ "$BINARIES" = host ]; then \
      cp target/image/handlers target/image/gateway /out/; \
    else \
      touch schemas/src/lib.rs core/src/lib.rs wasm/src/lib.rs handlers/src/lib.rs gateway/src/lib.rs \
      && cargo build --release --locked -p handlers -p gateway --bins \
      && strip target/release/handlers target/release/gateway \
      && cp target/release/handlers target/release/gateway /out/; \
    fi

FROM ${BASE}
# Packages the runtime needs; scripts/images passes none (its base has them already).
ARG APT_PACKAGES="ca-certificates nats-server"
RUN if [ -n "$APT_PACKAGES" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $APT_PACKAGES \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --system --uid 10001 --no-create-home mesh \
 && mkdir -p /data \
 && chown mesh /data
COPY --from=build /out/handlers /out/gateway /usr/local/bin/
COPY topology/ /etc/nats-mesh/
COPY deploy/nats/nats-server.conf /etc/nats-mesh/
COPY examples/ /usr/share/nats-mesh/examples/
USER mesh
ENV MESH_TOPOLOGY=/etc/nats-mesh/seed.toml MESH_GATEWAY_LISTEN=0.0.0.0:8080 PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
EXPOSE 8080 4222 8222
CMD ["gateway"]
