# Prometheus from Debian's package, for the compose profile `metrics`. scripts/images
# makes the same image without a registry (debootstrap); with a registry,
# `docker compose --profile metrics up --build` builds it from this file.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus \
 && rm -rf /var/lib/apt/lists/*
USER nobody
CMD ["prometheus", "--config.file=/etc/nats-mesh/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus", "--web.listen-address=:9090"]
