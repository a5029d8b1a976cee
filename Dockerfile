# streamcdn container image: one `streamcdn` binary, every role.
#
#   docker build -t streamcdn .                    # compiles the release binary (stage builder)
#   docker run --rm -p 1935:1935 -p 8080:8080 -p 127.0.0.1:8081:8081 streamcdn
#                                                  # `streamcdn up`: prints the stream key
#   docker run ... streamcdn ingest --config /etc/streamcdn/ingest.toml   # any role
#
# From a binary built outside (no compiler in the image build; it must be built for a
# glibc no newer than the runtime image's):
#
#   cargo build --release -p streamcdn
#   docker build --target runtime-prebuilt -t streamcdn .
#   (another binary: --build-arg STREAMCDN_BINARY=<path inside the build context>)
#
# Base images are build arguments, for a registry mirror or a locally made base
# (scripts/container-smoke.sh bootstraps Debian with debootstrap and imports it):
#   --build-arg BUILDER_IMAGE=rust:1-bookworm --build-arg RUNTIME_IMAGE=debian:bookworm-slim
# The runtime image needs glibc and apt (for ca-certificates: S3 over HTTPS).

ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the registry and the target directory between builds; the
# binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p streamcdn \
    && cp target/release/streamcdn /usr/local/bin/streamcdn

FROM ${RUNTIME_IMAGE} AS base
# ca-certificates: the roots S3 over HTTPS is checked against (rustls reads the system's).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 streamcdn \
    && useradd --no-create-home --uid 10001 --gid 10001 --home-dir /var/lib/streamcdn \
       --shell /usr/sbin/nologin streamcdn \
    && install -d -o streamcdn -g streamcdn -m 0750 /var/lib/streamcdn \
    && install -d -m 0755 /etc/streamcdn
COPY deploy/container/up.toml /etc/streamcdn/up.toml
# State: recordings, the edge's disk cache, generated certificates, the demo provider and
# the admin token (`up`: /var/lib/streamcdn/data). A named volume takes this directory's
# owner; a host directory must be writable by uid 10001.
VOLUME /var/lib/streamcdn
WORKDIR /var/lib/streamcdn
USER streamcdn
# RTMP, RTMPS, SRT, HTTP playback, HTTPS playback, admin API, router HTTP, router DNS; a
# role's configuration decides which it listens on.
EXPOSE 1935 1936 8890/udp 8080 8443 8081 8082 5353/tcp 5353/udp
ENTRYPOINT ["/usr/local/bin/streamcdn"]
CMD ["up", "--config", "/etc/streamcdn/up.toml"]

# The binary from the build context (default: a `cargo build --release` of the repository).
FROM base AS runtime-prebuilt
ARG STREAMCDN_BINARY=target/release/streamcdn
COPY ${STREAMCDN_BINARY} /usr/local/bin/streamcdn

# The default target: the binary compiled in the builder stage.
FROM base AS runtime
COPY --from=builder /usr/local/bin/streamcdn /usr/local/bin/streamcdn
