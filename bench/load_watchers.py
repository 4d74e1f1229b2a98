"""Load on a running Loraboard: live-run watchers (SSE) and API pollers while a demo run trains.

    python bench/load_watchers.py --url http://127.0.0.1:8000 --key "$LORABOARD_API_KEY" \
        --watchers 200 --pollers 50

It submits a short demo run and trains it twice: once unwatched, once with the watchers
on its page's stream and the pollers reading the job in a loop. It prints the errors,
the pollers' latency percentiles and both runs' tokens/s (the median of the run's
logged tokens_per_second), so the cost of watching shows in training speed too.
tests/functional/test_load.py runs it at a bounded size; RELIABILITY.md records figures.

    python -m bench load --local --stack-cpus 0-7 --client-cpus 8-15

starts a Loraboard of its own instead (server and training worker on the embedded
defaults, in a temporary data dir) on some cores and runs the clients on others: on one
host, the clients then take no CPU time from the server or the run, as on a separate host.
`--worker-cpus` gives the training worker cores of its own too: without a GPU the run is
CPU-bound, and on the server's cores it measures the two sharing a core, not the server.
`--server-workers 4` runs the server as four processes on the one port, and
`--client-processes 8` spreads the clients over eight processes, as the watchers of a real
server are separate browsers: one event loop sending 250 first requests at once queues them
behind each other, and its polls' latency is then its own as much as the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FINAL = {"succeeded", "failed", "cancelled"}
POLL_EVERY_S = 1.0
START_TIMEOUT_S = 120.0


@dataclass
class LoadReport:
    watchers: int
    pollers: int
    poll_latencies_s: list[float] = field(default_factory=list)
    poll_started_s: list[float] = field(default_factory=list)
    """When each poll began, in seconds after the watchers and pollers started."""
    errors: list[str] = field(default_factory=list)
    stream_messages: int = 0
    tokens_per_second_unwatched: float | None = None
    tokens_per_second_watched: float | None = None

    def percentile(self, fraction: float) -> float | None:
        return percentile(self.poll_latencies_s, fraction)

    def as_dict(self) -> dict[str, Any]:
        ratio = None
        if self.tokens_per_second_unwatched and self.tokens_per_second_watched:
            ratio = self.tokens_per_second_watched / self.tokens_per_second_unwatched
        return {
            "watchers": self.watchers,
            "pollers": self.pollers,
            "polls": len(self.poll_latencies_s),
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "stream_messages": self.stream_messages,
            "poll_p50_ms": _ms(self.percentile(0.50)),
            "poll_p99_ms": _ms(self.percentile(0.99)),
            # Without the opening surge: every stream and poller connects in the same instant,
            # and their next requests (1 s later) still arrive together.
            "poll_p99_after_3_s_ms": _ms(
                percentile(
                    [
                        lat
                        for lat, at in zip(self.poll_latencies_s, self.poll_started_s, strict=True)
                        if at >= 3.0
                    ],
                    0.99,
                )
            ),
            # When the tail happened: a burst as 200 streams open at once, or all along.
            "slowest_polls": [
                {"at_s": round(at, 1), "ms": _ms(latency)}
                for latency, at in sorted(
                    zip(self.poll_latencies_s, self.poll_started_s, strict=True), reverse=True
                )[:10]
            ],
            "tokens_per_second_unwatched": self.tokens_per_second_unwatched,
            "tokens_per_second_watched": self.tokens_per_second_watched,
            "watched_over_unwatched": ratio,
        }


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def demo_job(max_steps: int) -> dict[str, Any]:
    hyperparameters = {"max_steps": max_steps, "logging_steps": 5}
    return {
        "model": "demo-tiny-llama",
        "training_file": "demo-antonyms",
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
    }


async def wait_final(client: httpx.AsyncClient, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = (await client.get(f"/v1/fine_tuning/jobs/{job_id}")).json()
        if job["status"] in FINAL:
            return job
        await asyncio.sleep(1)
    raise TimeoutError(f"job {job_id} did not finish in {timeout_s:.0f} s")


async def median_tokens_per_second(client: httpx.AsyncClient, job_id: str) -> float | None:
    events = (await client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1000})).json()[
        "data"
    ]
    rates = [
        event["data"]["tokens_per_second"]
        for event in events
        if event.get("type") == "metrics" and (event.get("data") or {}).get("tokens_per_second")
    ]
    return statistics.median(rates) if rates else None


async def watch(client: httpx.AsyncClient, job_id: str, stop: asyncio.Event, report: LoadReport) -> None:
    """One browser tab on the run's page: its stream, reconnecting when the server ends it."""
    while not stop.is_set():
        try:
            async with client.stream("GET", f"/runs/{job_id}/stream") as response:
                if response.status_code != 200:
                    report.errors.append(f"stream {response.status_code}")
                    return
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        report.stream_messages += 1
                        if line == "event: done":
                            return
                    if stop.is_set():
                        return
        except httpx.HTTPError as error:
            report.errors.append(f"stream {type(error).__name__}")
            return


async def poll(
    client: httpx.AsyncClient, job_id: str, stop: asyncio.Event, report: LoadReport, load_began: float
) -> None:
    """A script waiting for the job: its state once a second, as the openai examples poll."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = await client.get(f"/v1/fine_tuning/jobs/{job_id}")
            report.poll_latencies_s.append(time.monotonic() - started)
            report.poll_started_s.append(started - load_began)
            if response.status_code != 200:
                report.errors.append(f"poll {response.status_code}")
        except httpx.HTTPError as error:
            report.errors.append(f"poll {type(error).__name__}")
        await asyncio.sleep(POLL_EVERY_S)


def _client(url: str, key: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections + 10)
    return httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60, limits=limits
    )


def _crowd(
    client: httpx.AsyncClient,
    job_id: str,
    watchers: int,
    pollers: int,
    stop: asyncio.Event,
    report: LoadReport,
    load_began: float,
) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(watch(client, job_id, stop, report)) for _ in range(watchers)]
    tasks += [asyncio.create_task(poll(client, job_id, stop, report, load_began)) for _ in range(pollers)]
    return tasks


def _crowd_process(
    url: str,
    key: str,
    job_id: str,
    watchers: int,
    pollers: int,
    start: Any,  # multiprocessing Barrier: every process's clients begin in the same instant
    stop: Any,  # multiprocessing Event: the watched run has ended
    results: Any,  # multiprocessing Queue: this process's LoadReport, as a dict of its lists
) -> None:
    """One client process's share of the crowd (its own event loop, as separate browsers have)."""
    report = LoadReport(watchers=watchers, pollers=pollers)

    async def share() -> None:
        async with _client(url, key, watchers + pollers) as client:
            start.wait()
            load_began = time.monotonic()  # system-wide on Linux: the same clock in every process
            stopped = asyncio.Event()
            tasks = _crowd(client, job_id, watchers, pollers, stopped, report, load_began)
            while not stop.is_set():
                await asyncio.sleep(0.1)
            stopped.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(share())
    except BaseException as error:  # the parent must hear of it, not wait for a result forever
        report.errors.append(f"client process {type(error).__name__}: {error}")
    results.put(
        {
            "poll_latencies_s": report.poll_latencies_s,
            "poll_started_s": report.poll_started_s,
            "errors": report.errors,
            "stream_messages": report.stream_messages,
        }
    )


async def _load_from_processes(
    url: str, key: str, job_id: str, report: LoadReport, processes: int, until_final: Any
) -> dict[str, Any]:
    """The watchers and pollers spread over client processes: one event loop opening 250
    connections at once queues its own requests behind each other, and would time itself."""
    context = multiprocessing.get_context("spawn")
    start, stop, results = context.Barrier(processes + 1), context.Event(), context.Queue()
    children = [
        context.Process(
            target=_crowd_process,
            args=(
                url,
                key,
                job_id,
                report.watchers * (index + 1) // processes - report.watchers * index // processes,
                report.pollers * (index + 1) // processes - report.pollers * index // processes,
                start,
                stop,
                results,
            ),
            daemon=True,
        )
        for index in range(processes)
    ]
    for child in children:
        child.start()
    try:
        await asyncio.to_thread(start.wait, START_TIMEOUT_S)
        job: dict[str, Any] = await until_final()
    finally:
        stop.set()
        for _ in children:
            share = await asyncio.to_thread(results.get, True, START_TIMEOUT_S)
            report.poll_latencies_s += share["poll_latencies_s"]
            report.poll_started_s += share["poll_started_s"]
            report.errors += share["errors"]
            report.stream_messages += share["stream_messages"]
        for child in children:
            child.join(timeout=30)
    return job


async def run_load(
    url: str,
    key: str,
    watchers: int,
    pollers: int,
    max_steps: int,
    timeout_s: float,
    client_processes: int = 1,
) -> LoadReport:
    report = LoadReport(watchers=watchers, pollers=pollers)
    async with _client(url, key, watchers + pollers) as client:
        unwatched = (await client.post("/v1/fine_tuning/jobs", json=demo_job(max_steps))).json()
        await wait_final(client, unwatched["id"], timeout_s)
        report.tokens_per_second_unwatched = await median_tokens_per_second(client, unwatched["id"])

        watched = (await client.post("/v1/fine_tuning/jobs", json=demo_job(max_steps))).json()

        async def until_final() -> dict[str, Any]:
            return await wait_final(client, watched["id"], timeout_s)

        if client_processes > 1:
            job = await _load_from_processes(url, key, watched["id"], report, client_processes, until_final)
        else:
            stop = asyncio.Event()
            tasks = _crowd(client, watched["id"], watchers, pollers, stop, report, time.monotonic())
            try:
                job = await until_final()
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
        if job["status"] != "succeeded":
            report.errors.append(f"watched run {job['status']}: {job.get('error')}")
        report.tokens_per_second_watched = await median_tokens_per_second(client, watched["id"])
    return report


def parse_cpus(text: str) -> frozenset[int]:
    """A Linux CPU list as taskset takes it: "0-7", "0,2,4-6"."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus:
        raise argparse.ArgumentTypeError(f"no CPUs in {text!r}")
    return frozenset(cpus)


def run_on_local_stack(
    args: argparse.Namespace,
    stack_cpus: frozenset[int] | None,
    client_cpus: frozenset[int] | None,
    worker_cpus: frozenset[int] | None = None,
) -> dict[str, Any]:
    """The load against a Loraboard of its own, the server and worker pinned to stack_cpus (the
    worker to worker_cpus where given) and this process (the clients) to client_cpus."""
    from bench.local_stack import LocalStack
    from worker.registry import visible_gpus  # what the worker announces: nvidia-smi's names

    with tempfile.TemporaryDirectory(prefix="loraboard-load-") as scratch:
        stack = LocalStack(
            data_dir=Path(scratch) / "data",
            compile_cache_dir=Path(scratch) / "compile-cache",
            local_roots=[],
            cpus=stack_cpus,
            worker_cpus=worker_cpus,
            server_workers=args.server_workers,
        )
        try:
            stack.start()
            stack.wait_for_worker()
            if client_cpus is not None:
                os.sched_setaffinity(0, client_cpus)
            report = asyncio.run(
                run_load(
                    stack.base_url,
                    stack.api_key,
                    args.watchers,
                    args.pollers,
                    args.max_steps,
                    args.timeout_s,
                    args.client_processes,
                )
            )
            # Read back from the running processes: what the pinning actually did.
            pinned = {
                name: sorted(os.sched_getaffinity(process.pid)) for name, process in stack.processes.items()
            }
            server_processes = len(stack.server_process_ids())
        finally:
            stack.stop()
    return {
        **report.as_dict(),
        "machine": {
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "gpus": [gpu["name"] for gpu in visible_gpus()],
            "stack_cpus": sorted(stack_cpus) if stack_cpus is not None else "any",
            "worker_cpus": sorted(worker_cpus) if worker_cpus is not None else "stack_cpus",
            "client_cpus": sorted(client_cpus) if client_cpus is not None else "any",
            "server_processes": server_processes,
            "client_processes": args.client_processes,
            "stack_process_cpus": pinned,
            "client_process_cpus": sorted(os.sched_getaffinity(0)),
            "load_average_after": os.getloadavg(),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", help="an API key (LORABOARD_API_KEY or one from `loraboard keys`)")
    parser.add_argument(
        "--local", action="store_true", help="start a Loraboard of its own instead of --url/--key"
    )
    parser.add_argument("--stack-cpus", type=parse_cpus, help="with --local: the server's and worker's cores")
    parser.add_argument(
        "--worker-cpus",
        type=parse_cpus,
        help="with --local: the training worker's own cores (default: --stack-cpus); on a machine"
        " without a GPU, keeps the CPU-bound run off the server's cores as a GPU would",
    )
    parser.add_argument("--client-cpus", type=parse_cpus, help="with --local: the clients' cores")
    parser.add_argument(
        "--server-workers",
        type=int,
        default=1,
        help="with --local: the server's processes (LORABOARD_SERVER_WORKERS)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="spread the watchers and pollers over this many client processes (one per client core:"
        " one event loop opening hundreds of connections at once measures itself)",
    )
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=60)
    parser.add_argument("--timeout-s", type=float, default=900)
    args = parser.parse_args()
    if args.local:
        figures = run_on_local_stack(args, args.stack_cpus, args.client_cpus, args.worker_cpus)
    else:
        if not args.key:
            parser.error("--key is required unless --local")
        report = asyncio.run(
            run_load(
                args.url,
                args.key,
                args.watchers,
                args.pollers,
                args.max_steps,
                args.timeout_s,
                args.client_processes,
            )
        )
        figures = report.as_dict()
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
