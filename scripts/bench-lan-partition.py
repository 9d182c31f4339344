#!/usr/bin/env python3
"""Partition heal on a LAN of network namespaces, measured.

    scripts/bench-lan-partition.py --starling BIN [--nodes 6] [--runs 3]
                                   [--cut-secs 8] [--settle-secs 10]

Needs root and `ip netns` (iproute2). Builds a private LAN: a bridge in its
own namespace and one namespace per node, each joined to the bridge by a
veth pair (10.214.0.0/24, no route out, multicast routed onto the veth so
mDNS works). Each node runs `starling run` in its namespace with mDNS on,
no bootstrap peers and its HTTP API on 127.0.0.1 inside the namespace (the
script talks to it from a thread that entered the namespace with
setns(2)). Nothing leaves the namespaces; everything is deleted at the end,
also on Ctrl-C.

One run:
1. start the nodes; wait until every node lists every node alive
   (formation; bounded by --form-timeout);
2. wait --settle-secs;
3. cut the first half of the hosts off: their veth ends on the bridge are
   set down (a link-down partition: no FIN or RST, the hosts just stop
   hearing each other);
4. for --cut-secs, write on both sides: every --write-interval-ms a PUT to
   a node of the cut-off half and one to a node of the rest, round-robin
   (keys `bench/w/<side>-<n>`);
5. bring the links back up, and from that moment poll every node's
   `/v1/health` every 50 ms: the time until every node reports the same
   state digest (**heal**), and until every node lists every node alive
   again (**all alive**). Bounded by --heal-timeout (60 s).

The target (issue "Liveness"): equal digests within 2 s of the links
coming back. Medians over the runs are printed and, with --out, the raw
samples written as JSON.
"""

import argparse
import concurrent.futures
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import http.client

PREFIX = "slp"
SUBNET = "10.214.0"
CLONE_NEWNET = 0x40000000
HTTP_PORT = 8000
P2P_PORT = 7000

libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*args, check=True):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


def ns_name(i):
    return f"{PREFIX}-n{i}"


BRIDGE_NS = f"{PREFIX}-br"


def teardown(n):
    for i in range(n):
        sh("ip", "netns", "delete", ns_name(i), check=False)
    sh("ip", "netns", "delete", BRIDGE_NS, check=False)


def setup(n):
    teardown(n)
    sh("ip", "netns", "add", BRIDGE_NS)
    sh("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    for i in range(n):
        ns = ns_name(i)
        a, b = f"{PREFIX}a{i}", f"{PREFIX}b{i}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "link", "set", a, "netns", ns)
        sh("ip", "link", "set", b, "netns", BRIDGE_NS)
        sh("ip", "-n", BRIDGE_NS, "link", "set", b, "master", "br0")
        sh("ip", "-n", BRIDGE_NS, "link", "set", b, "up")
        sh("ip", "-n", ns, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", a)
        sh("ip", "-n", ns, "link", "set", a, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", a)


def set_links(indices, up):
    for i in indices:
        sh("ip", "-n", BRIDGE_NS, "link", "set", f"{PREFIX}b{i}", "up" if up else "down")


class NsHttp:
    """HTTP to 127.0.0.1:HTTP_PORT inside one namespace, from a worker
    thread that entered it (setns affects the calling thread only)."""

    def __init__(self, ns):
        self.ns = ns
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, initializer=self._enter)
        self.conn = None

    def _enter(self):
        fd = os.open(f"/run/netns/{self.ns}", os.O_RDONLY)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {self.ns}")
        os.close(fd)

    def _do(self, method, path, body):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=5)
                headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise
        raise RuntimeError("unreachable")

    def call(self, method, path, body=None):
        return self.pool.submit(self._do, method, path, body)

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


def start_nodes(binary, n, tmp):
    procs = []
    for i in range(n):
        d = os.path.join(tmp, f"n{i}")
        log = open(os.path.join(tmp, f"n{i}.log"), "wb")
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns_name(i), binary, "run", "--no-dns",
             "--data-dir", d, "--name", f"n{i}",
             "--listen", f"/ip4/{SUBNET}.{i + 1}/tcp/{P2P_PORT}",
             "--http", f"127.0.0.1:{HTTP_PORT}"],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        log.close()
        procs.append(p)
    return procs


def stop_nodes(procs):
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def health_all(clients):
    futs = [c.call("GET", "/v1/health") for c in clients]
    out = []
    for f in futs:
        try:
            status, data = f.result(timeout=5)
            out.append(json.loads(data) if status == 200 else None)
        except Exception:  # noqa: BLE001 - a node not answering yet
            out.append(None)
    return out


def all_alive(hs, n):
    return all(h is not None and h.get("members", {}).get("alive", 0) == n for h in hs)


def equal_digests(hs):
    return all(h is not None for h in hs) and len({h["digest"] for h in hs}) == 1


def one_run(args, run):
    n = args.nodes
    tmp = tempfile.mkdtemp(prefix="bench-lan-partition-")
    clients = [NsHttp(ns_name(i)) for i in range(n)]
    procs = start_nodes(args.starling, n, tmp)
    result = {"run": run}
    try:
        t0 = time.monotonic()
        while True:
            hs = health_all(clients)
            if all_alive(hs, n):
                result["formed_s"] = time.monotonic() - t0
                break
            if time.monotonic() - t0 > args.form_timeout:
                raise RuntimeError(f"cluster did not form in {args.form_timeout} s: "
                                   f"{[h and h.get('members') for h in hs]}")
            time.sleep(0.1)
        time.sleep(args.settle_secs)
        cut = list(range(n // 2))
        rest = list(range(n // 2, n))
        set_links(cut, up=False)
        t_cut = time.monotonic()
        seq = 0
        acked = {"cut": 0, "rest": 0}
        while time.monotonic() - t_cut < args.cut_secs:
            futs = []
            for side, members in (("cut", cut), ("rest", rest)):
                c = clients[members[seq % len(members)]]
                futs.append((side, c.call("PUT", f"/v1/kv/bench/w/{side}-{seq}", f"v{seq}".encode())))
            for side, f in futs:
                try:
                    status, _ = f.result(timeout=5)
                    if status in (200, 201, 204):
                        acked[side] += 1
                except Exception:  # noqa: BLE001 - counted as not acknowledged
                    pass
            seq += 1
            time.sleep(args.write_interval_ms / 1000)
        result["writes_acked"] = acked
        before = health_all(clients)
        result["digests_before_heal"] = len({h["digest"] for h in before if h})
        set_links(cut, up=True)
        t_heal = time.monotonic()
        heal = alive = None
        while time.monotonic() - t_heal < args.heal_timeout and (heal is None or alive is None):
            hs = health_all(clients)
            t = time.monotonic() - t_heal
            if heal is None and equal_digests(hs):
                heal = t
            if alive is None and all_alive(hs, n):
                alive = t
            time.sleep(0.05)
        result["heal_s"] = heal if heal is not None else float("inf")
        result["all_alive_s"] = alive if alive is not None else float("inf")
        keys = health_all(clients)
        result["keys"] = [h and h.get("keys") for h in keys]
    finally:
        stop_nodes(procs)
        for c in clients:
            c.close()
        if args.keep_logs and args.out:
            os.makedirs(args.out, exist_ok=True)
            for i in range(n):
                src = os.path.join(tmp, f"n{i}.log")
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(args.out, f"run{run}-n{i}.log"))
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def fmt(s):
    return ">timeout" if s == float("inf") else f"{s:.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starling", required=True, help="the starling binary")
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cut-secs", type=float, default=8.0)
    ap.add_argument("--settle-secs", type=float, default=10.0)
    ap.add_argument("--write-interval-ms", type=int, default=200)
    ap.add_argument("--form-timeout", type=float, default=60.0)
    ap.add_argument("--heal-timeout", type=float, default=60.0)
    ap.add_argument("--out", help="directory for results.json (and logs with --keep-logs)")
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")
    if args.nodes < 2:
        sys.exit("--nodes must be at least 2")
    binary = os.path.abspath(args.starling)
    args.starling = binary

    def on_signal(signum, _frame):
        teardown(args.nodes)
        sys.exit(128 + signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    results = []
    try:
        setup(args.nodes)
        for run in range(1, args.runs + 1):
            r = one_run(args, run)
            results.append(r)
            print(f"run {run}/{args.runs}: formed {fmt(r['formed_s'])}, writes acked {r['writes_acked']}, "
                  f"digests before heal {r['digests_before_heal']}, heal (equal digests) {fmt(r['heal_s'])}, "
                  f"all alive {fmt(r['all_alive_s'])}", flush=True)
    finally:
        teardown(args.nodes)
    heal = statistics.median(r["heal_s"] for r in results)
    alive = statistics.median(r["all_alive_s"] for r in results)
    print(f"median over {len(results)} runs ({args.nodes} nodes, {args.cut_secs:g} s cut): "
          f"equal digests {fmt(heal)} after the links came back, all alive {fmt(alive)}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"args": vars(args), "runs": results,
                       "median_heal_s": heal, "median_all_alive_s": alive,
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "uname": os.uname().release}, f, indent=2, default=str)


if __name__ == "__main__":
    main()
