# syntax=docker/dockerfile:1
# segnode container image: build in the Rust image, run in a small Debian one (same Debian release, so the
# same glibc). The binary links glibc and libstdc++ (CharLS): no TLS (the PostgreSQL connection is plain, inside the compose
# network), hence no OpenSSL or ca-certificates in the runtime image.

FROM rust:1-bookworm AS build
# cmake builds CharLS, the JPEG-LS codec dicom-rs links (feature charls)
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
# the documented configuration is compiled in as the defaults (src/config.rs: include_str!)
COPY config ./config
# The registry and the target folder are build caches (BuildKit): a rebuild after a source change only
# compiles the workspace crates that changed. The cached target is not part of the layer, so the binary is copied out here.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p segnode \
    && install -D -m 0755 target/release/segnode /out/segnode \
    && strip /out/segnode

FROM debian:bookworm-slim
RUN useradd --system --user-group --home-dir /var/lib/segnode --create-home segnode
COPY --from=build /out/segnode /usr/local/bin/segnode
# The documented defaults; a deployment mounts its own file here (docker-compose.yml:
# deploy/compose/segnode.toml). Relative paths in it (data/store, data/segnode.db, data/outbox) resolve
# under the working directory, /var/lib/segnode: mount a volume there.
COPY config/segnode.toml /etc/segnode/segnode.toml
USER segnode
WORKDIR /var/lib/segnode
# Inside a container the listener must not be bound to 127.0.0.1. (Only this key is set here: the
# environment overrides every configuration file, so storage and database paths are left to the file.)
ENV SEGNODE_DICOM__BIND=0.0.0.0
EXPOSE 11112
ENTRYPOINT ["segnode", "--config", "/etc/segnode/segnode.toml"]
CMD ["serve"]
