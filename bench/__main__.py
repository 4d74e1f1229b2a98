"""The bench's one entry point: `python -m bench <command> [options]` (bench/README.md).

Each command is a module with its own options (`python -m bench <command> --help`).
"""

from __future__ import annotations

import runpy
import sys

COMMANDS = {
    "whole-run": ("bench.whole_run", "submit to adapter through the server and the worker, cold and warm"),
    "throughput": ("bench.throughput", "steady-state tokens/s and peak memory of the trainers, step by step"),
    "compare-paths": ("bench.compare_paths", "the same training on both trainers: losses and answers"),
    "load": ("bench.load_watchers", "live-run watchers and API pollers on a running Loraboard"),
    "key-check-cost": ("bench.diagnostics.key_check_cost", "what the API key check costs per request"),
    "measure-memory": ("bench.diagnostics.measure_memory", "measured peak memory against the estimate"),
    "measure-eta": ("bench.diagnostics.measure_eta", "the dashboard's ETA against a real epoch"),
    "dequant-speed": ("bench.diagnostics.dequant_speed", "one weight's dequantization kernels, timed"),
    "matmul-floor": (
        "bench.diagnostics.matmul_floor",
        "the epoch's unavoidable matrix products alone: a floor",
    ),
    "build-model": ("bench.workload", "build the workload's model into a directory"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "usage: python -m bench <command> [options]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, *options = argv
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = COMMANDS[command][0]
    # The module runs as a script would, with its own argument parser and exit code.
    sys.argv = [f"python -m bench {command}", *options]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
