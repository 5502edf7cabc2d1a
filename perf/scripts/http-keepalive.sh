#!/usr/bin/env bash
# Quick same-run comparison for HTTP/1.1 keep-alive with 1 KiB responses (issue 4's note;
# scripts/bench will grow the full harness): wrk -t1 -c50 against the nginx origin directly,
# through dataplane (1 worker, listeners mode, Host-routed) and through nginx (1 worker,
# upstream keep-alive), interleaved over ROUNDS rounds. Prints requests/s and the proxy's CPU
# (all threads, from /proc/PID/stat) per 1000 rps.
set -euo pipefail
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release/dataplane
[ -x "$bin" ] || cargo build --release -p dataplane --manifest-path "$root/Cargo.toml"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
. "$(dirname "$0")/origin.sh"
cat > "$run/proxy.conf" <<NGINX
worker_processes 1;
daemon on;
pid $run/nginx-proxy.pid;
error_log $run/proxy-error.log warn;
events { worker_connections 20000; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $run; proxy_temp_path $run; fastcgi_temp_path $run; uwsgi_temp_path $run; scgi_temp_path $run;
  upstream origin { server 127.0.0.1:18080; keepalive 256; keepalive_requests 1000000; }
  server { listen 127.0.0.1:18081 reuseport backlog=4096;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; proxy_buffering on; } }
}
NGINX
cat > "$run/conf/origin.yaml" <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: origin}
spec:
  hosts: [origin.example]
  ports: [{number: 18082, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 18080}}]
YAML
echo 'outboundTrafficPolicy: {mode: REGISTRY_ONLY}' > "$run/mesh.yaml"
nginx -c "$run/proxy.conf"
"$bin" run --capture listeners --bind 127.0.0.1 --workers 1 --config "$run/conf" --mesh "$run/mesh.yaml" \
  --admin 127.0.0.1:0 --status-port 0 --prometheus-port 0 >/dev/null 2>"$run/dataplane.log" &
echo $! > "$run/dataplane.pid"
sleep 1
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
bench() { # name url pid
  local before after out rps
  before=$([ -n "$3" ] && cpu "$3" || echo 0)
  out=$(wrk -t1 -c50 -d"${SECS}s" -H 'Host: origin.example' "$2")
  after=$([ -n "$3" ] && cpu "$3" || echo 0)
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  if [ -n "$3" ]; then
    awk -v n="$1" -v r="$rps" -v c=$((after - before)) -v t="$tick" -v s="$SECS" \
      'BEGIN { printf "%-10s %10.0f rps  %.3f vCPU per 1000 rps\n", n, r, (c / t / s) / (r / 1000) }'
  else
    printf "%-10s %10.0f rps\n" "$1" "$rps"
  fi
}
nginx_pid=$(pgrep -P "$(cat "$run/nginx-proxy.pid")" | head -1)
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  bench direct http://127.0.0.1:18080/1k ""
  bench dataplane http://127.0.0.1:18082/1k "$(cat "$run/dataplane.pid")"
  bench nginx http://127.0.0.1:18081/1k "$nginx_pid"
done
