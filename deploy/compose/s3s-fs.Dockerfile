# s3s-fs, an S3-compatible server over a directory (the one the test suite uses), for the
# compose cluster's archive. Base images are build arguments as in ../../Dockerfile;
# `--target prebuilt` takes an s3s-fs binary from the build context instead of compiling.
ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
RUN cargo install s3s-fs --version 0.14.1 --features binary --locked --root /opt/s3s-fs

FROM ${RUNTIME_IMAGE} AS base
RUN groupadd --gid 10002 s3 \
    && useradd --no-create-home --uid 10002 --gid 10002 --home-dir /data --shell /usr/sbin/nologin s3 \
    && install -d -o s3 -g s3 /data
VOLUME /data
USER s3
EXPOSE 8014
# s3s-fs stops on SIGINT (it ignores SIGTERM).
STOPSIGNAL SIGINT
# The bucket is a directory; streamcdn needs it to exist (S3_BUCKET). Credentials:
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
CMD ["sh", "-c", "mkdir -p \"/data/${S3_BUCKET:-streamcdn-archive}\" && exec s3s-fs --host 0.0.0.0 --port 8014 --access-key \"$AWS_ACCESS_KEY_ID\" --secret-key \"$AWS_SECRET_ACCESS_KEY\" /data"]

FROM base AS prebuilt
COPY s3s-fs /usr/local/bin/s3s-fs

FROM base AS runtime
COPY --from=builder /opt/s3s-fs/bin/s3s-fs /usr/local/bin/s3s-fs
