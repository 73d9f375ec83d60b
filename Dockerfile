# lakectl in a container: a release build, then a slim runtime image with the example pipeline.
#   docker build -t lakectl .        (docker-compose.yml builds it for the `pipeline` profile)
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p jobs --bin lakectl \
 && cp target/release/lakectl /usr/local/bin/lakectl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/lakectl /usr/local/bin/lakectl
WORKDIR /app
COPY pipelines pipelines
COPY data data
ENV LAKECTL_PIPELINE=/app/pipelines/books.toml
ENTRYPOINT ["lakectl"]
CMD ["--help"]
