# ingestd image: build in the Rust image, run on slim Debian, never as root.
#   docker build -t ingestd .
#   docker run --rm -e DATABASE_URL=postgres://... -v "$PWD/data:/data" ingestd
# The embedded PostgreSQL default is not available in this image (no server
# binaries): set DATABASE_URL (docker-compose.yml does).
# No BuildKit-only syntax: the file builds with the legacy builder too (CI's).

FROM rust:1.95-bookworm AS builder
WORKDIR /src
# Dependencies first, in a layer of their own: the manifest without its
# explicit targets ([[test]], [[bench]], ...) and stub sources. The layer is
# rebuilt only when Cargo.toml or Cargo.lock change, so a change to the
# sources compiles the crate alone.
COPY Cargo.toml Cargo.lock ./
RUN awk '/^\[\[/ { skip = 1; next } /^\[/ { skip = 0 } !skip' Cargo.toml > Cargo.deps.toml \
 && mv Cargo.deps.toml Cargo.toml \
 && mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked --bin ingestd \
 && rm -rf src target/release/.fingerprint/ingestd-* target/release/deps/ingestd-* \
      target/release/deps/libingestd-* target/release/ingestd*
# .dockerignore keeps target/, data/, logs and the docs out of this copy.
COPY . .
RUN cargo build --release --locked --bin ingestd \
 && cp target/release/ingestd /usr/local/bin/ingestd

FROM debian:bookworm-slim
# ca-certificates: TLS to a managed PostgreSQL; curl: the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ingestd \
 && useradd --system --uid 10001 --gid ingestd --home-dir /app --no-create-home ingestd \
 && mkdir -p /app /data/incoming /data/processed /data/bad_records \
 && chown -R ingestd:ingestd /data

COPY --from=builder /usr/local/bin/ingestd /usr/local/bin/ingestd
COPY deploy/ingestd/entrypoint.sh /usr/local/bin/ingestd-entrypoint
COPY config/ /etc/ingestd/
COPY migrations/ /app/migrations/

# Relative paths in the config resolve under /app; the data folders live under
# /data, one mount so that moving a file to processed/ stays a rename.
WORKDIR /app
ENV INGESTD_PATHS__INCOMING=/data/incoming \
    INGESTD_PATHS__PROCESSED=/data/processed \
    INGESTD_PATHS__BAD_RECORDS=/data/bad_records \
    INGESTD_HTTP__LISTEN=0.0.0.0:9187
VOLUME ["/data"]
EXPOSE 9187

# The entrypoint starts as root only to pick the user: the owner of /data
# (uid 10001, ingestd, when that is root), then runs ingestd as that user
# (see deploy/ingestd/entrypoint.sh). `docker run --user` skips it.
# The daemon drains on SIGTERM (Docker's default stop signal) within
# shutdown.drain_timeout_secs: give `docker stop -t` more than that.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9187/healthz || exit 1

ENTRYPOINT ["ingestd-entrypoint"]
CMD ["run", "--config", "/etc/ingestd/ingestd.toml"]
