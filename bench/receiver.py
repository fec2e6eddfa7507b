#!/usr/bin/env python3
"""A fast counting HTTP/1.1 receiver standing in for Slack (stdlib asyncio, keep-alive, pipelining).

    python3 bench/receiver.py --port 9100

Every request to any path not listed below is a *delivery*: it is counted, the execution id and
created_at it carries (the bench workflow's text holds `bench-id=<execution.id> bench-at=<created_at>`)
are recorded with the arrival time, and it gets `200 ok` like a Slack incoming webhook.

  /silent/...       never answered; its arrival, and when the sender closed the connection, are
                    recorded per execution id (the cancel scenario)
  GET  /_stats      {"count", "unique", "duplicates", "first_ts", "last_ts", "bytes", "held", "silent", "hold"}
                    (count/first_ts/last_ts/bytes as the shared mock_receiver.py has them)
  POST /_reset      forget every delivery and silent request
  POST /_hold?on=1  hold mode: deliveries are recorded as `held`, not counted, and not answered;
  POST /_hold?on=0  back to normal: held connections are closed unanswered (a receiver that died)
  GET  /_latency?from=T0&to=T1   accept-to-delivered ms (arrival - created_at) of the first
                    deliveries that arrived in [T0, T1): {"n", "p50_ms", "p90_ms", "p99_ms", "max_ms"}
  GET  /_series?from=T0&to=T1&step=1   deliveries per step in [T0, T1): {"counts": [...]}
  GET  /_ids        ids delivered (first arrivals), and the ids delivered more than once
  GET  /_silent?id=ID   {"arrived": t, "closed": t | null} of a silent request

Timestamps are time.time() on this machine, the clock the service's created_at comes from. created_at
has millisecond resolution, so latencies are over-estimated by less than 1 ms."""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

MARK = re.compile(rb"bench-id=(ex_[0-9a-f]+) bench-at=([0-9T:.+\-]+Z?)")
MAX_HEAD = 64 * 1024


class State:
    def __init__(self) -> None:
        self.reset()
        self.hold = False

    def reset(self) -> None:
        self.count = 0
        self.bytes = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.arrivals: dict[bytes, tuple[float, bytes]] = {}  # id -> (first arrival, created_at text)
        self.dupes: dict[bytes, int] = {}
        self.held: list[asyncio.Transport] = []
        self.silent: dict[bytes, list[float | None]] = {}  # id -> [arrived, closed]

    def stats(self) -> dict:
        return {"count": self.count, "unique": len(self.arrivals), "duplicates": sum(self.dupes.values()),
                "first_ts": self.first_ts, "last_ts": self.last_ts, "bytes": self.bytes,
                "held": len(self.held), "silent": len(self.silent), "hold": self.hold}

    def latency(self, start: float, end: float) -> dict:
        values = sorted((arrived - _epoch(created)) * 1000 for arrived, created in self.arrivals.values()
                        if start <= arrived < end and created)
        if not values:
            return {"n": 0}
        pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))], 2)  # noqa: E731
        return {"n": len(values), "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99),
                "max_ms": round(values[-1], 2)}

    def series(self, start: float, end: float, step: float) -> list[int]:
        """Deliveries (first arrivals) per `step` s from `start` to `end`."""
        buckets = [0] * max(1, int((end - start) // step))
        for arrived, _ in self.arrivals.values():
            index = int((arrived - start) // step)
            if 0 <= index < len(buckets):
                buckets[index] += 1
        return buckets


def _epoch(text: bytes) -> float:
    return datetime.fromisoformat(text.decode().replace("Z", "+00:00")).timestamp()


STATE = State()


class Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.silent_ids: list[bytes] = []
        self.parked = False  # a request here will never be answered: ignore whatever follows

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        now = time.time()
        for ident in self.silent_ids:
            record = STATE.silent.get(ident)
            if record is not None and record[1] is None:
                record[1] = now

    def data_received(self, data: bytes) -> None:
        if self.parked:
            return
        self.buf += data
        while not self.parked:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = head[0].split(" ", 2)
            except ValueError:
                self.transport.close()
                return
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", ""):
                self._reply(400, b"chunked bodies are not supported", close=True)
                return
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            connection = headers.get("connection", "").lower()
            close = connection == "close" or (version.upper() == "HTTP/1.0" and connection != "keep-alive")
            self.handle(method, target, body, close)
            if close:
                return

    def handle(self, method: str, target: str, body: bytes, close: bool) -> None:
        url = urlsplit(target)
        path, query = url.path, {k: v[0] for k, v in parse_qs(url.query).items()}
        if path.startswith("/_"):
            self._control(method, path, query, close)
            return
        now = time.time()
        found = MARK.search(body)
        ident, created = (found.group(1), found.group(2)) if found else (b"", b"")
        if path.startswith("/silent"):
            STATE.silent.setdefault(ident, [now, None])
            self.silent_ids.append(ident)
            self.parked = True
            return
        if STATE.hold:
            STATE.held.append(self.transport)
            self.parked = True
            return
        STATE.count += 1
        STATE.bytes += len(body)
        STATE.first_ts = STATE.first_ts or now
        STATE.last_ts = now
        if ident in STATE.arrivals:
            STATE.dupes[ident] = STATE.dupes.get(ident, 0) + 1
        elif ident:
            STATE.arrivals[ident] = (now, created)
        self._reply(200, b"ok", close=close, ctype=b"text/plain")

    def _control(self, method: str, path: str, query: dict[str, str], close: bool) -> None:
        if path == "/_stats":
            answer = STATE.stats()
        elif path == "/_reset" and method == "POST":
            hold = STATE.hold
            for transport in STATE.held:
                transport.close()
            STATE.reset()
            STATE.hold = hold
            answer = {"reset": True}
        elif path == "/_hold" and method == "POST":
            STATE.hold = query.get("on", "1") not in ("0", "false")
            if not STATE.hold:
                for transport in STATE.held:
                    transport.close()
                STATE.held.clear()
            answer = {"hold": STATE.hold}
        elif path == "/_latency":
            answer = STATE.latency(float(query.get("from", 0)), float(query.get("to", 1e12)))
        elif path == "/_series":
            answer = {"counts": STATE.series(float(query["from"]), float(query["to"]), float(query.get("step", 1)))}
        elif path == "/_ids":
            answer = {"ids": [i.decode() for i in STATE.arrivals],
                      "duplicated": {i.decode(): n for i, n in STATE.dupes.items()}}
        elif path == "/_silent":
            record = STATE.silent.get(query.get("id", "").encode())
            answer = {"arrived": record[0], "closed": record[1]} if record else {}
        else:
            self._reply(404, b'{"error": "unknown control path"}', close=close)
            return
        self._reply(200, json.dumps(answer).encode(), close=close)

    def _reply(self, status: int, body: bytes, *, close: bool, ctype: bytes = b"application/json") -> None:
        head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status, b"OK" if status == 200 else b"Error", ctype, len(body))
        self.transport.write(head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body)
        if close:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Connection, host, port, backlog=4096)
    print(f"receiver on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
