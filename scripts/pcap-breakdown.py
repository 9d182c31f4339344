#!/usr/bin/env python3
"""Where a Starling cluster's idle wire bytes go, from a loopback capture
(scripts/probe-idle.sh with PCAP=...). Payloads are encrypted (noise), so
packets are told apart by size: pure TCP acknowledgements (0), yamux
header-only frames (30: yamux's own RTT ping every 10 s per side, window
updates, stream opens), libp2p ping/pong (62), heartbeats (~250-450),
anti-entropy request/response (>= 700), the rest (IHAVE, stream
negotiation, ...). Also counts new connections (SYN) in the capture and
the bytes they carried. Each packet is counted with 66 bytes of
Ethernet/IPv4/TCP headers, as lo's tx counter counts it.

usage: scripts/pcap-breakdown.py CAPTURE.pcap N   (needs tcpdump)
"""
import collections
import re
import subprocess
import sys


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    out = subprocess.run(["tcpdump", "-r", path, "-nn", "-tt"], capture_output=True, text=True).stdout
    pk = []
    for line in out.splitlines():
        m = re.match(r"([\d.]+) IP [\d.]+\.(\d+) > [\d.]+\.(\d+): Flags \[([^\]]*)\].*length (\d+)", line)
        if m:
            pk.append((float(m[1]), int(m[2]), int(m[3]), m[4], int(m[5])))
    if len(pk) < 2:
        sys.exit("no TCP packets in the capture")
    secs = pk[-1][0] - pk[0][0]
    per = lambda x: x / secs / n  # noqa: E731
    cats = collections.defaultdict(lambda: [0, 0])
    for _, _, _, _, size in pk:
        if size == 0:
            c = "tcp ack"
        elif size == 30:
            c = "yamux header-only frame"
        elif size == 62:
            c = "libp2p ping/pong"
        elif 240 <= size < 700:
            c = "heartbeat-sized (240-699)"
        elif size >= 700:
            c = "sync-sized (>= 700)"
        else:
            c = "other small"
        cats[c][0] += 1
        cats[c][1] += size + 66
    total = sum(v[1] for v in cats.values())
    print("%.1f s, %d nodes: %.0f bytes and %.1f packets per node per s"
          % (secs, n, per(total), per(len(pk))))
    for c, (k, b) in sorted(cats.items(), key=lambda x: -x[1][1]):
        print("  %-26s %6.2f pkts  %6.0f B  per node per s" % (c, per(k), per(b)))
    flows = collections.defaultdict(int)
    opened = set()
    for _, a, b, flags, size in pk:
        key = tuple(sorted((a, b)))
        flows[key] += size + 66
        if flags == "S":
            opened.add(key)
    print("  new connections: %.3f per node per s, carrying %.0f B per node per s"
          % (per(len(opened)), per(sum(flows[k] for k in opened))))


if __name__ == "__main__":
    main()
