# quire, CPU image: the one binary, with ONNX Runtime (CPU build) and PDFium provisioned while
# the image is built, so that containers need no network (`docker run --network none`).
#
#   docker build -t quire:cpu .
#   docker run --rm --network none -v "$PWD/samples:/samples:ro" -v "$PWD/out:/out" quire:cpu \
#       run /samples/invoice.pdf --model /samples/models/tiny-gemma4 \
#       --schema /samples/schemas/invoice.schema.json --budget 70 --out /out
#
# deploy/docker-check.sh builds it and runs the README's main job this way.

FROM rust:1.92-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin quire

# `quire setup` fetches the pinned wheels with pip and checks every file against its sha256.
FROM python:3.11-slim-bookworm AS runtimes
COPY --from=build /src/target/release/quire /usr/local/bin/quire
ENV QUIRE_CACHE_DIR=/opt/quire/cache
RUN quire setup && quire --offline setup --check

FROM debian:bookworm-slim
COPY --from=build /src/target/release/quire /usr/local/bin/quire
COPY --from=runtimes /opt/quire/cache /opt/quire/cache
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin quire
# The cache is read-only for the service user; nothing is downloaded at run time.
ENV QUIRE_CACHE_DIR=/opt/quire/cache \
    QUIRE_OFFLINE=1
# Numeric, so that Kubernetes can check runAsNonRoot.
USER 10001
ENTRYPOINT ["/usr/local/bin/quire"]
CMD ["--help"]
