#!/usr/bin/env bash
# Soak (issue 7): 8,000 connections through the proxy (release, listeners mode) for 10 minutes,
# 3,000 opaque TCP (echo, verified byte for byte), 3,000 keep-alive HTTP and 2,000 TLS
# pass-through (rustls sessions end to end, HTTP inside), each exchanging every ~5 s, with a
# configuration reload every 30 s; the proxy's RSS is sampled every 10 s. Not run in CI.
# Usage: perf/scripts/soak.sh [seconds] [tcp http tls]; the result goes to
# perf/results/soak-<date>.md.
set -euo pipefail
SECS=${1:-600}
TCP=${2:-3000}
HTTP=${3:-3000}
TLS=${4:-2000}
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release -q -p dataplane -p dataplane-perf --manifest-path "$root/Cargo.toml"
bin=$root/target/release/dataplane
run=$(mktemp -d)
trap 'kill $(cat "$run"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$run"' EXIT
mkdir -p "$run/www" "$run/conf"
head -c 1024 /dev/zero | tr '\0' x > "$run/www/1k"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$run/ca.key" \
  -out "$run/ca.pem" -days 2 -subj /CN=soak-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$run/tls.key" \
  -out "$run/tls.csr" -subj /CN=tls.soak 2>/dev/null
printf 'subjectAltName=DNS:tls.soak\n' > "$run/ext"
openssl x509 -req -in "$run/tls.csr" -CA "$run/ca.pem" -CAkey "$run/ca.key" -CAcreateserial \
  -out "$run/tls.pem" -days 2 -extfile "$run/ext" 2>/dev/null
cat > "$run/nginx.conf" <<NGINX
worker_processes 1;
daemon on;
worker_rlimit_nofile 20000;
pid $run/nginx.pid;
error_log $run/nginx-error.log warn;
events { worker_connections 19000; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 3600s;
  client_body_temp_path $run; proxy_temp_path $run; fastcgi_temp_path $run; uwsgi_temp_path $run; scgi_temp_path $run;
  server { listen 127.0.0.1:19080 backlog=4096; root $run/www; }
  server { listen 127.0.0.1:19443 ssl backlog=4096; root $run/www;
    ssl_certificate $run/tls.pem; ssl_certificate_key $run/tls.key; }
}
NGINX
cat > "$run/conf/services.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.soak]
  addresses: [127.0.0.60]
  ports: [{number: 19100, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {tcp: 19001}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.soak]
  ports: [{number: 19101, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 19080}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: tls}
spec:
  hosts: [tls.soak]
  ports: [{number: 19102, name: https, protocol: HTTPS}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {https: 19443}}]
YAML
echo 'outboundTrafficPolicy: {mode: REGISTRY_ONLY}' > "$run/mesh.yaml"
nginx -c "$run/nginx.conf"
"$bin" run --capture listeners --config "$run/conf" --mesh "$run/mesh.yaml" \
  --admin 127.0.0.1:0 --status-port 0 --prometheus-port 0 >/dev/null 2>"$run/dataplane.log" &
echo $! > "$run/dataplane.pid"
sleep 1
out=$root/perf/results/soak-$(date -u +%F).md
mkdir -p "$root/perf/results"
{
  echo "# Soak $(date -u +%FT%TZ)"
  echo
  echo "\`perf/scripts/soak.sh $SECS $TCP $HTTP $TLS\` on $(nproc) vCPUs, $(uname -r); proxy: release build, $(nproc) workers, listeners mode."
  echo
  echo '```'
  "$root/target/release/soak" "$TCP" "$HTTP" "$TLS" "$SECS" "$(cat "$run/dataplane.pid")" \
    "$run/conf/extra.yaml" "$run/ca.pem" | sed '/^## Soak result/,$!b' | tee /dev/stderr | sed -n '/^t=/p'
  echo '```'
} > "$out.tmp" 2> "$run/summary"
status=${PIPESTATUS[0]:-0}
cat "$out.tmp" > "$out"
sed -n '/^## Soak result/,$p' "$run/summary" >> "$out"
grep -c 'configuration reloaded and published' "$run/dataplane.log" | sed 's/^/reloads published: /' >> "$out"
rm -f "$out.tmp"
cat "$out"
