#!/usr/bin/env bash
# DNS queries per second one Starling node answers (docs/PERFORMANCE.md).
#
#   scripts/bench-dns.sh [RUNS] [SECONDS]      (defaults 3 and 10)
#
# Starts one node on loopback (--no-mdns), registers 10 instances of
# prod/api over HTTP, then runs `dnsperf` RUNS times for SECONDS each with
# an even mix of `api.prod.service.starling SRV` and `A`, 4 clients, at
# most 100 queries outstanding (dnsperf's default), no rate limit.
# Prints per run: queries/s, average latency, lost queries, and the node's
# CPU (utime+stime from /proc/PID/stat over the run, % of one core).
# Needs dnsperf (Debian: apt-get install dnsperf) and python3.
# STARLING_BIN picks the binary (default /tmp/starling-perf);
# HTTP_PORT / DNS_PORT the ports (17071 / 18601).
set -euo pipefail
RUNS=${1:-3}
SECS=${2:-10}
BIN=${STARLING_BIN:-/tmp/starling-perf}
HTTP_PORT=${HTTP_PORT:-17071}
DNS_PORT=${DNS_PORT:-18601}
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d /tmp/bench-dns.XXXXXX)
NODE=
cleanup() { [ -n "$NODE" ] && kill "$NODE" 2>/dev/null && wait "$NODE" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

"$BIN" run --no-mdns --data-dir "$TMP/data" --http "127.0.0.1:$HTTP_PORT" \
    --dns "127.0.0.1:$DNS_PORT" --listen /ip4/127.0.0.1/tcp/0 2>"$TMP/node.log" &
NODE=$!
for _ in $(seq 100); do
    curl -sf "127.0.0.1:$HTTP_PORT/v1/health" >/dev/null && break
    sleep 0.1
done
python3 "$HERE/bench_helper.py" register "127.0.0.1:$HTTP_PORT" prod api 10 none
printf 'api.prod.service.starling SRV\napi.prod.service.starling A\n' >"$TMP/queries.txt"
echo "# check: $(dig +short @127.0.0.1 -p "$DNS_PORT" api.prod.service.starling SRV 2>/dev/null | wc -l) SRV records"

ticks() { awk '{print $14 + $15}' "/proc/$NODE/stat"; }
hz=$(getconf CLK_TCK)
echo "run qps avg_latency_ms lost node_cpu_pct"
for r in $(seq "$RUNS"); do
    t0=$(ticks); s0=$(date +%s.%N)
    timeout $((SECS + 20)) dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$TMP/queries.txt" \
        -l "$SECS" -c 4 >"$TMP/dnsperf.$r" 2>&1
    t1=$(ticks); s1=$(date +%s.%N)
    qps=$(awk '/Queries per second:/ {print $4}' "$TMP/dnsperf.$r")
    lat=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' "$TMP/dnsperf.$r")
    lost=$(awk '/Queries lost:/ {print $3}' "$TMP/dnsperf.$r")
    cpu=$(echo "$t0 $t1 $s0 $s1 $hz" | awk '{printf "%.0f", ($2 - $1) / $5 / ($4 - $3) * 100}')
    echo "$r $qps $lat $lost $cpu"
    grep -E 'NOERROR|NXDOMAIN|SERVFAIL|REFUSED' "$TMP/dnsperf.$r" | sed 's/^/#   /' || true
done
echo "# node RSS: $(awk '/VmRSS/ {print $2, $3}' "/proc/$NODE/status")"
