# syntax=docker/dockerfile:1
# Confab's container image: built from source in the Rust image (which has the C compiler the
# bundled SQLite needs), run from a small Debian image as an unprivileged user. The binary is
# self-contained: the pages are compiled in, and TLS roots (for mongodb+srv://) are built in.
#
#   docker build -t confab .
#   docker run -p 8080:8080 -v confab-data:/var/lib/confab/data confab
#
# deploy/compose.yaml runs it with MongoDB, Redis and Caddy (README, "Deploying").

# Confab's rust-version (Cargo.toml); the runtime is the same Debian release, so the binary
# finds the C library it was linked against.
ARG RUST_VERSION=1.94
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The registry and the target directory are cache mounts, so a rebuild compiles only what
# changed; the binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package confab --bin confab \
    && cp target/release/confab /usr/local/bin/confab

FROM debian:${DEBIAN_RELEASE}-slim
# A user of its own, no login, no home but the state directory.
RUN groupadd --system --gid 10001 confab \
    && useradd --system --uid 10001 --gid confab --no-create-home \
        --home-dir /var/lib/confab --shell /usr/sbin/nologin confab \
    && mkdir -p /var/lib/confab/data \
    && chown -R confab:confab /var/lib/confab
COPY --from=build /usr/local/bin/confab /usr/local/bin/confab

# Numeric, so that an orchestrator can tell it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/confab
# Every interface of the container (127.0.0.1 would be unreachable from outside it); the
# SQLite database and the generated JWT key go to the volume. With MongoDB, only a generated
# key would be kept there (./data); give --jwt-secret to every instance instead.
ENV CONFAB_ADDR=0.0.0.0:8080 \
    CONFAB_DATABASE_URL=sqlite:///var/lib/confab/data/confab.db
VOLUME ["/var/lib/confab/data"]
EXPOSE 8080
# `confab healthcheck` asks /healthz on CONFAB_ADDR through loopback (the image has no curl).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["confab", "healthcheck"]
ENTRYPOINT ["confab"]
