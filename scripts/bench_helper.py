#!/usr/bin/env python3
"""Helpers for scripts/bench-dns.sh and scripts/bench-checks.sh.

  bench_helper.py register HTTP_ADDR NS SVC COUNT KIND [TARGET] [INTERVAL_MS]
      PUT COUNT instances over one keep-alive connection. KIND is `none`
      (no TTL, no checks), `tcp` or `http` (one check each against TARGET,
      host:port).
  bench_helper.py listen PORT MODE
      A loopback listener for the checks: MODE `tcp` accepts and closes,
      `http` answers every request with 200 and closes.
"""
import asyncio
import http.client
import json
import sys


def register(addr, ns, svc, count, kind, target=None, interval_ms=1000):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for i in range(count):
        body = {"address": f"127.0.{(i >> 8) & 255}.{(i & 255) or 1}", "port": 8080}
        if kind == "tcp":
            body["checks"] = [{"tcp": target, "interval_ms": interval_ms, "timeout_ms": 2000}]
        elif kind == "http":
            body["checks"] = [{"http": f"http://{target}/health",
                               "interval_ms": interval_ms, "timeout_ms": 2000}]
        conn.request("PUT", f"/v1/services/{ns}/{svc}/{svc}-{i}",
                     body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status // 100 != 2:
            sys.exit(f"register {svc}-{i}: HTTP {r.status}: {data[:200]!r}")
    conn.close()


async def listen(port, mode):
    async def tcp(reader, writer):
        writer.close()

    async def http_(reader, writer):
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
        except Exception:
            pass
        writer.close()

    server = await asyncio.start_server(tcp if mode == "tcp" else http_,
                                        "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "register":
        a = sys.argv[2:]
        register(a[0], a[1], a[2], int(a[3]), a[4],
                 a[5] if len(a) > 5 else None, int(a[6]) if len(a) > 6 else 1000)
    elif cmd == "listen":
        asyncio.run(listen(int(sys.argv[2]), sys.argv[3]))
    else:
        sys.exit(__doc__)
