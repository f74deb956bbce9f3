#!/usr/bin/env bash
# The log-shipping configs checked by the tools themselves, in the images compose.yaml pins:
#
#   1. fluent-bit --dry-run on observability/fluent-bit.yaml
#   2. loki -verify-config on observability/loki.yaml
#   3. a real run of both, the committed configs unchanged, on a network of their own:
#      json-file lines as Docker writes them for api, nginx and db go in; Loki must answer
#      the dashboard's query for one request id with the api and the nginx line, keep
#      request_id out of its labels, and hold no db line.
#
# Needs a Docker engine (DOCKER=podman works too). The project's own machine has none, so
# tests/static/test_log_shipping.py cannot run this; the "observability" workflow does,
# and so can an operator before changing either config (docs/observability.md).
set -euo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
RUN=statsapi-logcheck-$$
WORK=$(mktemp -d)
REQUEST_ID=logcheck-$$-$RANDOM

log() { printf '\033[1mcheck-log-shipping:\033[0m %s\n' "$*"; }
pinned() { grep -oE "image: $1:[0-9][^[:space:]]*" compose.yaml | cut -d' ' -f2; }
cleanup() {
  "$DOCKER" rm -f "$RUN-fluent-bit" "$RUN-loki" >/dev/null 2>&1 || true
  "$DOCKER" volume rm "$RUN-loki" "$RUN-state" >/dev/null 2>&1 || true
  "$DOCKER" network rm "$RUN" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

FLUENT_BIT=$(pinned fluent/fluent-bit)
LOKI=$(pinned grafana/loki)
[ -n "$FLUENT_BIT" ] && [ -n "$LOKI" ] || { log "no pinned fluent-bit/loki image in compose.yaml"; exit 1; }
# As compose.yaml runs them: read-only root, no capabilities.
HARDENED=(--read-only --cap-drop ALL --security-opt no-new-privileges:true)
FB_CONFIG=(-v "$PWD/observability/fluent-bit.yaml:/fluent-bit/etc/statsapi.yaml:ro")
LOKI_CONFIG=(-v "$PWD/observability/loki.yaml:/etc/loki/loki.yaml:ro")

log "1/3 $FLUENT_BIT --dry-run"
"$DOCKER" run --rm "${FB_CONFIG[@]}" "$FLUENT_BIT" -c /fluent-bit/etc/statsapi.yaml --dry-run

log "2/3 $LOKI -verify-config"
"$DOCKER" run --rm "${LOKI_CONFIG[@]}" "$LOKI" -config.file=/etc/loki/loki.yaml -verify-config

log "3/3 shipping for real"
"$DOCKER" network create "$RUN" >/dev/null
"$DOCKER" run -d --name "$RUN-loki" --network "$RUN" --network-alias loki -p 127.0.0.1::3100 \
  "${HARDENED[@]}" --tmpfs /tmp -v "$RUN-loki:/loki" "${LOKI_CONFIG[@]}" \
  "$LOKI" -config.file=/etc/loki/loki.yaml >/dev/null
LOKI_URL=http://$("$DOCKER" port "$RUN-loki" 3100/tcp | head -n1)
for _ in $(seq 90); do curl -fsS "$LOKI_URL/ready" >/dev/null 2>&1 && break; sleep 1; done
curl -fsS "$LOKI_URL/ready" >/dev/null || { "$DOCKER" logs "$RUN-loki"; exit 1; }

# One container's log file, empty while Fluent Bit starts (it tails from the end).
CONTAINER=$(printf '%064d' 0)
mkdir -p "$WORK/containers/$CONTAINER"
# Readable by the image's root without CAP_DAC_OVERRIDE, like Docker's own log directory.
chmod 755 "$WORK" "$WORK/containers" "$WORK/containers/$CONTAINER"
LOG_FILE="$WORK/containers/$CONTAINER/$CONTAINER-json.log"
: >"$LOG_FILE"
"$DOCKER" run -d --name "$RUN-fluent-bit" --network "$RUN" --user 0:0 "${HARDENED[@]}" \
  -v "$WORK/containers:/var/lib/docker/containers:ro" -v "$RUN-state:/fluent-bit/state" "${FB_CONFIG[@]}" \
  "$FLUENT_BIT" -c /fluent-bit/etc/statsapi.yaml >/dev/null
sleep 5

# A line as Docker's json-file driver writes it, with compose.yaml's labels option.
docker_line() { # service stream printed-line
  python3 -c 'import json, sys, datetime
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
print(json.dumps({"log": sys.argv[3] + "\n", "stream": sys.argv[2],
                  "attrs": {"com.docker.compose.service": sys.argv[1]}, "time": now}))' "$@"
}
{
  docker_line api stdout "{\"time\": \"now\", \"level\": \"INFO\", \"logger\": \"statsapi.access\", \"message\": \"request\", \"route\": \"/api/stats\", \"status\": 200, \"request_id\": \"$REQUEST_ID\", \"user_id\": 1}"
  docker_line nginx stdout "{\"time\": \"now\", \"source\": \"nginx\", \"request_id\": \"$REQUEST_ID\", \"path\": \"/api/stats\", \"status\": 200}"
  docker_line nginx stderr "2026/01/01 00:00:00 [warn] 1#1: a plain nginx error-log line"
  docker_line db stdout "{\"level\": \"INFO\", \"request_id\": \"$REQUEST_ID\", \"message\": \"not ours\"}"
} >>"$LOG_FILE"

# The dashboard's query, as Grafana sends it with the textbox filled in.
# shellcheck disable=SC2016 # $request_id is Grafana's variable, replaced in Python
QUERY=$(python3 -c 'import json, sys
panel = next(p for p in json.load(open(sys.argv[1]))["panels"] if p["type"] == "logs")
print(panel["targets"][0]["expr"].replace("$request_id", sys.argv[2]))' \
  observability/grafana/dashboards/statsapi-overview.json "$REQUEST_ID")
START=$(($(date +%s) - 600))000000000
found=""
for _ in $(seq 60); do
  found=$(curl -fsS -G "$LOKI_URL/loki/api/v1/query_range" --data-urlencode "query=$QUERY" \
    --data-urlencode "start=$START" --data-urlencode "limit=100" || true)
  python3 -c 'import json, sys; sys.exit(len(json.loads(sys.argv[1] or "{}").get("data", {}).get("result", [])) < 2)' \
    "$found" && break
  sleep 1
done
labels=$(curl -fsS -G "$LOKI_URL/loki/api/v1/labels" --data-urlencode "start=$START")
services=$(curl -fsS -G "$LOKI_URL/loki/api/v1/label/service/values" --data-urlencode "start=$START")
if ! python3 - "$found" "$labels" "$services" "$REQUEST_ID" <<'EOF'; then
import json
import sys

found, labels, services, request_id = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
streams = found["data"]["result"]
lines = {s["stream"]["service"]: [json.loads(v[1]) for v in s["values"]] for s in streams}
assert set(lines) == {"api", "nginx"}, lines
assert all(line["request_id"] == request_id for batch in lines.values() for line in batch), lines
assert lines["api"][0]["route"] == "/api/stats" and lines["nginx"][0]["path"] == "/api/stats", lines
# Labels stay few; request_id is a field of the line (Loki 3 adds service_name itself).
assert "request_id" not in labels["data"], labels
assert set(labels["data"]) <= {"job", "service", "stream", "level", "service_name", "detected_level"}, labels
assert set(services["data"]) == {"api", "nginx"}, services
print(f"Loki answered the dashboard's query for {request_id} from api and nginx; labels {sorted(labels['data'])}")
EOF
  log "Loki did not answer as expected; Fluent Bit said:"
  "$DOCKER" logs "$RUN-fluent-bit" 2>&1 | tail -n 40
  exit 1
fi
log "ok"
