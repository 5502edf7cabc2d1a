#!/usr/bin/env bash
# User-space instructions per S4 or S6 request, or per S3 connection, in the proxy, counted by
# callgrind (repeatable, unlike timings on this machine). Starts the bench's origins
# (scripts/bench's Lab), runs BIN (default target/release/dataplane) under valgrind on
# 127.0.0.2 with the epoll driver (valgrind does not follow io_uring), warms it up, zeroes the
# counters, drives it (S4's route, plain HTTP to the origin, or S6's, where the proxy
# originates TLS, with `wrk -t1 -c10 -d8s`; S3's TLS pass-through with `tls-rate`, 4 concurrent
# full handshakes for 8 s), dumps, and prints instructions and allocations per request or
# connection.
# `relay` drives S4's load through the bench's TCP pass-through port (scripts/bench's RELAY row).
# Usage: perf/scripts/instructions.sh [BIN] [s3|s4|s6|relay]   (needs valgrind, wrk, and for s3 the
# perf crate's tls-rate: cargo build --release -p dataplane-perf)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${1:-$ROOT/target/release/dataplane}
case "${2:-s4}" in
  s3) PORT=8446 HOST=a.example ;;
  s4) PORT=8084 HOST=origin.example ;;
  s6) PORT=8088 HOST=origin-tls.example ;;
  relay) PORT=8095 HOST=origin.example ;;
  *) echo "scenario: s3, s4, s6 or relay" >&2; exit 2 ;;
esac
OUT=$(mktemp -d)
cat > "$OUT/lab.py" <<PY
import importlib.machinery, importlib.util, signal, sys, time
loader = importlib.machinery.SourceFileLoader("bench", "$ROOT/scripts/bench")
spec = importlib.util.spec_from_loader("bench", loader)
bench = importlib.util.module_from_spec(spec); loader.exec_module(bench)
lab = bench.Lab(None, False)
signal.signal(signal.SIGTERM, lambda *a: (lab.stop(), sys.exit(0)))
lab.start()
open("$OUT/dir", "w").write(lab.dir)
while True: time.sleep(1)
PY
python3 "$OUT/lab.py" > "$OUT/lab.log" 2>&1 &
LAB=$!
trap 'kill $LAB 2>/dev/null; pkill -INT -f "callgrind-out-file=$OUT" 2>/dev/null; true' EXIT
for _ in $(seq 1 60); do [ -s "$OUT/dir" ] && curl -s -o /dev/null http://127.0.0.1:8080/1k && break; sleep 1; done
D=$(cat "$OUT/dir")
DATAPLANE_IO_DRIVER=epoll valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.%p" "$BIN" run \
  --capture listeners --bind 127.0.0.2 --workers 1 --config "$D/conf" --mesh "$D/mesh.yaml" \
  --admin 127.0.0.2:15999 --status-port 0 --prometheus-port 0 > /dev/null 2> "$OUT/proxy.err" &
for _ in $(seq 1 120); do curl -s -o /dev/null http://127.0.0.2:15999/ready && break; sleep 1; done
if [ "${2:-s4}" = s3 ]; then
  RATE="$ROOT/target/release/tls-rate"
  "$RATE" 127.0.0.2:$PORT $HOST 2 1 "$D/certs/ca.pem" > /dev/null
  callgrind_control -z > /dev/null
  REQUESTS=$("$RATE" 127.0.0.2:$PORT $HOST 4 8 "$D/certs/ca.pem" | python3 -c "import json, sys; print(json.load(sys.stdin)['connections'])")
  UNIT=connection
else
  curl -s -o /dev/null -H "Host: $HOST" http://127.0.0.2:$PORT/1k
  callgrind_control -z > /dev/null
  REQUESTS=$(wrk -t1 -c10 -d8s -H "Host: $HOST" http://127.0.0.2:$PORT/1k | awk '/requests in/{print $1}')
  UNIT=request
fi
callgrind_control -d > /dev/null
sleep 1
TOTAL=$(grep -h "^summary:\|^totals:" "$OUT"/cg.*.1 | head -1 | awk '{print $2}')
# Calls into mimalloc's allocation entry points from anywhere in the proxy (all threads: the
# metrics and access-log threads make a few a second).
ALLOCS=$(python3 - "$OUT"/cg.*.1 <<'PY'
import re, sys
names, cfn, total = {}, None, 0
want = {"mi_malloc_aligned", "mi_zalloc_aligned", "mi_realloc_aligned"}
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("cfn="):
        m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line.strip())
        if m and m.group(2):
            names[m.group(1)] = m.group(2)
        cfn = names.get(m.group(1)) if m else None
    elif line.startswith("fn="):
        m = re.match(r"fn=\((\d+)\)(?: (.*))?", line.strip())
        if m and m.group(2):
            names[m.group(1)] = m.group(2)
    elif line.startswith("calls=") and cfn in want:
        total += int(line[6:].split()[0])
print(total)
PY
)
echo "${UNIT}s $REQUESTS, user-space instructions per $UNIT $((TOTAL / REQUESTS)), allocations $ALLOCS ($(python3 -c "print(round($ALLOCS / $REQUESTS, 2))") per $UNIT)"
