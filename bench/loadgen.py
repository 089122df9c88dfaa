"""HTTP load generator for ``posthog-customerio serve`` (run as its own process).

    python bench/loadgen.py --url http://127.0.0.1:PORT/webhook --bodies FILE closed --connections 8 --batch 100
    python bench/loadgen.py --url http://127.0.0.1:PORT/webhook --bodies FILE open --rate 2000 --duration 10

``FILE`` holds one webhook body (JSON object) per line. ``closed``: every body once,
as fast as the server answers, ``--batch`` bodies per POST (a JSON list), each of
``--connections`` keep-alive connections waiting for its answer before the next POST;
a 503 or a broken connection is retried (as PostHog does), so every event is
accepted once. ``open``: one body per POST at a fixed offered rate for a bounded
duration; latency is measured from the moment each request was *scheduled* (no
coordinated omission). Prints one JSON object. Only loopback URLs are accepted.

A minimal HTTP/1.1 client on asyncio streams keeps the generator's own cost far
below the server's (httpx would need most of a core for 2,000 requests/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str]) -> None:
        self.host, self.port, self.path = host, port, path
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{extra}"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def post(self, body: bytes) -> int:
        """POST ``body``; the status code (the connection reopens if it was closed)."""
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"{self.head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"content-length:")
        if at >= 0:
            await self.reader.readexactly(int(lower[at + 15 : lower.find(b"\r\n", at)]))
        else:  # no length: the server closes the connection after the body
            await self.reader.read()
            self.close()
        if b"connection: close" in lower:
            self.close()
        return status


def _target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loadgen only targets loopback addresses")
    return parts.hostname, parts.port or 80, parts.path or "/"


async def closed_loop(
    url: str, bodies: list[bytes], connections: int, batch: int, headers: dict[str, str], max_seconds: float
) -> dict[str, Any]:
    host, port, path = _target(url)
    posts = [
        b"[" + b",".join(bodies[i : i + batch]) + b"]" if batch > 1 else bodies[i] for i in range(0, len(bodies), batch)
    ]
    cursor = iter(range(len(posts)))
    statuses: dict[str, int] = {}
    retries = 0
    deadline = time.monotonic() + max_seconds

    async def worker() -> None:
        nonlocal retries
        conn = Connection(host, port, path, headers)
        for index in cursor:
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("closed loop ran past --max-seconds")
                try:
                    status = await conn.post(posts[index])
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    retries += 1
                    await asyncio.sleep(0.05)
                    continue
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if status == 200:
                    break
                retries += 1
                await asyncio.sleep(0.05)
        conn.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.monotonic() - started
    return {
        "mode": "closed",
        "events": len(bodies),
        "posts": len(posts),
        "batch": batch,
        "seconds": seconds,
        "events_per_s": len(bodies) / seconds,
        "statuses": statuses,
        "retries": retries,
        "started_at": time.time() - seconds,
    }


async def open_loop(
    url: str, bodies: list[bytes], rate: float, duration: float, connections: int, headers: dict[str, str]
) -> dict[str, Any]:
    host, port, path = _target(url)
    total = min(len(bodies), int(rate * duration))
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        conn = Connection(host, port, path, headers)
        await conn.open()
        pool.put_nowait(conn)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    tasks: list[asyncio.Task[None]] = []

    async def one(scheduled: float, body: bytes) -> None:
        nonlocal errors
        conn = await pool.get()
        try:
            status = await conn.post(body)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        except (OSError, asyncio.IncompleteReadError):
            errors += 1
            conn.close()
        finally:
            latencies.append(time.perf_counter() - scheduled)
            pool.put_nowait(conn)

    started = time.perf_counter()
    for index in range(total):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, bodies[index])))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 60)
    seconds = time.perf_counter() - started
    while not pool.empty():
        pool.get_nowait().close()
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else float("nan")

    return {
        "mode": "open",
        "offered_rate": rate,
        "requests": total,
        "seconds": seconds,
        "achieved_rate": total / seconds,
        "statuses": statuses,
        "errors": errors,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": 1000 * ordered[-1] if ordered else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[], help="Name: value")
    sub = parser.add_subparsers(dest="mode", required=True)
    closed = sub.add_parser("closed")
    closed.add_argument("--connections", type=int, default=8)
    closed.add_argument("--batch", type=int, default=1)
    closed.add_argument("--max-seconds", type=float, default=600)
    opened = sub.add_parser("open")
    opened.add_argument("--rate", type=float, required=True)
    opened.add_argument("--duration", type=float, default=10)
    opened.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    bodies = [line.rstrip(b"\n") for line in args.bodies.read_bytes().splitlines() if line.strip()]
    headers = dict(h.split(": ", 1) for h in args.header)
    if args.mode == "closed":
        result = asyncio.run(closed_loop(args.url, bodies, args.connections, args.batch, headers, args.max_seconds))
    else:
        if args.duration > 120:
            raise SystemExit("--duration is capped at 120 s")
        result = asyncio.run(open_loop(args.url, bodies, args.rate, args.duration, args.connections, headers))
    json.dump(result, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
