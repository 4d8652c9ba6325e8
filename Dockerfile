# oxiscale: one image, one process, one volume.
#
#   docker build -t oxiscale .
#   docker run -d --name oxiscale -p 443:8080 -p 3478:3478/udp -v oxiscale:/var/lib/oxiscale \
#     -v /etc/oxiscale/tls:/etc/oxiscale/tls:ro \
#     -e OXISCALE_SERVER_URL=https://vpn.example.org \
#     -e OXISCALE_TLS_CERT_PATH=/etc/oxiscale/tls/fullchain.pem \
#     -e OXISCALE_TLS_KEY_PATH=/etc/oxiscale/tls/privkey.pem oxiscale
#   docker exec oxiscale oxiscale users create alice
#
# Or plain HTTP behind a reverse proxy that terminates TLS: deploy/ has compose files for both.
# Settings are OXISCALE_* variables or a config.yaml mounted at /etc/oxiscale/config.yaml.
#
# Without a registry (podman/buildah, base image built from Debian's packages, binary built on
# the host): scripts/image.sh builds the `runtime` stage below with
#   --build-arg BASE_IMAGE=<local base> --build-context build=<dir with out/oxiscale, out/site>
# so this file stays the one description of the image.

ARG BASE_IMAGE=debian:bookworm-slim

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
COPY . .
# The console's browser half (WASM + CSS) into target/site, then the server: the release
# profile strips the binary (Cargo.toml [profile.release]).
RUN scripts/build-site.sh --release && cargo build --release -p server \
    && mkdir -p /out && cp target/release/oxiscale /out/oxiscale && cp -R target/site /out/site

FROM ${BASE_IMAGE} AS runtime
# ca-certificates only when the base lacks them (debian:bookworm-slim does; scripts/image.sh's
# base has them, and its build has no network). A fixed UID so bind-mounted data dirs can be
# chowned on the host: chown -R 10001:10001 /srv/oxiscale.
RUN set -eu; \
    if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update && apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 oxiscale; \
    useradd --system --uid 10001 --gid oxiscale --home-dir /var/lib/oxiscale --no-create-home \
      --shell /usr/sbin/nologin oxiscale; \
    mkdir -p /var/lib/oxiscale /etc/oxiscale; \
    chown oxiscale:oxiscale /var/lib/oxiscale; \
    chmod 0750 /var/lib/oxiscale
COPY --from=build /out/oxiscale /usr/local/bin/oxiscale
COPY --from=build /out/site /usr/local/share/oxiscale/site
# Inside the container: listen on every address, port 8080 (publish it as 443 or put a proxy
# in front); the data (SQLite database, keys, the CLI's admin socket) on the volume.
ENV OXISCALE_DATA_DIR=/var/lib/oxiscale \
    OXISCALE_LISTEN_ADDR=0.0.0.0:8080 \
    OXISCALE_CONSOLE_SITE_ROOT=/usr/local/share/oxiscale/site
USER oxiscale
WORKDIR /var/lib/oxiscale
VOLUME /var/lib/oxiscale
# 8080: HTTP or HTTPS (control, DERP, REST API, console); 3478/udp: the embedded DERP's STUN.
EXPOSE 8080 3478/udp
# `oxiscale health` asks the running server over its admin socket in the data dir (no TLS, no
# port, no curl needed) and exits 1 unless the server answers and reaches its database.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["oxiscale", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["oxiscale"]
CMD ["serve"]
