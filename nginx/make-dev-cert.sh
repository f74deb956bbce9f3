#!/usr/bin/env bash
# Make a throwaway TLS certificate for local runs and tests.
#
#   nginx/make-dev-cert.sh [--force] [OUT_DIR] [NAME...]
#
# Writes to OUT_DIR (default: nginx/certs, which git ignores):
#   cert.pem  server certificate + the CA that signed it (what nginx serves)
#   key.pem   the server's private key (mode 600)
#   ca.pem    a one-off CA to trust in clients (curl --cacert, requests verify=...)
# The CA's private key is deleted as soon as it has signed, so nothing else can ever be
# issued under it. NAMEs become subjectAltNames (default: localhost 127.0.0.1 ::1); IP
# addresses are recognised. An existing set valid for another week is kept unless --force.
# ECDSA P-256, 30 days: never use it outside a developer machine or a test run.
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
out_dir=${1:-"$(cd "$(dirname "$0")" && pwd)/certs"}
[ $# -gt 0 ] && shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1 ::1)

cert="$out_dir/cert.pem"
key="$out_dir/key.pem"
ca="$out_dir/ca.pem"
if [ "$force" = 0 ] && [ -s "$cert" ] && [ -s "$key" ] && [ -s "$ca" ] \
   && openssl x509 -checkend 604800 -noout -in "$cert" >/dev/null 2>&1; then
  echo "make-dev-cert: keeping $cert (valid for more than 7 days; --force to replace)"
  exit 0
fi

san=""
for name in "${names[@]}"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then entry="IP:$name"; else entry="DNS:$name"; fi
  san="${san:+$san,}$entry"
done

mkdir -p "$out_dir"
umask 077
work=$(mktemp -d "$out_dir/.make-dev-cert.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. a one-off CA
openssl req -x509 -new -nodes -sha256 -days 30 \
  -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -subj "/CN=statsapi development CA (throwaway)" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null

# 2. the server key and certificate, signed by that CA
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
  -subj "/CN=${names[0]}" -keyout "$work/key.pem" -out "$work/server.csr" 2>/dev/null
cat > "$work/server.ext" <<EXT
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
openssl x509 -req -sha256 -days 30 -in "$work/server.csr" \
  -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" -set_serial "0x$(openssl rand -hex 16)" \
  -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null

cat "$work/server.pem" "$work/ca.pem" > "$work/chain.pem"
chmod 600 "$work/key.pem"
chmod 644 "$work/chain.pem" "$work/ca.pem"
mv "$work/key.pem" "$key"
mv "$work/chain.pem" "$cert"
mv "$work/ca.pem" "$ca"
echo "make-dev-cert: wrote $cert, $key and $ca for $san"
