# segnode container image: build in a Rust image, run in a small Debian one.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked && strip target/release/segnode

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/segnode --create-home segnode
COPY --from=build /src/target/release/segnode /usr/local/bin/segnode
COPY config/segnode.toml /etc/segnode/segnode.toml
USER segnode
WORKDIR /var/lib/segnode
ENV SEGNODE_DICOM__BIND=0.0.0.0 \
    SEGNODE_STORAGE__DIR=/var/lib/segnode/store \
    SEGNODE_DATABASE__URL=sqlite:///var/lib/segnode/segnode.db
EXPOSE 11112
ENTRYPOINT ["segnode", "--config", "/etc/segnode/segnode.toml"]
CMD ["serve"]
