# oxiscale: one image, one process. Build: docker build -t oxiscale .
# Run:   docker run -d -p 443:8080 -p 3478:3478/udp -v oxiscale:/var/lib/oxiscale \
#          -e OXISCALE_SERVER_URL=https://vpn.example.org oxiscale
# (Put TLS in front, or let clients reach http:// on a private network.)

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
COPY . .
# The console's browser half (WASM + CSS) into target/site, then the server.
RUN scripts/build-site.sh --release && cargo build --release -p server

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/oxiscale --create-home oxiscale
COPY --from=build /src/target/release/oxiscale /usr/local/bin/oxiscale
COPY --from=build /src/target/site /usr/local/share/oxiscale/site
ENV OXISCALE_DATA_DIR=/var/lib/oxiscale \
    OXISCALE_LISTEN_ADDR=0.0.0.0:8080 \
    OXISCALE_SITE_ROOT=/usr/local/share/oxiscale/site
USER oxiscale
VOLUME /var/lib/oxiscale
EXPOSE 8080 3478/udp
STOPSIGNAL SIGTERM
ENTRYPOINT ["oxiscale"]
CMD ["serve"]
