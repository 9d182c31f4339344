#!/usr/bin/env python3
"""Resident memory of one `starling run` process holding K keys.

Starts a node on loopback (mDNS and DNS off, a scratch data directory),
writes K keys of VALUE bytes over one kept-alive HTTP connection, waits,
and prints the process's VmRSS and VmHWM and where the resident pages are
(anonymous heap and stacks, the binary's own mapped pages, other files),
read from /proc/PID/smaps_rollup and /proc/PID/smaps.

    scripts/rss-probe.py BIN [--keys 10000] [--value 64] [--settle 5]
    STARLING_CONFIG=extra.toml scripts/rss-probe.py BIN   # with a config

The issue's target is RSS <= 12 MB with 10,000 keys of 64 bytes.
"""

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import time


def rss_breakdown(pid, binary):
    """(VmRSS, VmHWM, anon, binary file pages, other file pages) in KiB."""
    status = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            status[k] = v.strip()
    anon = exe = other = 0
    name = None
    real = os.path.realpath(binary)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                name = parts[5] if len(parts) >= 6 else ""
            elif parts[0] == "Rss:":
                kib = int(parts[1])
                if name == real:
                    exe += kib
                elif name and name.startswith("/"):
                    other += kib
                else:
                    anon += kib
    kib = lambda s: int(s.split()[0])
    return kib(status["VmRSS"]), kib(status["VmHWM"]), anon, exe, other


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--value", type=int, default=64, help="value bytes")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after the writes")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="starling-rss-")
    cmd = [args.binary, "run", "--no-mdns", "--no-dns", "--data-dir", os.path.join(tmp, "n0"),
           "--name", "n0", "--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        http_addr = None
        deadline = time.monotonic() + 30
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("starling ready "):
                info = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
                http_addr = info["http"].removeprefix("http://")
                break
            if time.monotonic() > deadline:
                break
        if not http_addr:
            sys.exit("rss-probe: the node did not print its ready line")
        host, port = http_addr.rsplit(":", 1)
        time.sleep(1.0)
        before = rss_breakdown(p.pid, args.binary)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        value = b"v" * args.value
        t0 = time.monotonic()
        for i in range(args.keys):
            conn.request("PUT", f"/v1/kv/bench/key-{i:06}", body=value)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                sys.exit(f"rss-probe: write {i} answered {r.status}")
        took = time.monotonic() - t0
        time.sleep(args.settle)
        after = rss_breakdown(p.pid, args.binary)
        print(f"binary {args.binary} ({os.path.getsize(args.binary) / 1e6:.2f} MB)")
        print(f"{args.keys} keys of {args.value} B written in {took:.1f} s")
        print("when         VmRSS     VmHWM     anon      binary    other files  (KiB)")
        for label, (rss, hwm, anon, exe, other) in (("started", before), ("with keys", after)):
            print(f"{label:<12} {rss:<9} {hwm:<9} {anon:<9} {exe:<9} {other}")
        print(f"RSS with keys: {after[0] / 1024:.1f} MiB ({after[0] * 1024 / 1e6:.1f} MB)")
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
