#!/usr/bin/env bash
# Build the real image from the repo's Dockerfile without a Docker engine, then run it the
# way production does (read-only root filesystem, tmpfs /tmp, non-root, no capabilities)
# against this machine's PostgreSQL and Redis, until /health and /ready answer.
#
#   tests/e2e/image_smoke.sh            # ~2-3 minutes; needs network to Debian and PyPI
#
# Not part of `make test` (it downloads a Debian base and every wheel, so its time
# depends on the network). Needs: apt-get install podman buildah debootstrap runc
#
# The base image is made here, not pulled: debootstrap Debian 12 (bookworm, whose Python
# is 3.11) and import it under the name the Dockerfile asks for,
# python:3.11-slim-bookworm, in a private image store (vfs, under a temp dir), so the
# machine's own container storage is never touched. If this machine reaches the internet
# through a TLS-inspecting proxy, its CA bundle is added to that local base only.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
for tool in podman buildah debootstrap runc psql redis-cli; do
  command -v "$tool" >/dev/null || { echo "image_smoke: needs $tool (apt-get install podman buildah debootstrap runc)"; exit 2; }
done

work=$(mktemp -d /tmp/statsapi-image-smoke.XXXXXX)
db="statsapi_image_smoke_$$"
prefix="statsapi-image-smoke-$$:"
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
run_opts=(--cgroup-manager cgroupfs --events-backend none --runtime runc)
container=""

cleanup() {
  if [ -n "$container" ]; then
    podman "${store[@]}" "${run_opts[@]}" rm -f "$container" >/dev/null 2>&1 || true
  fi
  psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -h 127.0.0.1 --scan --pattern "${prefix}*" | xargs -r redis-cli -h 127.0.0.1 del >/dev/null 2>&1 || true
  podman "${store[@]}" "${run_opts[@]}" system reset --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

step "debootstrap a Debian 12 base with Python 3.11"
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log"; exit 1; }
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
if [ -n "${SSL_CERT_FILE:-}" ] && [ -s "$SSL_CERT_FILE" ]; then
  cp "$SSL_CERT_FILE" "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/rootfs/etc/pip.conf"
fi
tar -C "$work/rootfs" -c . | podman "${store[@]}" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - docker.io/library/python:3.11-slim-bookworm >/dev/null

step "build the Dockerfile (buildah, chroot isolation, vfs)"
buildah "${store[@]}" bud --isolation chroot --pull-never --layers=false --format docker \
  -t localhost/statsapi:smoke -f "$repo/Dockerfile" "$repo" >"$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; exit 1; }
podman "${store[@]}" image inspect localhost/statsapi:smoke \
  --format 'user={{.Config.User}} cmd={{.Config.Cmd}} healthcheck={{.Config.Healthcheck.Test}}'

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# As in compose: the migrate step as the owner (postgres here), the API as the app role.
app_role=statsapi_test_app
owner_url="postgresql://postgres@127.0.0.1:5432/$db"
env_args=(
  -e STATSAPI_ENV=production
  -e "DATABASE_URL=postgresql://$app_role@127.0.0.1:5432/$db"
  -e REDIS_URL=redis://127.0.0.1:6379/0
  -e "REDIS_KEY_PREFIX=$prefix"
  -e "JWT_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
  -e BOOTSTRAP_ADMIN_USERNAME=smoke-admin
  -e "BOOTSTRAP_ADMIN_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')"
  -e "GUNICORN_BIND=127.0.0.1:$port"
  -e WEB_CONCURRENCY=2
)
hardening=(--network host --read-only --tmpfs /tmp:size=64m --cap-drop ALL
  --security-opt no-new-privileges --ulimit nofile=8192:8192 --ulimit nproc=4096:4096)
psql -h 127.0.0.1 -U postgres -q -c "CREATE DATABASE \"$db\""

step "one-shot migrate (db upgrade + grant-app-role + create-admin) as the owner, read-only, non-root"
podman "${store[@]}" "${run_opts[@]}" run --rm "${hardening[@]}" "${env_args[@]}" \
  -e "DATABASE_URL=$owner_url" -e "DATABASE_APP_ROLE=$app_role" localhost/statsapi:smoke \
  sh -c 'flask --app statsapi db upgrade && flask --app statsapi db grant-app-role && flask --app statsapi create-admin --if-missing'

step "run the API read-only, non-root, until /health and /ready answer"
container=$(podman "${store[@]}" "${run_opts[@]}" run -d --no-healthcheck "${hardening[@]}" "${env_args[@]}" \
  localhost/statsapi:smoke)
for _ in $(seq 1 60); do
  if python3 -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1).status == 200 else 1)" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
python3 - "$port" <<'EOF'
import json, sys, urllib.request
port = sys.argv[1]
health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5))
ready = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5))
assert health == {"status": "ok"}, health
assert ready["status"] == "ready", ready  # PostgreSQL at the migration head, Redis up
print("health:", health, "| ready:", ready["status"], ready["checks"]["migrations"])
EOF
podman "${store[@]}" "${run_opts[@]}" exec "$container" sh -c \
  'printf "uid=%s " "$(id -u)"; touch /app/probe 2>/dev/null && echo "root FS writable!" && exit 1; echo "root FS read-only"'
# The image's own HEALTHCHECK command, run once inside the container.
podman "${store[@]}" "${run_opts[@]}" exec -e "PORT=$port" "$container" python -c \
  "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=2).status == 200 else 1)"
echo "HEALTHCHECK command: ok"

redoc_served() {
  python3 - "$1" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/docs/assets/redoc.standalone.js", timeout=5) as r:
    size = len(r.read())
assert r.status == 200 and size > 100_000, (r.status, size)
print("redoc.standalone.js:", size, "bytes")
EOF
}
step "ReDoc's bundle is served by the image"
redoc_served "$port"

step "...and still with a checkout's source mounted over /app/statsapi (compose.dev.yaml)"
# A checkout that never ran `make run` has no statsapi/static/vendor/.
mkdir -p "$work/checkout"
tar -C "$repo" --exclude=statsapi/static/vendor --exclude=__pycache__ -c statsapi | tar -C "$work/checkout" -x
podman "${store[@]}" "${run_opts[@]}" rm -f "$container" >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
container=$(podman "${store[@]}" "${run_opts[@]}" run -d --no-healthcheck "${hardening[@]}" "${env_args[@]}" \
  -e "GUNICORN_BIND=127.0.0.1:$port" -v "$work/checkout/statsapi:/app/statsapi:ro" localhost/statsapi:smoke)
for _ in $(seq 1 60); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/health', timeout=1)" 2>/dev/null && break
  sleep 0.5
done
redoc_served "$port"
step "image smoke test passed"
