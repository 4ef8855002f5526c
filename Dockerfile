# syntax=docker/dockerfile:1.7
#
# Colloquy images, one multi-stage file with a target per service:
#
#   docker build --target chat-api        -t ghcr.io/colloquy-dev/chat-api:dev .
#   docker build --target chat-controller -t ghcr.io/colloquy-dev/chat-controller:dev .
#
# Both binaries are the ones `cargo build --release` produces in CI. The runtime is
# distroless `cc` (glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager) running as the `nonroot` user 65532, the uid the controller and the
# chart set in their pod security contexts. The chat API image also runs the
# database migrations: the controller's migration Job starts it with `migrate`
# instead of `serve` (the SQL is compiled into the binary).

# Toolchain of the build stage; the builder's Debian release matches the runtime's
# (bookworm = debian12) so the binaries link against the same glibc.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG DISTROLESS_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Where the runtime stages take the binaries from (/out/chat-api, /out/chat-controller): the
# `builder` stage below by default. The test node's image build (scripts/images.sh) passes an
# image holding the binaries CI already built, so the runtime stages are tested without a
# second compile.
ARG BINARIES=builder
# The newest migration in migrations/ (the chat API image's schema version). The
# controller reads it from the image's label to name the migration Job, so a
# new image with new migrations under the same tag migrates again. A test keeps
# this default equal to migrations/ (services/chat-controller/tests/crd_manifest.rs).
ARG MIGRATIONS_VERSION=30

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
ENV CARGO_TERM_COLOR=never \
    CARGO_NET_RETRY=5 \
    CARGO_INCREMENTAL=0
# Only what the workspace build reads (see .dockerignore): manifests, lockfile,
# crate sources and the SQL migrations embedded by `sqlx::migrate!`.
COPY Cargo.toml Cargo.lock ./
COPY services/ services/
COPY migrations/ migrations/
# BuildKit caches keep the registry and the target dir between builds, so a code
# change recompiles only the workspace crates (the Tilt dev loop relies on this).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin chat-api --bin chat-controller \
    && mkdir -p /out \
    && cp target/release/chat-api target/release/chat-controller /out/

FROM ${BINARIES} AS binaries

# ---- chat API (serve, and migrate for the migration Job) --------------------
FROM ${DISTROLESS_IMAGE} AS chat-api
ARG MIGRATIONS_VERSION
LABEL org.opencontainers.image.title="chat-api" \
      dev.colloquy.migrations-version="${MIGRATIONS_VERSION}" \
      org.opencontainers.image.description="Colloquy chat API: conversations on PostgreSQL, answers from an LLM provider" \
      org.opencontainers.image.source="https://github.com/colloquy-dev/colloquy" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/chat-api /usr/local/bin/chat-api
USER 65532:65532
# API port, metrics port (colloquy_contract::defaults).
EXPOSE 8000 9090
ENTRYPOINT ["/usr/local/bin/chat-api"]
CMD ["serve"]

# ---- chat-controller ----------------------------------------------------------
FROM ${DISTROLESS_IMAGE} AS chat-controller
LABEL org.opencontainers.image.title="chat-controller" \
      org.opencontainers.image.description="Colloquy controller: reconciles ChatBackend resources into running chat APIs" \
      org.opencontainers.image.source="https://github.com/colloquy-dev/colloquy" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/chat-controller /usr/local/bin/chat-controller
USER 65532:65532
# /healthz, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chat-controller"]
