#!/usr/bin/env python3
"""Multi-process cluster benchmark: Starling side by side with HashiCorp Serf.

    scripts/bench-cluster.py [--nodes 5,20,50] [--runs 3] [--idle-secs S]
                             [--starling PATH] [--serf PATH] [--only starling|serf]
                             [--out DIR] [--keep-going] [--netns auto|on|off]

Python 3 standard library only. For every N in --nodes and every run it
starts N REAL separate processes of each system (Starling first, then Serf;
never both at once) on 127.0.0.1, measures them, and kills them. It prints
the MEDIAN over the runs of each figure as a table (Serf | Starling |
Starling/Serf), and writes every raw sample and the medians to
DIR/results.json (DIR from --out, else a new temporary directory, printed).

How the clusters are started
----------------------------
Starling: `starling run --no-mdns --no-dns --data-dir TMP/nI --name nI
--listen /ip4/127.0.0.1/tcp/0 --http 127.0.0.1:0` (default protocol
settings; default
log level, logs to a file). Node n0 is started first; once it prints its
`starling ready ... listen=... http=...` line, n1..n(N-1) are started at
once with `--bootstrap <n0's listen multiaddr>/p2p/<id>`. Ports are chosen
by the OS and read from the ready lines. mDNS and DNS are never on.

Serf: `serf agent -node=nI -bind=127.0.0.1:P -rpc-addr=127.0.0.1:R`
(default `lan` profile, never `-discover`); n0 first, then, once n0's log
is streaming, n1..n(N-1) at once with `-join=127.0.0.1:<n0's port>`.

Both sides therefore follow the same procedure: every node joins through
the first one. Every process is in its own process group, gets SIGKILL if
this script dies (PR_SET_PDEATHSIG), and is killed, with its temporary
directory removed, at the end of each run, on error, on Ctrl-C and at exit.

How membership is observed (ms resolution, no polling)
------------------------------------------------------
Starling: one thread per node holds `GET /v1/watch/members?since=0` (server-
sent events; the stream replays every change from revision 0, so each
node's full view is known) and applies each `member` event to that node's
view, timestamped with time.monotonic() right after the bytes arrive. The
streams are closed before the idle window (so the window carries no HTTP
traffic) and resumed afterwards with `?since=<last revision seen>`.
Serf: one thread per agent reads its stdout (log) line by line and applies
`serf: EventMemberJoin: NAME` (alive, including a failed member coming
back), `EventMemberFailed` (failed), `EventMemberLeave` (left),
`EventMemberReap` (gone), timestamped on arrival. Serf holds its log lines
back until the agent has finished starting (its join included) and then
writes them at once; the arrival time is when the agent reports them.
Each condition below is checked by the reader thread at the moment it
applies an event, so "time until every node shows X" is the arrival time
of the last observer's deciding event. Resolution: about 1 ms (Python's
thread switch interval is set to 1 ms; many events arriving together can
delay a timestamp by a few ms).

The figures
-----------
1. join: from starting n0's process until EVERY node lists all N members
   (itself included) as alive: for Starling every node's watch view holds
   N members with status `alive`; for Serf every agent has logged
   EventMemberJoin for N distinct names (itself and the N-1 others), with
   none failed since. Bounded by --join-timeout (60 s). The raw samples also
   hold the time from starting n1..n(N-1) (after n0 was ready), the first
   node's time, and (Starling) when the last node printed its ready line:
   with many processes starting at once on few cores, process start-up can
   dominate the figure.
2. write->visible on every node, p50 and p99 (Starling only: Serf has no
   key/value store), measured on the settled cluster, after the idle window
   (3; right after the join the machine is still busy with it, and the
   figure measured that). A watch `GET /v1/watch/kv/bench?prefix=w/` is held on
   every node; --writes (100) PUTs of `/v1/kv/bench/w/K` go round-robin to
   the nodes over keep-alive connections, one every --write-interval-ms
   (20 ms) (a PUT answers once durable; the next is sent no earlier than
   the interval after the previous one was sent). A write's latency is from
   just before its PUT is sent until the LAST node's watch delivers it;
   p50/p99 are nearest-rank over the writes. A write not seen everywhere
   within 10 s counts as infinitely late (shown as `>10 s`) and is counted
   in `writes_missing`.
3. idle wire bytes per node per second: after the join (the member watches
   paused), wait --settle-secs (by default 3 s per node, at least 30 s:
   an idle cluster is one where nothing has changed for a while. Starling
   heartbeats at the quiet interval, twice its usual one, from its first
   heartbeat 5 s after the last change; the usual interval is N s, so the
   quiet rate holds everywhere about 2N s after the last change), then
   over --idle-secs (by default 2 s per node, at least 20 s: one quiet
   heartbeat interval, since nodes started together heartbeat nearly in
   step and a shorter window catches a burst or a lull) take the
   delta of the `lo` interface's transmitted bytes from /proc/net/dev,
   divided by N and by the window's length. On loopback every byte sent is
   counted once in tx, with all framing: IP and TCP/UDP headers, TCP acks,
   noise/yamux/gossipsub framing and relaying for Starling, memberlist UDP
   probes and TCP push-pull for Serf. Nothing else of this script uses the
   network during the window. Other programs on loopback would be counted
   too: with --netns on (the default when run as root: `auto`) the script
   first moves itself into a private network namespace (unshare(2)
   CLONE_NEWNET, then brings its own `lo` up), so the counters see only the
   benchmarked processes; without it, a --baseline-secs (2 s) sample of
   `lo` before each cluster starts is recorded and a warning printed when it
   is not negligible. Raw samples also hold rx bytes and packets.
4. idle CPU per node: over the same window, the sum over the N processes of
   the utime+stime deltas from /proc/PID/stat (clock ticks, usually 10 ms),
   divided by N and by the window, as % of one core.
5. RSS per process: median (and max, in the raw samples) over the N
   processes of VmRSS from /proc/PID/status at the end of the idle window.
6. kill -9 of one node (n(N-1)): time from the SIGKILL until every other
   node shows it `suspect` or `dead` (Starling) / `failed` (Serf), and until
   every other node shows it `dead` (Starling; Serf has nothing after
   `failed`, so its figure is the same as the one before). The watches are
   reopened before it. Bounded by --detect-timeout (30 s, shown as `>30 s`).
7. SIGSTOP of another node (n(N-2); n1 when N = 2): time from the SIGSTOP
   until every other live node shows it suspect/dead (Starling) / failed
   (Serf); then SIGCONT at once, and the time from the SIGCONT until every
   other live node shows it `alive` again (`>30 s` if it does not come
   back). With --stop-until dead the SIGCONT waits until every other live
   node shows it `dead` (Starling; Serf: `failed`, which is its first
   visible state anyway), also reported: the harder case of a paused node
   that must refute its own death.
8. stripped binary size: each binary is copied to a temporary file and
   `strip`ped; its size in bytes.

Medians: over the runs of one system and N, the median of each figure
(mean of the two middle values for an even count); a figure that timed out
counts as infinitely long, printed `>T s` and stored as the string "inf" in
the JSON. A failed run counts for the figures it got (a cluster that never
formed counts as a join timeout). The machine, date, versions, binary
checksum, load average and every option are recorded in the JSON;
--keep-logs also copies every node's log there. A run that fails (e.g. a cluster that does not form) stops the
benchmark unless --keep-going is given, in which case it is recorded with
its error and the next run starts.
"""

import argparse
import atexit
import ctypes
import datetime
import fcntl
import hashlib
import http.client
import json
import os
import platform
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

INF = float("inf")
WRITE_TIMEOUT_S = 10.0

# ---------------------------------------------------------------- cleanup

_procs = []  # every Popen started
_dirs = []  # every temporary work directory
_cleanup_lock = threading.Lock()


def _kill(p):
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.kill()
        except OSError:
            pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def cleanup():
    """Kill every process started and remove every temporary work dir."""
    with _cleanup_lock:
        while _procs:
            _kill(_procs.pop())
        while _dirs:
            shutil.rmtree(_dirs.pop(), ignore_errors=True)


atexit.register(cleanup)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


for _sig in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(_sig, _on_signal)

try:
    _libc = ctypes.CDLL(None, use_errno=True)
    _prctl = _libc.prctl
except (OSError, AttributeError):
    _libc = None
    _prctl = None


def _child_setup():
    # In the child, before exec: die with the parent (PR_SET_PDEATHSIG = 1).
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)


def spawn(cmd, stdout, stderr, cwd=None):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                         cwd=cwd, process_group=0, preexec_fn=_child_setup)
    _procs.append(p)
    return p


def make_tmpdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _dirs.append(d)
    return d


def remove_tmpdir(d):
    shutil.rmtree(d, ignore_errors=True)
    if d in _dirs:
        _dirs.remove(d)


def kill_procs(procs):
    for p in procs:
        _kill(p)
        if p in _procs:
            _procs.remove(p)


# ------------------------------------------------------------ network ns

def enter_private_netns():
    """unshare(CLONE_NEWNET) and bring the new namespace's `lo` up."""
    if _libc is None or os.geteuid() != 0:
        return False, "needs root and libc"
    if _libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        return False, os.strerror(ctypes.get_errno())
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]  # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))  # SIOCSIFFLAGS, IFF_UP
    finally:
        s.close()
    return True, "private network namespace (unshare CLONE_NEWNET), only the benchmarked processes on lo"


# ------------------------------------------------------------ /proc readers

def lo_counters():
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == "lo":
                v = [int(x) for x in rest.split()]
                return {"rx_bytes": v[0], "rx_packets": v[1], "tx_bytes": v[8], "tx_packets": v[9]}
    raise RuntimeError("no lo interface in /proc/net/dev")


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


# ------------------------------------------------------------ observation

class Probe:
    """Records, per observer, when pred(view of that observer) first holds."""

    def __init__(self, observers, pred, t0):
        self.observers = set(observers)
        self.pred = pred
        self.t0 = t0
        self.times = {}
        self.done = threading.Event()
        if not self.observers:
            self.done.set()

    def check(self, obs, view, t):
        if obs in self.observers and obs not in self.times and self.pred(view):
            self.times[obs] = t
            if len(self.times) == len(self.observers):
                self.done.set()

    def wait(self, timeout):
        """Seconds from t0 until every observer saw it (inf on timeout)."""
        self.done.wait(max(0.0, self.t0 + timeout - time.monotonic()))
        return self.result()

    def result(self):
        if len(self.times) < len(self.observers):
            return INF
        return max(self.times.values()) - self.t0

    def first(self):
        return min(self.times.values()) - self.t0 if self.times else INF

    def raw(self):
        return {"every_s": self.result(), "first_s": self.first(),
                "observers": len(self.observers), "reached": len(self.times),
                "per_observer_s": {k: round(v - self.t0, 4) for k, v in sorted(self.times.items())}}


class Tracker:
    """Each node's view of the membership: views[observer][member] = status."""

    def __init__(self, names):
        self.lock = threading.Lock()
        self.views = {n: {} for n in names}
        self.probes = []
        # Nodes a fault was applied to (killed, stopped): statuses about
        # them, and seen by them, are expected; any other suspect/failed/
        # dead report is a false suspicion.
        self.faulted = set()
        self.false_suspicions = 0

    def apply(self, obs, member, status, t):
        with self.lock:
            view = self.views[obs]
            if (status not in (None, "alive", "left") and member not in self.faulted
                    and obs not in self.faulted and view.get(member) != status):
                self.false_suspicions += 1
            if status is None:
                view.pop(member, None)
            else:
                view[member] = status
            for p in self.probes:
                p.check(obs, view, t)

    def probe(self, observers, pred, t0=None):
        with self.lock:
            p = Probe(observers, pred, time.monotonic() if t0 is None else t0)
            now = time.monotonic()
            for obs in p.observers:
                p.check(obs, self.views[obs], now)
            self.probes.append(p)
            return p

    def drop(self, p):
        with self.lock:
            if p in self.probes:
                self.probes.remove(p)


def all_alive(names):
    names = list(names)
    return lambda view: all(view.get(n) == "alive" for n in names)


def status_in(target, statuses):
    return lambda view: view.get(target) in statuses


# ------------------------------------------------------------ HTTP / SSE

class _SSEHub:
    """One thread reads every SSE stream, through a selector.

    With a thread per stream, the 50 streams of a 50-node cluster
    contended for the GIL while a write was being delivered (2,500 events a
    second): an event waited for its thread to be scheduled before it was
    stamped, and the write latencies measured the observer (p50 75 ms,
    against 19 ms from the nodes' own logs). Here a stream is stamped when
    the selector reports it readable, before anything is parsed.
    """

    def __init__(self):
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.thread = None

    def add(self, stream):
        with self.lock:
            self.sel.register(stream.sock, selectors.EVENT_READ, stream)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="sse-hub", daemon=True)
                self.thread.start()

    def remove(self, stream):
        with self.lock:
            try:
                self.sel.unregister(stream.sock)
            except (KeyError, ValueError):
                pass

    def _run(self):
        while True:
            with self.lock:
                idle = not self.sel.get_map()
            if idle:
                time.sleep(0.01)
                continue
            try:
                ready = self.sel.select(timeout=0.05)
            except (OSError, ValueError):
                continue  # a stream closed while selecting
            t = time.monotonic()
            for key, _ in ready:
                stream = key.data
                try:
                    data = stream.sock.recv(65536)
                except OSError:
                    data = b""
                stream.feed(data, t)


_SSE_HUB = _SSEHub()


class SSE:
    """A server-sent-events stream, read by the shared `_SSEHub` thread.

    on_event(event_type, event_id, data, t) is called per event, t being
    time.monotonic() when its last bytes arrived.
    """

    def __init__(self, host, port, path, on_event, name):
        self.on_event = on_event
        self.name = name
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: text/event-stream\r\nConnection: close\r\n\r\n")
        self.sock.sendall(req.encode())
        self.sock.settimeout(None)
        self.closed = False
        self.error = None
        self.opened = threading.Event()
        self.done = threading.Event()
        self.status = None
        self.head = b""      # response head, until complete
        self.chunked = None  # None until the head is parsed
        self.raw = b""       # body bytes not yet de-chunked
        self.text = b""      # de-chunked bytes not yet split into lines
        self.event = {"event": "message", "id": None, "data": []}
        _SSE_HUB.add(self)

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._finish()

    def _finish(self):
        _SSE_HUB.remove(self)
        self.opened.set()
        self.done.set()

    def feed(self, data, t):
        """Bytes that arrived at t (empty: the stream ended)."""
        if self.done.is_set():
            return
        try:
            if not data:
                if self.chunked is None:
                    raise RuntimeError("connection closed before the headers")
                self._finish()
                return
            if self.chunked is None:
                self.head += data
                if b"\r\n\r\n" not in self.head:
                    return
                head, _, data = self.head.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                self.status = int(lines[0].split()[1])
                headers = {k.strip().lower(): v.strip() for k, _, v in
                           (ln.partition(":") for ln in lines[1:])}
                self.opened.set()
                if self.status != 200:
                    raise RuntimeError(f"HTTP {self.status}: {data[:200]!r}")
                self.chunked = "chunked" in headers.get("transfer-encoding", "")
            if self._body(data, t):
                self._finish()
        except Exception as e:  # noqa: BLE001 - a stream that ends is normal
            if not self.closed:
                self.error = repr(e)
            self._finish()

    def _body(self, data, t):
        """Parse body bytes; True at the end of the stream."""
        self.raw += data
        if self.chunked:
            # De-chunk whatever is complete.
            while True:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    break
                size = int(self.raw[:line_end].split(b";")[0], 16)
                if size == 0:
                    return True
                if len(self.raw) < line_end + 2 + size + 2:
                    break
                self.text += self.raw[line_end + 2:line_end + 2 + size]
                self.raw = self.raw[line_end + 2 + size + 2:]
        else:
            self.text += self.raw
            self.raw = b""
        while b"\n" in self.text:
            line, _, self.text = self.text.partition(b"\n")
            line = line.rstrip(b"\r").decode("utf-8", "replace")
            if line == "":
                ev = self.event
                if ev["data"]:
                    self.on_event(ev["event"], ev["id"], "\n".join(ev["data"]), t)
                self.event = {"event": "message", "id": None, "data": []}
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "data":
                    self.event["data"].append(value)
                elif field in ("event", "id"):
                    self.event[field] = value
        return False


def http_request(conn, method, path, body=None):
    conn.request(method, path, body=body)
    r = conn.getresponse()
    return r.status, r.read()


# ------------------------------------------------------------ Starling

class StarlingCluster:
    kind = "starling"
    suspect_statuses = ("suspect", "dead")
    dead_statuses = ("dead",)

    def __init__(self, binary, n, args):
        self.binary = binary
        self.n = n
        self.args = args
        self.names = [f"n{i}" for i in range(n)]
        self.tmp = make_tmpdir(f"bench-starling-{n}-")
        self.tracker = Tracker(self.names)
        self.procs = [None] * n
        self.ready = [threading.Event() for _ in range(n)]
        self.info = [None] * n  # dict from the ready line
        self.t_ready = [None] * n
        self.watch_error = [None] * n
        self.member_streams = {}
        self.last_rev = {}
        self.kv_seen = {}  # key -> {node: t}
        self.kv_lock = threading.Lock()
        self.kv_streams = []

    def _cmd(self, i, bootstrap):
        cmd = [self.binary, "run", "--no-mdns", "--no-dns",
               "--data-dir", os.path.join(self.tmp, self.names[i]),
               "--name", self.names[i],
               "--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"]
        if bootstrap:
            cmd += ["--bootstrap", bootstrap]
        return cmd

    def _read_stdout(self, i, p):
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line.startswith("starling ready "):
                info = dict(kv.split("=", 1) for kv in line.split()[2:] if "=" in kv)
                self.info[i] = info
                self.t_ready[i] = time.monotonic()
                # Open the member watch from here, at once: `since=0` replays
                # the whole view anyway, but a late stream would stamp the
                # replayed events late.
                try:
                    self._open_member_watch(i, 0)
                except Exception as e:  # noqa: BLE001 - reported by start
                    self.watch_error[i] = repr(e)
                self.ready[i].set()
        self.ready[i].set()  # EOF: the process ended (checked by start)

    def _spawn(self, i, bootstrap):
        log = open(os.path.join(self.tmp, f"{self.names[i]}.log"), "wb")
        p = spawn(self._cmd(i, bootstrap), stdout=subprocess.PIPE, stderr=log)
        log.close()
        self.procs[i] = p
        threading.Thread(target=self._read_stdout, args=(i, p), daemon=True,
                         name=f"stdout-{self.names[i]}").start()
        return p

    def _wait_ready(self, i, deadline):
        if not self.ready[i].wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"{self.names[i]} not ready in time")
        if self.info[i] is None:
            raise RuntimeError(f"{self.names[i]} exited before ready "
                               f"(code {self.procs[i].poll()}):\n{self.log_tail(i)}")
        if self.watch_error[i]:
            raise RuntimeError(f"{self.names[i]}: member watch: {self.watch_error[i]}")

    def log_tail(self, i, lines=15):
        try:
            with open(os.path.join(self.tmp, f"{self.names[i]}.log"), "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""

    def http_addr(self, i):
        host, port = self.info[i]["http"].split("://", 1)[1].rsplit(":", 1)
        return host, int(port)

    def _open_member_watch(self, i, since):
        name = self.names[i]

        def on_event(etype, eid, data, t):
            if etype != "message":
                return
            ev = json.loads(data)
            if ev.get("type") == "member":
                m = ev["member"]
                self.last_rev[name] = ev["revision"]
                self.tracker.apply(name, m["name"], m["status"], t)

        host, port = self.http_addr(i)
        s = SSE(host, port, f"/v1/watch/members?since={since}", on_event, f"members-{name}")
        self.member_streams[name] = s
        s.opened.wait(10)
        if s.status != 200:
            raise RuntimeError(f"{name}: member watch failed: {s.error}")

    def start(self, join_timeout):
        t0 = time.monotonic()
        deadline = t0 + join_timeout
        probe = self.tracker.probe(self.names, all_alive(self.names), t0=t0)
        self._spawn(0, None)
        self._wait_ready(0, deadline)
        info = self.info[0]
        listen = info["listen"]
        if "/p2p/" not in listen:
            listen += "/p2p/" + info["node_id"]
        t_rest = time.monotonic()
        for i in range(1, self.n):
            self._spawn(i, listen)
        t_spawned = time.monotonic()
        for i in range(1, self.n):
            self._wait_ready(i, deadline)
        t_all_ready = max(self.t_ready)
        join = probe.wait(join_timeout)
        self.tracker.drop(probe)
        raw = probe.raw()
        raw.update({"from_rest_spawn_s": join - (t_rest - t0) if join != INF else INF,
                    "n0_ready_s": t_rest - t0, "all_spawned_s": t_spawned - t0,
                    "all_ready_s": t_all_ready - t0})
        return join, raw

    def pids(self):
        return [p.pid for p in self.procs]

    def pause_observation(self):
        for name, s in self.member_streams.items():
            s.close()
        for s in self.member_streams.values():
            s.done.wait(5)
        self.member_streams = {}

    def resume_observation(self, skip=()):
        for i, name in enumerate(self.names):
            if i not in skip:
                self._open_member_watch(i, self.last_rev.get(name, 0))

    def writes(self, count, interval_s):
        """Write→visible on every node; returns (latencies, raw)."""
        ns, prefix = "bench", "w/"

        def make_on_event(node):
            def on_event(etype, eid, data, t):
                if etype != "message":
                    return
                ev = json.loads(data)
                if ev.get("type") == "kv":
                    with self.kv_lock:
                        self.kv_seen.setdefault(ev["key"], {}).setdefault(node, t)
            return on_event

        for i, name in enumerate(self.names):
            host, port = self.http_addr(i)
            s = SSE(host, port, f"/v1/watch/kv/{ns}?prefix={prefix}", make_on_event(name), f"kv-{name}")
            self.kv_streams.append(s)
        for s in self.kv_streams:
            s.opened.wait(10)
            if s.status != 200:
                raise RuntimeError(f"kv watch failed: {s.error}")
        conns = []
        for i in range(self.n):
            host, port = self.http_addr(i)
            conns.append(http.client.HTTPConnection(host, port, timeout=30))
        sent = {}
        acks = {}
        try:
            t_next = time.monotonic()
            for k in range(count):
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                key = f"{prefix}{k}"
                i = k % self.n
                t_send = time.monotonic()
                status, body = http_request(conns[i], "PUT", f"/v1/kv/{ns}/{key}", body=f"v{k}".encode())
                t_ack = time.monotonic()
                if status // 100 != 2:
                    raise RuntimeError(f"PUT {key} on {self.names[i]}: HTTP {status} {body[:200]!r}")
                sent[key] = t_send
                acks[key] = t_ack - t_send
                t_next = t_send + interval_s
            deadline = time.monotonic() + WRITE_TIMEOUT_S
            while time.monotonic() < deadline:
                with self.kv_lock:
                    if all(len(self.kv_seen.get(k, {})) == self.n for k in sent):
                        break
                time.sleep(0.05)
        finally:
            for c in conns:
                c.close()
            for s in self.kv_streams:
                s.close()
            self.kv_streams = []
        lat = []
        missing = 0
        with self.kv_lock:
            for key, t_send in sent.items():
                seen = self.kv_seen.get(key, {})
                if len(seen) == self.n:
                    lat.append(max(seen.values()) - t_send)
                else:
                    lat.append(INF)
                    missing += 1
        return lat, {"writes": count, "writes_missing": missing,
                     "latencies_s": lat, "put_ack_s": [acks[k] for k in sent]}


# ------------------------------------------------------------ Serf

def free_ports(count):
    """Ports free for TCP and UDP on 127.0.0.1 (held until all are chosen)."""
    held, ports = [], []
    try:
        while len(ports) < count:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                u.close()
                held.append(t)
                continue
            held += [t, u]
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


class SerfCluster:
    kind = "serf"
    suspect_statuses = ("failed", "left")
    dead_statuses = ("failed", "left")

    EVENTS = {"EventMemberJoin:": "alive", "EventMemberUpdate:": "alive",
              "EventMemberFailed:": "failed", "EventMemberLeave:": "left",
              "EventMemberReap:": None}

    def __init__(self, binary, n, args):
        self.binary = binary
        self.n = n
        self.args = args
        self.names = [f"n{i}" for i in range(n)]
        self.tmp = make_tmpdir(f"bench-serf-{n}-")
        self.tracker = Tracker(self.names)
        self.procs = [None] * n
        self.streaming = [threading.Event() for _ in range(n)]
        self.ports = free_ports(2 * n)
        self.suspect_log = {}  # member -> first time any agent logged "Suspect"
        self.tails = [[] for _ in range(n)]

    def _read_stdout(self, i, p):
        name = self.names[i]
        with open(os.path.join(self.tmp, f"{name}.log"), "wb") as log:
            for raw in p.stdout:
                t = time.monotonic()
                log.write(raw)
                line = raw.decode("utf-8", "replace")
                tail = self.tails[i]
                tail.append(line)
                del tail[:-15]
                if "Log data will now stream in" in line:
                    self.streaming[i].set()
                    continue
                if "serf: EventMember" in line:
                    words = line.split()
                    for j, w in enumerate(words):
                        if w in self.EVENTS and j + 1 < len(words):
                            self.tracker.apply(name, words[j + 1], self.EVENTS[w], t)
                            break
                elif "memberlist: Suspect " in line:
                    words = line.split()
                    j = words.index("Suspect")
                    if j + 1 < len(words):
                        self.suspect_log.setdefault(words[j + 1], t)
        self.streaming[i].set()

    def _spawn(self, i, join):
        cmd = [self.binary, "agent", f"-node={self.names[i]}",
               f"-bind=127.0.0.1:{self.ports[2 * i]}",
               f"-rpc-addr=127.0.0.1:{self.ports[2 * i + 1]}"]
        if join:
            cmd.append(f"-join={join}")
        p = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs[i] = p
        threading.Thread(target=self._read_stdout, args=(i, p), daemon=True,
                         name=f"stdout-{self.names[i]}").start()

    def log_tail(self, i):
        return "".join(self.tails[i])

    def start(self, join_timeout):
        t0 = time.monotonic()
        deadline = t0 + join_timeout
        probe = self.tracker.probe(self.names, all_alive(self.names), t0=t0)
        self._spawn(0, None)
        if not self.streaming[0].wait(max(0.0, deadline - time.monotonic())) or self.procs[0].poll() is not None:
            raise RuntimeError(f"serf n0 did not start:\n{self.log_tail(0)}")
        t_rest = time.monotonic()
        for i in range(1, self.n):
            self._spawn(i, f"127.0.0.1:{self.ports[0]}")
        join = probe.wait(join_timeout)
        self.tracker.drop(probe)
        for i, p in enumerate(self.procs):
            if p.poll() is not None:
                raise RuntimeError(f"serf {self.names[i]} exited (code {p.returncode}):\n{self.log_tail(i)}")
        raw = probe.raw()
        raw.update({"from_rest_spawn_s": join - (t_rest - t0) if join != INF else INF,
                    "n0_ready_s": t_rest - t0})
        return join, raw

    def pids(self):
        return [p.pid for p in self.procs]

    def pause_observation(self):
        pass  # stdout pipes: no network traffic

    def resume_observation(self, skip=()):
        pass


# ------------------------------------------------------------ one run

def idle_window(cluster, settle_s, idle_s):
    time.sleep(settle_s)
    pids = cluster.pids()
    lo0 = lo_counters()
    cpu0 = [cpu_ticks(p) for p in pids]
    t0 = time.monotonic()
    time.sleep(idle_s)
    lo1 = lo_counters()
    cpu1 = [cpu_ticks(p) for p in pids]
    dt = time.monotonic() - t0
    rss = [rss_kib(p) for p in pids]
    n = len(pids)
    tx = lo1["tx_bytes"] - lo0["tx_bytes"]
    cpu = sum(b - a for a, b in zip(cpu0, cpu1)) / CLK_TCK
    return {
        "window_s": dt,
        "lo_tx_bytes": tx,
        "lo_rx_bytes": lo1["rx_bytes"] - lo0["rx_bytes"],
        "lo_tx_packets": lo1["tx_packets"] - lo0["tx_packets"],
        "idle_bytes_per_node_per_s": tx / n / dt,
        "cpu_s_total": cpu,
        "cpu_pct_per_node": 100.0 * cpu / n / dt,
        "cpu_s_per_process": [(b - a) / CLK_TCK for a, b in zip(cpu0, cpu1)],
        "rss_kib_per_process": rss,
        "rss_kib_median": statistics.median(rss),
        "rss_kib_max": max(rss),
    }


def baseline_lo(secs):
    a = lo_counters()
    t = time.monotonic()
    time.sleep(secs)
    b = lo_counters()
    return (b["tx_bytes"] - a["tx_bytes"]) / (time.monotonic() - t)


def failures(cluster, args):
    n = cluster.n
    tr = cluster.tracker
    out = {}
    live = set(range(n))
    # 6. kill -9
    victim = n - 1
    observers = [cluster.names[i] for i in live if i != victim]
    target = cluster.names[victim]
    tr.faulted.add(target)
    t_kill = time.monotonic()
    suspect = tr.probe(observers, status_in(target, cluster.suspect_statuses), t0=t_kill)
    dead = tr.probe(observers, status_in(target, cluster.dead_statuses), t0=t_kill)
    os.killpg(cluster.procs[victim].pid, signal.SIGKILL)
    live.discard(victim)
    out["kill_suspect_s"] = suspect.wait(args.detect_timeout)
    out["kill_dead_s"] = dead.wait(args.detect_timeout)
    out["kill_raw"] = {"node": target, "suspect": suspect.raw(), "dead": dead.raw()}
    if getattr(cluster, "suspect_log", None) is not None and target in cluster.suspect_log:
        out["kill_raw"]["serf_first_suspect_logged_s"] = cluster.suspect_log[target] - t_kill
    tr.drop(suspect)
    tr.drop(dead)
    # 7. SIGSTOP / SIGCONT
    if n < 3:
        return out
    stopped = n - 2
    target = cluster.names[stopped]
    observers = [cluster.names[i] for i in live if i != stopped]
    tr.faulted.add(target)
    t_stop = time.monotonic()
    suspect = tr.probe(observers, status_in(target, cluster.suspect_statuses), t0=t_stop)
    dead = tr.probe(observers, status_in(target, cluster.dead_statuses), t0=t_stop)
    pgid = cluster.procs[stopped].pid
    os.killpg(pgid, signal.SIGSTOP)
    try:
        out["stop_suspect_s"] = suspect.wait(args.detect_timeout)
        if args.stop_until == "dead":
            out["stop_dead_s"] = dead.wait(args.detect_timeout)
    finally:
        t_cont = time.monotonic()
        alive = tr.probe(observers, status_in(target, ("alive",)), t0=t_cont)
        os.killpg(pgid, signal.SIGCONT)
    out["stop_alive_again_s"] = alive.wait(args.detect_timeout)
    out["stop_raw"] = {"node": target, "suspect": suspect.raw(), "dead": dead.raw(),
                       "alive_again": alive.raw(), "stopped_for_s": t_cont - t_stop,
                       "cont_after": args.stop_until}
    if getattr(cluster, "suspect_log", None) is not None and target in cluster.suspect_log:
        out["stop_raw"]["serf_first_suspect_logged_s"] = cluster.suspect_log[target] - t_stop
    tr.drop(suspect)
    tr.drop(dead)
    tr.drop(alive)
    return out


def percentile(values, q):
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, int(-(-q * len(v) // 100)) - 1))  # nearest rank
    return v[k]


def run_once(kind, binary, n, args, sample):
    """One cluster of one system; fills `sample` (partly, if it fails)."""
    cls = StarlingCluster if kind == "starling" else SerfCluster
    sample.update({"system": kind, "n": n,
                   "started": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    if not args.in_netns:
        base = baseline_lo(args.baseline_secs)
        sample["lo_baseline_bytes_per_s"] = base
        if base > 1000:
            print(f"  warning: {base:,.0f} B/s on lo before the cluster started (other programs): "
                  "the idle bytes figure includes it; use --netns on (root) or a quiet machine",
                  flush=True)
    cluster = cls(binary, n, args)
    try:
        sample["join_s"] = INF  # until it is known
        join, raw = cluster.start(args.join_timeout)
        sample["join_s"] = join
        sample["join_raw"] = raw
        if join == INF:
            raise RuntimeError(f"{kind} N={n}: not every node saw all {n} members alive "
                               f"within {args.join_timeout:g} s ({raw['reached']}/{n} did)")
        cluster.pause_observation()
        settle = args.settle_secs if args.settle_secs is not None else max(30.0, 3.0 * n)
        window = args.idle_secs if args.idle_secs is not None else max(20.0, 2.0 * n)
        sample.update(idle_window(cluster, settle, window))
        cluster.resume_observation()
        if kind == "starling":
            # On the settled cluster (after the idle window, so the window
            # holds no write traffic): right after a join the machine is
            # still busy with it, and the writes measured that instead.
            lat, wraw = cluster.writes(args.writes, args.write_interval_ms / 1000.0)
            sample["write_p50_s"] = percentile(lat, 50)
            sample["write_p99_s"] = percentile(lat, 99)
            sample["write_raw"] = wraw
        sample.update(failures(cluster, args))
        sample["false_suspicions"] = cluster.tracker.false_suspicions
        return sample
    except BaseException as e:
        sample["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        kill_procs([p for p in cluster.procs if p is not None])
        if args.keep_logs:
            keep = os.path.join(args.out, f"logs-{kind}-{n}-{sample['started'][:19].replace(':', '')}")
            shutil.copytree(cluster.tmp, keep, ignore=shutil.ignore_patterns("*.redb", "identity", "LOCK"),
                            dirs_exist_ok=True)
        remove_tmpdir(cluster.tmp)


# ------------------------------------------------------------ report

METRICS = [
    # key, label, unit kind
    ("join_s", "join: all N alive on every node", "time"),
    ("write_p50_s", "write->visible on every node p50", "time"),
    ("write_p99_s", "write->visible on every node p99", "time"),
    ("idle_bytes_per_node_per_s", "idle wire bytes/node/s (lo tx)", "bytes"),
    ("cpu_pct_per_node", "idle CPU per node (% of a core)", "pct"),
    ("rss_kib_median", "RSS per process (median)", "kib"),
    ("kill_suspect_s", "kill -9: suspect/failed everywhere", "time"),
    ("kill_dead_s", "kill -9: dead everywhere", "time"),
    ("stop_suspect_s", "SIGSTOP: suspect/failed everywhere", "time"),
    ("stop_dead_s", "SIGSTOP: dead everywhere (--stop-until dead)", "time"),
    ("stop_alive_again_s", "SIGCONT: alive again everywhere", "time"),
    ("false_suspicions", "false suspicions (whole run, unfaulted nodes)", "count"),
]


def timeout_for(key, args):
    if key == "join_s":
        return args.join_timeout
    if key.startswith("write"):
        return WRITE_TIMEOUT_S
    return args.detect_timeout


def fmt(value, unit, timeout):
    if value is None:
        return "-"
    if value == INF:
        return f">{timeout:g} s"
    if unit == "time":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "bytes":
        return f"{value:,.0f} B/s"
    if unit == "pct":
        return f"{value:.2f} %"
    if unit == "kib":
        return f"{value / 1024:.1f} MiB"
    if unit == "size":
        return f"{value / 1e6:.2f} MB"
    return str(value)


def ratio(a, b):
    if a is None or b is None or a == INF or b == INF or b == 0:
        return "-"
    return f"{a / b:.2f}"


def median_of(samples, key):
    vals = [s[key] for s in samples if key in s and s[key] is not None]
    if not vals:
        return None
    vals.sort()
    m = len(vals)
    if m % 2:
        return vals[m // 2]
    a, b = vals[m // 2 - 1], vals[m // 2]
    return INF if INF in (a, b) else (a + b) / 2


def table(rows, headers):
    widths = [max(len(str(r[c])) for r in rows + [headers]) for c in range(len(headers))]
    out = ["  ".join(str(h).ljust(widths[c]) if c == 0 else str(h).rjust(widths[c])
                     for c, h in enumerate(headers))]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(str(v).ljust(widths[c]) if c == 0 else str(v).rjust(widths[c])
                             for c, v in enumerate(r)))
    return "\n".join(out)


def jsonable(x):
    if isinstance(x, float) and x == INF:
        return "inf"
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [jsonable(v) for v in x]
    return x


def stripped_size(binary):
    if not binary or not shutil.which("strip"):
        return None
    d = make_tmpdir("bench-strip-")
    try:
        dst = os.path.join(d, "bin")
        shutil.copyfile(binary, dst)
        subprocess.run(["strip", dst], check=True, capture_output=True, timeout=120)
        return os.path.getsize(dst)
    except (subprocess.SubprocessError, OSError):
        return None
    finally:
        remove_tmpdir(d)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def version_of(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return " / ".join((r.stdout or r.stderr).strip().splitlines())
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


# ------------------------------------------------------------ main

def default_starling():
    target = os.environ.get("CARGO_TARGET_DIR") or "target"
    return os.path.join(target, "release", "starling")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--starling", default=default_starling(),
                    help="starling binary (default $CARGO_TARGET_DIR/release/starling or ./target/release/starling)")
    ap.add_argument("--serf", default=None, help="serf binary (default: serf on PATH)")
    ap.add_argument("--nodes", default="5,20,50", help="cluster sizes, comma-separated (default 5,20,50)")
    ap.add_argument("--runs", type=int, default=3, help="runs per size; the median is reported (default 3)")
    ap.add_argument("--idle-secs", type=float, default=None,
                    help="idle window (default: 2 s per node, at least 20 s)")
    ap.add_argument("--settle-secs", type=float, default=None,
                    help="wait before the idle window (default: 3 s per node, at least 30 s)")
    ap.add_argument("--writes", type=int, default=100, help="writes for write->visible (default 100)")
    ap.add_argument("--write-interval-ms", type=float, default=20.0, help="between writes (default 20)")
    ap.add_argument("--join-timeout", type=float, default=60.0, help="bound on join (default 60 s)")
    ap.add_argument("--detect-timeout", type=float, default=30.0, help="bound on each detection (default 30 s)")
    ap.add_argument("--baseline-secs", type=float, default=2.0,
                    help="lo baseline sample before each cluster when not in a private netns (default 2)")
    ap.add_argument("--stop-until", choices=["suspect", "dead"], default="suspect",
                    help="SIGCONT the stopped node once every other node shows it suspect (default) "
                         "or dead (Serf: failed in both cases)")
    ap.add_argument("--only", choices=["starling", "serf"], help="benchmark only one system")
    ap.add_argument("--out", help="directory for results.json (default: a new temporary directory)")
    ap.add_argument("--keep-going", action="store_true", help="record a failed run and go on")
    ap.add_argument("--keep-logs", action="store_true", help="copy every node's log into --out")
    ap.add_argument("--netns", choices=["auto", "on", "off"], default="auto",
                    help="run in a private network namespace (auto: when root; default auto)")
    args = ap.parse_args(argv)
    try:
        args.node_counts = [int(x) for x in args.nodes.split(",") if x.strip()]
    except ValueError:
        ap.error("--nodes takes comma-separated integers")
    if not args.node_counts or min(args.node_counts) < 2:
        ap.error("--nodes: every N must be at least 2")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.setswitchinterval(0.001)
    systems = []
    notes = []
    starling = os.path.abspath(args.starling)
    if args.only in (None, "starling"):
        if not os.access(starling, os.X_OK):
            sys.exit(f"starling binary not found or not executable: {starling} (build it or pass --starling)")
        systems.append(("starling", starling))
    serf = args.serf or shutil.which("serf")
    if args.only in (None, "serf"):
        if serf and os.access(serf, os.X_OK):
            serf = os.path.abspath(serf)
            systems.insert(0, ("serf", serf))
        else:
            note = "serf not found (install it, e.g. apt-get install serf, or pass --serf): Serf skipped"
            print("note: " + note)
            notes.append(note)
            serf = None
            if args.only == "serf":
                sys.exit(1)
    systems.sort(key=lambda s: s[0] != "starling")  # Starling first, then Serf

    args.in_netns = False
    netns_note = "shared network namespace: lo counters include any other loopback traffic"
    if args.netns != "off":
        ok, why = enter_private_netns()
        if ok:
            args.in_netns = True
            netns_note = why
        elif args.netns == "on":
            sys.exit(f"--netns on: cannot enter a private network namespace: {why}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    else:
        args.out = tempfile.mkdtemp(prefix="bench-cluster-out-")
    print(f"results: {args.out}/results.json")
    print(f"loopback: {netns_note}")

    meta = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "host": platform.node(), "kernel": platform.release(), "nproc": os.cpu_count(),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "python": platform.python_version(),
        "starling": starling if ("starling", starling) in systems else None,
        "starling_version": version_of([starling, "--version"]) if ("starling", starling) in systems else None,
        "starling_sha256": sha256_of(starling) if ("starling", starling) in systems else None,
        "serf": serf, "serf_version": version_of([serf, "version"]) if serf else None,
        "serf_package": version_of(["dpkg-query", "-W", "-f", "${Package} ${Version}", "serf"])
        if serf and shutil.which("dpkg-query") else None,
        "netns": netns_note,
        "options": {k: v for k, v in vars(args).items() if k != "node_counts"},
        "notes": notes,
    }
    sizes = {}
    for kind, binary in systems:
        sizes[kind] = stripped_size(binary)
    meta["stripped_size_bytes"] = sizes
    results = {kind: {} for kind, _ in systems}
    failed = False

    def save():
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(jsonable({"meta": meta, "results": results}), f, indent=1)

    try:
        for n in args.node_counts:
            for run in range(args.runs):
                for kind, binary in systems:
                    print(f"[{time.strftime('%H:%M:%S')}] N={n} run {run + 1}/{args.runs}: {kind} ...",
                          flush=True)
                    entry = results[kind].setdefault(str(n), {"samples": [], "median": {}})
                    s = {}
                    try:
                        run_once(kind, binary, n, args, s)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001
                        print(f"  {kind} N={n} run {run + 1} failed: {type(e).__name__}: {e}", flush=True)
                        s["error"] = f"{type(e).__name__}: {e}"
                        entry["samples"].append(s)
                        failed = True
                        save()
                        if not args.keep_going:
                            raise
                        continue
                    entry["samples"].append(s)
                    print("  " + ", ".join(
                        f"{k}={fmt(s.get(k), u, timeout_for(k, args))}" for k, _, u in METRICS
                        if k in s), flush=True)
                    save()
            summarize(results)
            save()
    finally:
        meta["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
        summarize(results)
        save()
        cleanup()
        print_report(results, meta, args, systems)
    return 1 if failed else 0


def summarize(results):
    """Medians per system and N. A failed run counts for the figures it got
    (a cluster that did not form counts as a join timeout)."""
    for per_n in results.values():
        for entry in per_n.values():
            entry["median"] = {k: median_of(entry["samples"], k) for k, _, _ in METRICS}
            entry["runs_ok"] = sum(1 for s in entry["samples"] if "error" not in s)
            entry["runs"] = len(entry["samples"])


def print_report(results, meta, args, systems):
    kinds = [k for k, _ in systems]
    print()
    print(f"Cluster benchmark, {meta['date_utc'][:16]} UTC, {meta['nproc']} CPUs, "
          f"median of --runs {args.runs}; starling: {meta.get('starling_version')}; "
          f"serf: {meta.get('serf_version') or 'not run'}")
    print(f"loopback: {meta['netns']}")
    for n in args.node_counts:
        rows = []
        for key, label, unit in METRICS:
            to = timeout_for(key, args)
            sv = results.get("serf", {}).get(str(n), {}).get("median", {}).get(key)
            tv = results.get("starling", {}).get(str(n), {}).get("median", {}).get(key)
            if sv is None and tv is None and key == "stop_dead_s":
                continue
            if "serf" in kinds and key.startswith("write"):
                s_txt, r_txt = "n/a (no KV)", "-"
            elif key == "kill_dead_s" and "serf" in kinds:
                s_txt = fmt(sv, unit, to) + " (failed)" if sv is not None else "-"
                r_txt = ratio(tv, sv)
            else:
                s_txt, r_txt = fmt(sv, unit, to), ratio(tv, sv)
            row = [label]
            if "serf" in kinds:
                row.append(s_txt)
            if "starling" in kinds:
                row.append(fmt(tv, unit, to))
            if len(kinds) == 2:
                row.append(r_txt)
            rows.append(row)
        headers = ["N = %d" % n] + (["Serf"] if "serf" in kinds else []) + \
            (["Starling"] if "starling" in kinds else []) + (["Starling/Serf"] if len(kinds) == 2 else [])
        runs_ok = {k: results.get(k, {}).get(str(n), {}).get("runs_ok", 0) for k in kinds}
        print()
        print(table(rows, headers))
        print("runs ok: " + ", ".join(f"{k} {v}/{args.runs}" for k, v in runs_ok.items()))
        for k in kinds:
            for smp in results.get(k, {}).get(str(n), {}).get("samples", []):
                if "error" in smp:
                    print(f"  {k} failed run: {smp['error'].splitlines()[0]}")
    sizes = meta.get("stripped_size_bytes", {})
    row = ["stripped binary size"]
    if "serf" in kinds:
        row.append(fmt(sizes.get("serf"), "size", 0))
    if "starling" in kinds:
        row.append(fmt(sizes.get("starling"), "size", 0))
    if len(kinds) == 2:
        row.append(ratio(sizes.get("starling"), sizes.get("serf")))
    headers = [""] + (["Serf"] if "serf" in kinds else []) + \
        (["Starling"] if "starling" in kinds else []) + (["Starling/Serf"] if len(kinds) == 2 else [])
    print()
    print(table([row], headers))
    if "serf" in kinds:
        print("\nSerf has no key/value store: no write->visible figures. Serf's first visible "
              "state after alive is 'failed' (memberlist's suspicion is internal), so its "
              "kill -9 'dead' figure is the same as 'failed'.")
    print(f"\nraw samples and medians: {os.path.join(args.out, 'results.json')}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        cleanup()
        sys.exit(130)
