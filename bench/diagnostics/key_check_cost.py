"""What the API key check costs per request, on a running Loraboard.

    loraboard keys create bench      # prints a stored key, once
    python -m bench key-check-cost --url http://127.0.0.1:8000 \
        --env-key "$LORABOARD_API_KEY" --stored-key lb-...

It times GET /healthz with two keys: LORABOARD_API_KEY (compared in memory, no database)
and a key made with `loraboard keys create` (looked up by its hash in api_keys on every
request, so a revocation applies to the next one). The difference between the two is
the look-up's cost. Sequential requests show the latency; concurrent ones the throughput.
With --server-pid (the server on this machine), the server's CPU time per request too:
the steadiest of the figures on a machine shared with other work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

import httpx

WARM_UP_REQUESTS = 200


def cpu_seconds(pid: int | None) -> float:
    """The process's user + system CPU time (Linux /proc); 0 without a pid."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_requests(
    url: str, key: str, total: int, concurrency: int, server_pid: int | None
) -> dict[str, float]:
    latencies: list[float] = []
    remaining = total
    headers = {"Authorization": f"Bearer {key}"}

    async def one_client(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            response = await client.get("/healthz", headers=headers)
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(WARM_UP_REQUESTS):  # the server's first requests import and compile
            await client.get("/healthz", headers=headers)
        started, cpu_before = time.perf_counter(), cpu_seconds(server_pid)
        await asyncio.gather(*(one_client(client) for _ in range(concurrency)))
        elapsed, cpu_used = time.perf_counter() - started, cpu_seconds(server_pid) - cpu_before
    ordered = sorted(latencies)
    report = {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2),
        "requests_per_s": round(len(ordered) / elapsed, 1),
    }
    if server_pid is not None:
        report["server_cpu_ms_per_request"] = round(cpu_used * 1000 / len(ordered), 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--env-key", required=True, help="LORABOARD_API_KEY (no database look-up)")
    parser.add_argument("--stored-key", required=True, help="a key from `loraboard keys create`")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--server-pid", type=int, help="the server's process id, for its CPU time")
    args = parser.parse_args()
    report = {
        f"{name}, {concurrency} at a time": asyncio.run(
            timed_requests(args.url, key, args.requests, concurrency, args.server_pid)
        )
        for concurrency in args.concurrency
        for name, key in (("env key", args.env_key), ("stored key", args.stored_key))
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
