"""`python -m bench load --local`: a Loraboard of its own on some cores, the clients on others."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.load_watchers import LoadReport, parse_cpus
from bench.local_stack import LocalStack
from tests.paths import PROJECT_ROOT


def test_cpu_lists_parse_as_taskset_writes_them() -> None:
    assert parse_cpus("0-3") == {0, 1, 2, 3}
    assert parse_cpus("0,2,4-5") == {0, 2, 4, 5}
    assert parse_cpus("7") == {7}
    with pytest.raises(ValueError):
        parse_cpus("a-b")


def test_the_report_tells_the_opening_burst_from_the_rest() -> None:
    report = LoadReport(watchers=2, pollers=2)
    # Two first polls slow in the opening surge, their next two still slowed, then steady.
    report.poll_latencies_s = [0.9, 0.8, 0.4, 0.3, 0.011, 0.020]
    report.poll_started_s = [0.1, 0.1, 1.5, 1.5, 3.5, 3.5]
    figures = report.as_dict()
    assert figures["polls"] == 6 and figures["poll_p99_ms"] == 900.0
    assert figures["poll_p99_after_3_s_ms"] == 20.0
    assert figures["slowest_polls"][:2] == [{"at_s": 0.1, "ms": 900.0}, {"at_s": 0.1, "ms": 800.0}]


def test_the_worker_follows_the_stacks_cores_unless_given_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stack = LocalStack(data_dir=tmp_path, compile_cache_dir=tmp_path, local_roots=[], cpus=frozenset({0}))
    assert stack.cpus_of("server") == stack.cpus_of("worker") == {0}
    stack.worker_cpus = frozenset({1})
    assert stack.cpus_of("server") == {0} and stack.cpus_of("worker") == {1}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPU cores to keep apart")
def test_local_load_keeps_the_clients_and_the_run_off_the_servers_core_and_runs_its_processes(
    tmp_path,
) -> None:  # type: ignore[no-untyped-def]
    # Two cores: the server on one, the clients and the training worker on the other.
    stack_cpu, client_cpu = sorted(os.sched_getaffinity(0))[:2]
    env = {key: value for key, value in os.environ.items() if not key.startswith("LORABOARD_")}
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "load", "--local",
            "--stack-cpus", str(stack_cpu), "--client-cpus", str(client_cpu),
            "--worker-cpus", str(client_cpu), "--server-workers", "2",
            "--client-processes", "2",
            "--watchers", "4", "--pollers", "2", "--max-steps", "20", "--timeout-s", "300",
        ],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout[result.stdout.index("{") :])
    assert figures["errors"] == 0, figures["first_errors"]
    assert figures["polls"] > 0 and figures["stream_messages"] >= 4
    assert figures["machine"]["server_processes"] == 2
    assert figures["machine"]["client_processes"] == 2
    assert figures["tokens_per_second_unwatched"] > 0 and figures["tokens_per_second_watched"] > 0
    machine = figures["machine"]
    assert machine["client_process_cpus"] == [client_cpu]
    assert set(machine["stack_process_cpus"]) == {"server", "worker"}
    assert machine["stack_process_cpus"] == {"server": [stack_cpu], "worker": [client_cpu]}
