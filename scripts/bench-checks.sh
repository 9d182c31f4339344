#!/usr/bin/env bash
# Health checks per second one Starling node sustains, and what they cost
# (docs/PERFORMANCE.md).
#
#   scripts/bench-checks.sh KIND COUNT [RUNS] [SECONDS] [INTERVAL_MS]
#       KIND tcp|http; defaults: 3 runs, 20 s window, interval 1000 ms.
#
# Each run starts a fresh node on loopback (--no-mdns) and a local listener
# (scripts/bench_helper.py: accept-and-close for tcp, a 200 answer for
# http), registers COUNT instances of prod/chk with one check each at
# INTERVAL_MS, lets the checks start (5 s), then measures over SECONDS:
# check runs per second from `starling_check_runs_total` in /metrics,
# the passing share of those runs, the node's CPU (utime+stime from
# /proc/PID/stat, % of one core), the listener's CPU, and the node's RSS.
# STARLING_BIN picks the binary (default /tmp/starling-perf);
# HTTP_PORT / TARGET_PORT the ports (17072 / 18082).
set -euo pipefail
KIND=${1:?tcp or http}
COUNT=${2:?number of instances}
RUNS=${3:-3}
SECS=${4:-20}
INTERVAL=${5:-1000}
BIN=${STARLING_BIN:-/tmp/starling-perf}
HTTP_PORT=${HTTP_PORT:-17072}
TARGET_PORT=${TARGET_PORT:-18082}
HERE=$(cd "$(dirname "$0")" && pwd)
H="python3 $HERE/bench_helper.py"
API="127.0.0.1:$HTTP_PORT"
hz=$(getconf CLK_TCK)
NODE= LISTENER= TMP=
stop() {
    [ -n "$NODE" ] && { kill "$NODE" 2>/dev/null; wait "$NODE" 2>/dev/null || true; }
    [ -n "$LISTENER" ] && { kill "$LISTENER" 2>/dev/null; wait "$LISTENER" 2>/dev/null || true; }
    [ -n "$TMP" ] && rm -rf "$TMP"
    NODE= LISTENER= TMP=
}
trap stop EXIT
# All check runs, and the passing ones, from one scrape of /metrics.
runs() {
    curl -sf "$API/metrics" | awk '/^starling_check_runs_total\{/ {
        t += $2; if ($0 ~ /result="passing"/) p += $2 } END {print t + 0, p + 0}'
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "# $KIND checks: $COUNT instances x 1 check every $INTERVAL ms (scheduled $((COUNT * 1000 / INTERVAL))/s), ${SECS} s windows"
echo "run runs_per_s passing_pct node_cpu_pct listener_cpu_pct node_rss_mib"
for r in $(seq "$RUNS"); do
    TMP=$(mktemp -d /tmp/bench-checks.XXXXXX)
    $H listen "$TARGET_PORT" "$KIND" &
    LISTENER=$!
    "$BIN" run --no-mdns --data-dir "$TMP/data" --http "$API" --no-dns \
        --listen /ip4/127.0.0.1/tcp/0 2>"$TMP/node.log" &
    NODE=$!
    for _ in $(seq 100); do
        curl -sf "$API/v1/health" >/dev/null && break
        sleep 0.1
    done
    $H register "$API" prod chk "$COUNT" "$KIND" "127.0.0.1:$TARGET_PORT" "$INTERVAL"
    sleep 5
    read -r c0 p0 < <(runs)
    n0=$(ticks "$NODE"); l0=$(ticks "$LISTENER"); s0=$(date +%s.%N)
    sleep "$SECS"
    read -r c1 p1 < <(runs)
    n1=$(ticks "$NODE"); l1=$(ticks "$LISTENER"); s1=$(date +%s.%N)
    rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$NODE/status")
    echo "$c0 $c1 $p0 $p1 $n0 $n1 $l0 $l1 $s0 $s1 $hz $rss $r" | awk '{
        dt = $10 - $9; runs = $2 - $1
        printf "%d %.0f %.1f %.0f %.0f %s\n", $13, runs / dt,
            runs ? ($4 - $3) / runs * 100 : 0,
            ($6 - $5) / $11 / dt * 100, ($8 - $7) / $11 / dt * 100, $12 }'
    stop
done
