#!/usr/bin/env python3
"""How fast N `starling run` processes on loopback form a cluster, with a
light observer: n0 starts, then n1..n(N-1) bootstrapping from it, all at
once; the script polls every node's /v1/health (one thread per node, on a
kept-alive connection, every 10 ms) and prints when the last process
printed its ready line and when every node listed N members alive (the
first node and the last).

    scripts/join-probe.py BIN N

Unlike scripts/bench-cluster.py it keeps no member watch streams open (at
50 nodes its Python observer parses thousands of SSE events during the
join and delays what it observes); mDNS and DNS are off.
"""
import subprocess, sys, time, tempfile, shutil, threading, json, http.client
binary, n = sys.argv[1], int(sys.argv[2])
tmp = tempfile.mkdtemp(prefix="jq-")
def cmd(i, boot=None):
    c=[binary,"run","--no-mdns","--no-dns","--data-dir",f"{tmp}/n{i}","--name",f"n{i}","--listen","/ip4/127.0.0.1/tcp/0","--http","127.0.0.1:0"]
    return c+(["--bootstrap",boot] if boot else [])
def parse(line): return dict(kv.split("=",1) for kv in line.split()[2:] if "=" in kv)
p0=subprocess.Popen(cmd(0),stdout=subprocess.PIPE,stderr=subprocess.DEVNULL); procs=[p0]; info={}
for raw in p0.stdout:
    line=raw.decode()
    if line.startswith("starling ready "):
        info[0]=parse(line); boot=info[0]["listen"]; break
ready={}
t0=time.monotonic()
def rd(i,p):
    for raw in p.stdout:
        if raw.startswith(b"starling ready "):
            ready[i]=time.monotonic()-t0; info[i]=parse(raw.decode()); return
for i in range(1,n):
    p=subprocess.Popen(cmd(i,boot),stdout=subprocess.PIPE,stderr=subprocess.DEVNULL); procs.append(p)
    threading.Thread(target=rd,args=(i,p),daemon=True).start()
seen={}
def watch(i):
    # One thread per node, each on a kept-alive connection: a single loop
    # over 50 nodes took 0.2 s a round on a busy machine and quantized
    # what it measured.
    while i not in info and time.monotonic()-t0<20: time.sleep(0.005)
    h,pt=info[i]["http"].replace("http://","").rsplit(":",1); c=None
    while time.monotonic()-t0<20:
        try:
            c=c or http.client.HTTPConnection(h,int(pt),timeout=2)
            c.request("GET","/v1/health"); d=json.loads(c.getresponse().read())
            if d["members"].get("alive",0)==n: seen[i]=time.monotonic()-t0; return
        except Exception: c=None
        time.sleep(0.01)
watchers=[threading.Thread(target=watch,args=(i,),daemon=True) for i in range(n)]
for w in watchers: w.start()
for w in watchers: w.join()
v=sorted(ready.values()); s=sorted(seen.values())
print("last ready %.3f; all alive on every node %.3f (first node %.3f, %d nodes)"%(v[-1],s[-1],s[0],len(s)))
for p in procs: p.kill()
for p in procs: p.wait()
shutil.rmtree(tmp,ignore_errors=True)
