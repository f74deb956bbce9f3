# statsapi production image: gunicorn serving statsapi.wsgi:app on port 8000.
#
#   docker build -t statsapi .
#   docker run --read-only --tmpfs /tmp -p 8000:8000 --env-file .env statsapi
#
# Two stages. "build" resolves the Python dependencies into a virtualenv and fetches the
# docs assets (hash-pinned); "runtime" gets only that virtualenv and the application files:
# no pip cache, no build tools, no compilers (every dependency ships a binary wheel).
# The runtime runs as an unprivileged user, keeps its code read-only and writes only to
# /tmp (a tmpfs in compose/Kubernetes), so it works with a read-only root filesystem.
#
# Base image: pinned by tag (python 3.11 on Debian 12 "bookworm", slim). Pin by digest in
# your registry mirror (`FROM python:3.11-slim-bookworm@sha256:...`); Dependabot's
# docker ecosystem keeps the tag (and a digest, once added) current.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Dependencies first: this layer is rebuilt only when the lock changes. Every package,
# transitive ones included, is pinned with its hashes (pip-compile, see README).
COPY requirements/lock.txt ./requirements/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: --require-hashes -r requirements/lock.txt

# The application, plus ReDoc's bundle (hash-pinned, see requirements/docs-assets.txt).
COPY statsapi ./statsapi
COPY scripts/fetch_docs_assets.py ./scripts/
COPY requirements/docs-assets.txt ./requirements/
# The bundle then moves into the virtualenv (statsapi looks there too): compose.dev.yaml
# mounts the source over /app/statsapi, and must not hide it.
RUN /opt/venv/bin/python scripts/fetch_docs_assets.py \
 && mkdir -p /opt/venv/share/statsapi \
 && mv statsapi/static/vendor /opt/venv/share/statsapi/vendor \
 && /opt/venv/bin/python -m compileall -q statsapi /opt/venv/lib


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="statsapi" \
      org.opencontainers.image.description="Secured HTTP API for financial transaction records and their statistics" \
      org.opencontainers.image.source="https://github.com/statsapi/statsapi" \
      org.opencontainers.image.licenses="Proprietary"

# statsapi is imported from /app with migrations/ beside it; STATSAPI_MIGRATIONS_DIR
# names them explicitly (production refuses to start without them). The image defaults to
# production settings: it refuses to start without DATABASE_URL, REDIS_URL and a strong
# JWT_SECRET_KEY.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    STATSAPI_MIGRATIONS_DIR=/app/migrations \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATSAPI_ENV=production \
    STATSAPI_INSTANCE_PATH=/tmp/statsapi \
    PORT=8000

RUN groupadd --system --gid 10001 statsapi \
 && useradd --system --no-log-init --uid 10001 --gid statsapi \
            --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin statsapi

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --from=build /src/statsapi ./statsapi
COPY migrations ./migrations
COPY alembic.ini gunicorn.conf.py ./

USER 10001:10001
EXPOSE 8000

# Liveness without curl: /health touches neither the database nor Redis.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2).status == 200 else 1)"]

# gunicorn.conf.py: gthread workers, JSON logs, multiprocess metrics under /tmp.
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py", "statsapi.wsgi:app"]
