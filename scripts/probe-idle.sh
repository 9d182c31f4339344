#!/bin/bash
# Idle wire cost of a Starling cluster, quick and alone (no Serf, no
# failure tests): N `starling run` processes in a private network namespace
# on lo (ports 7000+/8000+, --no-mdns --no-dns), n0 first and the others
# bootstrapping from it; optional writes; then the lo tx bytes per node per
# second over a window, read from /proc/net/dev (which follows the network
# namespace; /sys/class/net/lo/statistics does not, and reads 0 here), the
# established TCP endpoints, and per-node rates of a few counters from
# /metrics. Every process is killed at the end (by pid) and the whole run
# is bounded by `timeout`.
#
# usage: [WRITES=100] [PCAP=out.pcap] scripts/probe-idle.sh BIN N [SETTLE_S] [WINDOW_S]
#   WRITES: PUTs round-robin over the nodes after SETTLE_S, 20 ms apart,
#           then 10 s before the window (as scripts/bench-cluster.py does)
#   PCAP:   also capture the window with tcpdump (headers only), for
#           scripts/pcap-breakdown.py
# Needs root (unshare -n), curl, ss, python3; tcpdump for PCAP.
set -u
BIN=$1; N=$2; SETTLE=${3:-30}; WIN=${4:-20}
export BIN N SETTLE WIN
export WRITES=${WRITES:-} PCAP=${PCAP:-}
exec timeout $((SETTLE + WIN + 120)) unshare -n bash -c '
ip link set lo up
lotx() { awk "/ lo:/ {print \$10}" /proc/net/dev; }
T=$(mktemp -d)
$BIN run --no-mdns --no-dns --data-dir $T/n0 --name n0 --listen /ip4/127.0.0.1/tcp/7000 --http 127.0.0.1:8000 > $T/n0.out 2>$T/n0.log &
PIDS="$!"
for k in $(seq 1 50); do grep -q "starling ready" $T/n0.out && break; sleep 0.2; done
ID=$(grep -o "id=[^ ]*" $T/n0.out | head -1 | cut -d= -f2)
BOOT=/ip4/127.0.0.1/tcp/7000/p2p/$ID
for i in $(seq 1 $((N-1))); do
  $BIN run --no-mdns --no-dns --data-dir $T/n$i --name n$i --listen /ip4/127.0.0.1/tcp/$((7000+i)) --http 127.0.0.1:$((8000+i)) --bootstrap $BOOT > $T/n$i.out 2>$T/n$i.log &
  PIDS="$PIDS $!"
done
sleep $SETTLE
if [ -n "$WRITES" ]; then
  for k in $(seq 1 $WRITES); do
    curl -s -X PUT --data-binary "v$k" 127.0.0.1:$((8000 + k % N))/v1/kv/bench/w/$k > /dev/null; sleep 0.02
  done
  sleep 10
fi
snap() { for i in $(seq 0 $((N-1))); do curl -s 127.0.0.1:$((8000+i))/metrics | grep -E "^starling_(syncs_started_total|syncs_skipped_quiet_total|heartbeats_received_total|heartbeats_sent_total|heartbeats_quiet_total|wire_bytes_total)"; done; }
snap > $T/s0
B0=$(lotx)
TD=""
if [ -n "$PCAP" ]; then tcpdump -i lo -nn -s 96 -w "$PCAP" tcp 2>/dev/null & TD=$!; fi
sleep $WIN
B1=$(lotx)
[ -n "$TD" ] && kill $TD
snap > $T/s1
echo "N=$N lo tx bytes/node/s: $(( (B1-B0)/WIN/N ))"
C=$(ss -tnH state established | wc -l)
echo "established tcp endpoints: $C (per node ~ $((C/N)))"
python3 - $T/s0 $T/s1 $WIN $N <<PY
import sys, collections
def rd(f):
    d = collections.defaultdict(float)
    for l in open(f):
        k, v = l.split()
        d[k] += float(v)
    return d
a, b, w, n = rd(sys.argv[1]), rd(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
for k in sorted(b):
    print("  per node per s: %-50s %.2f" % (k, (b[k] - a[k]) / w / n))
PY
curl -s 127.0.0.1:8001/metrics | grep -E "^starling_members"
kill $PIDS 2>/dev/null; sleep 1; kill -9 $PIDS 2>/dev/null; wait 2>/dev/null; rm -rf $T
'
