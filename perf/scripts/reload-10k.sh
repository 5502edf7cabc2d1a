#!/usr/bin/env bash
# Reload cost with 10,000 ServiceEntries under HTTP load (issue 5; S8's first half): the proxy
# (release, 1 worker, listeners mode) serves keep-alive HTTP from wrk while a small file next to
# the 10k-entry file is replaced every 2 s. Prints the proxy's own timings for each reload
# (load_ms: read + validate + compile + publish; since_change_ms: from the first file event)
# and wrk's latency with and without reloads, same run.
set -euo pipefail
SECS=${SECS:-12}
root=$(cd "$(dirname "$0")/../.." && pwd)
cargo build --release -q -p dataplane -p dataplane-perf --manifest-path "$root/Cargo.toml"
bin=$root/target/release/dataplane
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
. "$(dirname "$0")/origin.sh"
"$root/target/release/gen-service-entries" 10000 > "$run/conf/gen.yaml"
small() {
  cat <<YAML
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: origin}
spec:
  hosts: [origin.example, extra$1.example]
  ports: [{number: 18082, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.1, ports: {http: 18080}}]
YAML
}
small 0 > "$run/conf/small.yaml"
echo 'outboundTrafficPolicy: {mode: REGISTRY_ONLY}' > "$run/mesh.yaml"
# Listeners mode binds every service port on 127.0.0.2 (80, 443, 3306 and 18082).
"$bin" run --capture listeners --bind 127.0.0.2 --workers 1 --config "$run/conf" --mesh "$run/mesh.yaml" \
  --admin 127.0.0.1:0 --status-port 0 --prometheus-port 0 >/dev/null 2>"$run/dataplane.log" &
echo $! > "$run/dataplane.pid"
for _ in $(seq 100); do curl -s -o /dev/null -H 'Host: origin.example' http://127.0.0.2:18082/1k && break; sleep 0.1; done
latency() { wrk -t1 -c50 -d"${SECS}s" --latency -H 'Host: origin.example' http://127.0.0.2:18082/1k \
  | awk '/Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Latency/ && !l {max=$4; l=1} END {printf "%s rps, p50 %s, p99 %s, max %s\n", r, p50, p99, max}'; }
echo "without reloads: $(latency)"
(
  for i in $(seq 1 $((SECS / 2))); do
    sleep 2
    small "$i" > "$run/small.tmp" && mv "$run/small.tmp" "$run/conf/small.yaml"
  done
) &
changer=$!
echo "with reloads:    $(latency)"
wait "$changer"
grep -o 'load_ms=[0-9]* since_change_ms=[0-9]*' "$run/dataplane.log" | sed 's/^/reload: /'
